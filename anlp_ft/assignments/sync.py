"""Keep ``labs/`` in step with ``solutions/``: the labs are generated, never edited by hand."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

from .markers import render_lab

__all__ = ["read_solution", "render_lab", "sync_labs"]

SOLUTIONS_DIR = "solutions"
LABS_DIR = "labs"


def read_solution(path: Path) -> nbformat.NotebookNode:
    """Read a solution notebook without nbformat's validation side effects.

    ``nbformat.read`` fills missing cell ids with random ones, which would make the generated lab
    differ on every run; ``render_lab`` derives stable ids itself instead.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("nbformat") != 4:
        # Older formats need nbformat's converter; ids are then assigned by render_lab's rules.
        return nbformat.read(str(path), as_version=4)
    return nbformat.from_dict(data)


def sync_labs(root: Path, check: bool) -> list[Path]:
    """Regenerate ``root/labs/*.ipynb`` from ``root/solutions/*.ipynb``.

    With ``check=False``, write each lab whose content differs (creating ``labs/`` if needed) and
    return the written paths. With ``check=True``, write nothing and return the labs that are
    missing or out of date, plus orphan labs that have no solution any more (never deleted here:
    removing a file is left to a person). An empty list means everything is in sync.
    """
    root = Path(root)
    solutions_dir, labs_dir = root / SOLUTIONS_DIR, root / LABS_DIR
    if not solutions_dir.is_dir():
        # A wrong root must not pass the check silently.
        raise FileNotFoundError(f"no {SOLUTIONS_DIR}/ directory under {root}")

    changed: list[Path] = []
    for solution in sorted(solutions_dir.glob("*.ipynb")):
        lab = labs_dir / solution.name
        # Render every solution, even in check mode, so marker errors surface in CI.
        expected = render_lab(read_solution(solution), f"{SOLUTIONS_DIR}/{solution.name}")
        data = expected.encode("utf-8")
        if lab.is_file() and lab.read_bytes() == data:
            continue
        if not check:
            labs_dir.mkdir(parents=True, exist_ok=True)
            lab.write_bytes(data)  # bytes: no platform newline translation
        changed.append(lab)

    if check and labs_dir.is_dir():
        changed += [
            lab
            for lab in sorted(labs_dir.glob("*.ipynb"))
            if not (solutions_dir / lab.name).is_file()
        ]
    return changed
