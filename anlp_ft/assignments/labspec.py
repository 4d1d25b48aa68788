"""A lab as the grader sees it: read from its solution notebook, the only place hidden tests live.

`load_lab` renders the student version exactly as `anlp-ft assign` does and collects the exercises, their points
and the hidden-test cells that grade them (the protocol is in CONTRIBUTING.md, "Grading").
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat

from .markers import DEMO_TAG, HIDDEN_TESTS_TAG, build_lab
from .sync import read_solution

__all__ = ["GradingError", "HiddenCell", "LabSpec", "find_solution", "load_answers", "load_lab", "source_hash"]

PART_LINE = re.compile(r"^[ \t]*#[ \t]*PART\b.*$", re.M)
JUDGE_LINE = re.compile(r"^[ \t]*#[ \t]*JUDGE\b.*$", re.M)
PUBLIC_DIR = Path(__file__).resolve().parent / "public"


class GradingError(ValueError):
    """The lab cannot be graded as given (unknown lab, exercise without hidden tests, ...)."""


@dataclass
class HiddenCell:
    cell_id: str
    exercises: tuple[str, ...]  # every part counts for each of them
    parts: list[str]
    after: str | None = None  # None: at its place in the solution; else injected after this lab cell
    titles: list[str] = field(default_factory=list)  # one per part: its `# PART` label, for feedback
    judges: list[str] = field(default_factory=list)  # one per part: the code after its `# JUDGE` line, or ""

    def judge(self, number: int) -> str:
        """The part's judge (1-based): run by the grader on the kernel's data; "" = judged in the kernel."""
        return self.judges[number - 1] if number - 1 < len(self.judges) else ""

    @property
    def judged(self) -> bool:
        """Every part has a judge: nothing the kernel says about passing counts."""
        return all(self.judge(n) for n in range(1, len(self.parts) + 1))

    def title(self, number: int) -> str:
        """The part's label (1-based), or "part N" when it has none."""
        given = self.titles[number - 1] if number - 1 < len(self.titles) else ""
        return given or f"part {number}"

    @property
    def label(self) -> str:
        return "+".join(self.exercises)


@dataclass
class LabSpec:
    """Everything the grader needs from a solution notebook."""

    solution: Path
    source_name: str  # "solutions/NN_name.ipynb", as recorded in the lab's metadata
    number: str  # "01"
    lab: nbformat.NotebookNode  # the generated student version
    solution_nb: nbformat.NotebookNode
    exercises: dict[str, float]  # name -> points, in notebook order
    hidden: dict[str, HiddenCell] = field(default_factory=dict)  # solution cell id -> hidden cell
    checks_module: str = ""
    checks_path: Path | None = None
    demos: frozenset[str] = frozenset()  # ids of the cells tagged `demo`: the grader does not run them

    @property
    def max_total(self) -> float:
        return float(sum(self.exercises.values()))


def cell_source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def source_hash(cell: Any) -> str:
    """Checksum of a code cell as the student sees it; trailing whitespace does not count as an edit."""
    text = "\n".join(line.rstrip() for line in cell_source(cell).strip("\n").split("\n")).strip()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _course_root() -> Path:
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        if (base / "solutions").is_dir():
            return base
    raise GradingError("no solutions/ folder found: run from the course repository or pass a solution path")


def find_solution(lab: str | Path) -> Path:
    """A lab number ("1", "01", "lab01") -> solutions/01_*.ipynb; a path is returned as is."""
    text = str(lab)
    if text.endswith(".ipynb") or os.sep in text or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise GradingError(f"no solution notebook at {path}")
        return path
    number = text.strip().removeprefix("lab")
    if not number.isdigit():
        raise GradingError(f"LAB must be a lab number (01..06) or a solution notebook path, not {lab!r}")
    root = _course_root()
    found = sorted((root / "solutions").glob(f"{int(number):02d}_*.ipynb"))
    if not found:
        available = ", ".join(p.name for p in sorted((root / "solutions").glob("*.ipynb"))) or "none"
        raise GradingError(f"no solution for lab {int(number):02d} in {root / 'solutions'}; available: {available}")
    return found[0]


def load_answers(lab: str | Path, **given: Any) -> SimpleNamespace:
    """A lab's reference answers, which live only in its solution notebook: its exercise cells executed after
    `given` (the names the lab's set-up cells provide), each `check(...)` call a no-op. What tests and benchmarks
    use as the right answer, so that the package never holds one; outside the course repository (a student's
    install) there is no solution to load and this raises GradingError."""
    path = find_solution(lab)
    namespace: dict[str, Any] = {"check": lambda *args, **kwargs: None, **given}
    for cell in read_solution(path).cells:
        if cell.cell_type == "code" and "exercise" in cell.metadata.get("anlp_ft", {}):
            exec(compile(cell_source(cell), f"{path.name}:{cell.get('id')}", "exec"), namespace)
    return SimpleNamespace(**namespace)


