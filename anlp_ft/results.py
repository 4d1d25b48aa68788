"""Measured outcomes of a notebook: printed as a table for the reader, and collected by `anlp-ft course`."""
from __future__ import annotations

import json
import os
from pathlib import Path

RESULTS_ENV = "ANLP_FT_RESULTS"  # a JSON-lines file; set by `anlp-ft course`
NOTEBOOK_ENV = "ANLP_FT_NOTEBOOK"  # the notebook `anlp-ft course` is running, e.g. "solutions/01_x.ipynb"


class _Missing:
    """An outcome that was not measured: what `anlp_ft.assignments.attempt` returns for an exercise that is still
    the stub. No real code produces it, so the results section can tell "not done yet" (reported, scores 0) from
    a wrong result (fails)."""

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING = _Missing()


def _fmt(value) -> str:
    if value is MISSING:
        return "not measured (exercise not implemented)"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def outcome_table(outcomes: dict[str, object]) -> str:
    width = max(len(k) for k in outcomes)
    return "\n".join(f"{k:<{width}}  {_fmt(v)}" for k, v in outcomes.items())


def record_outcomes(notebook: str, outcomes: dict[str, object]) -> None:
    """Print the outcomes as a table and, under `anlp-ft course`, append them to its results file."""
    if not outcomes:
        raise ValueError("no outcomes to record")
    print(outcome_table(outcomes))
    target = os.environ.get(RESULTS_ENV)
    if target:
        with Path(target).open("a") as f:
            row = {"notebook": os.environ.get(NOTEBOOK_ENV, notebook), "outcomes": outcomes}
            f.write(json.dumps(row, default=_fmt) + "\n")


def read_outcomes(path: Path) -> dict[str, dict]:
    """notebook -> outcomes, from a results file (a later record of a notebook wins)."""
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["notebook"]: row["outcomes"] for row in rows}


def expect(name: str, value, *, at_least: float | None = None, at_most: float | None = None) -> None:
    """Assert a measured outcome with its margin, e.g. expect("accuracy after", acc, at_least=0.85).

    A MISSING value (its exercise not implemented, in a student's lab) is reported, not failed, so a blank
    lab runs to the end; any real value outside the margin fails loudly.
    """
    if value is MISSING:
        print(f"- {name}: not checked, its exercise is not implemented yet")
        return
    if at_least is not None:
        assert value >= at_least, f"{name} = {value:.4g}, expected at least {at_least}"
    if at_most is not None:
        assert value <= at_most, f"{name} = {value:.4g}, expected at most {at_most}"
    bounds = " and ".join(b for b in [f">= {at_least}" if at_least is not None else "",
                                      f"<= {at_most}" if at_most is not None else ""] if b)
    print(f"✓ {name} = {_fmt(value)} ({bounds})")