def _hidden_exercises(cell: Any, cell_id: str, exercises: dict[str, float]) -> tuple[str, ...]:
    """The exercises a hidden-tests cell grades: its metadata, else the ``exN`` names in its id."""
    named = cell.get("metadata", {}).get("anlp_ft", {}).get("hidden_tests_for")
    if named:
        names = [named] if isinstance(named, str) else list(named)
        return tuple(n for n in names if n in exercises) if all(n in exercises for n in names) else ()
    found: list[str] = []
    for token in re.findall(r"ex(\d+)", cell_id):
        if f"ex{token}" in exercises:
            found.append(f"ex{token}")
        elif all(f"ex{d}" in exercises for d in token):  # "ex34": exercises 3 and 4
            found += [f"ex{d}" for d in token]
    return tuple(dict.fromkeys(found))


def _check_calls(source: str) -> dict[str, list[str]]:
    """Top-level ``check("exN", ...)`` statements of a cell, by exercise."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    calls: dict[str, list[str]] = {}
    for node in tree.body:
        if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "check"
                and node.value.args and isinstance(node.value.args[0], ast.Constant)
                and isinstance(node.value.args[0].value, str)):
            segment = ast.get_source_segment(source, node)
            if segment:
                calls.setdefault(node.value.args[0].value, []).append(segment)
    return calls


def load_lab(lab: str | Path) -> LabSpec:
    """Read a solution, render its lab and collect exercises, points and hidden tests."""
    solution = find_solution(lab)
    match = re.match(r"(\d+)_", solution.name)
    if not match:
        raise GradingError(f"{solution.name}: a solution's file name starts with its lab number, e.g. 01_name.ipynb")
    number = f"{int(match.group(1)):02d}"
    source_name = f"solutions/{solution.name}"
    solution_nb = read_solution(solution)
    lab_nb = build_lab(solution_nb, source_name)
    exercises: dict[str, float] = {}
    for cell in lab_nb.cells:
        meta = cell.get("metadata", {}).get("anlp_ft", {})
        if "exercise" in meta:
            name = str(meta["exercise"])
            if name in exercises:
                raise GradingError(f"{source_name}: exercise {name!r} is on two cells")
            exercises[name] = float(meta.get("points", 1))
    if not exercises:
        raise GradingError(f"{source_name}: no exercise cells (metadata anlp_ft.exercise)")
    hidden: dict[str, HiddenCell] = {}
    counts = dict.fromkeys(exercises, 0)
    for index, cell in enumerate(solution_nb.cells):
        if HIDDEN_TESTS_TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        cell_id = cell.get("id") or f"cell-{index}"
        graded = _hidden_exercises(cell, cell_id, exercises)
        if not graded:
            raise GradingError(f"{source_name}, cell {cell_id}: a hidden-tests cell needs metadata "
                               f'{{"anlp_ft": {{"hidden_tests_for": "<exercise>"}}}} naming one of {list(exercises)}')
        source = cell_source(cell)
        titles_found = [m.group(0).split("PART", 1)[1].strip() for m in PART_LINE.finditer(source)]
        labelled = zip(["", *titles_found], PART_LINE.split(source))
        parts, titles, judges = [], [], []
        for title, part in labelled:
            if part.strip():
                probe, *judge = JUDGE_LINE.split(part, maxsplit=1)
                if judge and not judge[0].strip():
                    raise GradingError(f"{source_name}, cell {cell_id}: a `# JUDGE` line with no judge code after it")
                parts.append(probe)
                titles.append(title)
                judges.append(judge[0] if judge else "")
        if not parts:
            raise GradingError(f"{source_name}, cell {cell_id}: empty hidden-tests cell")
        hidden[cell_id] = HiddenCell(cell_id, graded, parts, titles=titles, judges=judges)
        for name in graded:
            counts[name] += len(parts)
    # An exercise without hidden tests is graded by the lab's public check calls, re-run strictly.
    unchecked = {name for name, n in counts.items() if n == 0}
    for cell in lab_nb.cells:
        if cell.cell_type != "code":
            continue
        for name, calls in _check_calls(cell_source(cell)).items():
            if name in unchecked:
                key = f"{cell.id}-{name}-checks"
                hidden[key] = HiddenCell(key, (name,), calls, after=cell.id,
                                         titles=[call.split("\n")[0][:60] for call in calls])
                counts[name] += len(calls)
    if missing := [name for name, n in counts.items() if n == 0]:
        raise GradingError(f"{source_name}: no hidden-tests cell and no check(...) call for {', '.join(missing)}; "
                           "every exercise needs one")
    demos = frozenset(str(c.get("id")) for c in solution_nb.cells if DEMO_TAG in c.get("metadata", {}).get("tags", []))
    if clash := [c.get("id") for c in solution_nb.cells if c.get("id") in demos and (
            c.cell_type != "code" or HIDDEN_TESTS_TAG in c.metadata.get("tags", [])
            or "exercise" in c.metadata.get("anlp_ft", {}))]:
        raise GradingError(f"{source_name}: cells {clash} are tagged {DEMO_TAG!r} but are not demonstrations (a demo "
                           "is a code cell that is neither an exercise nor hidden tests)")
    checks = solution_nb.metadata.get("anlp_ft", {}).get("public_checks")
    checks_path = (solution.parent / checks).resolve() if checks else PUBLIC_DIR / f"lab{number}.py"
    return LabSpec(solution=solution, source_name=source_name, number=number, lab=lab_nb, solution_nb=solution_nb,
                   exercises=exercises, hidden=hidden, checks_module=f"anlp_ft.assignments.public.lab{number}",
                   checks_path=checks_path if checks_path.is_file() else None, demos=demos)
