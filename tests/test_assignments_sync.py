"""anlp_ft.assignments.sync: labs/ regenerated from solutions/, checked without writing, orphans reported, and
stable cell ids for solutions saved without them."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from anlp_ft.assignments import render_lab, sync_labs


def write_solution(root: Path, name: str, nb: nbformat.NotebookNode) -> Path:
    path = root / "solutions" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_missing_cell_ids_are_derived_stably(tmp_path: Path, solution_notebook) -> None:
    data = json.loads(nbformat.writes(solution_notebook()))
    data["nbformat_minor"] = 4
    for cell in data["cells"]:
        del cell["id"]
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_old.ipynb").write_text(json.dumps(data))
    assert sync_labs(tmp_path, check=False) == [tmp_path / "labs" / "01_old.ipynb"]
    first = (tmp_path / "labs" / "01_old.ipynb").read_bytes()
    lab = nbformat.reads(first.decode(), as_version=4)
    assert lab.nbformat_minor >= 5
    assert all(c.get("id") for c in lab.cells)
    (tmp_path / "labs" / "01_old.ipynb").unlink()
    sync_labs(tmp_path, check=False)
    assert (tmp_path / "labs" / "01_old.ipynb").read_bytes() == first


def test_sync_labs_writes_checks_and_reports(tmp_path: Path, solution_notebook) -> None:
    sol = solution_notebook()
    write_solution(tmp_path, "01_a.ipynb", sol)
    lab = tmp_path / "labs" / "01_a.ipynb"

    assert sync_labs(tmp_path, check=True) == [lab]  # missing
    assert not lab.exists()  # check mode writes nothing
    assert sync_labs(tmp_path, check=False) == [lab]
    assert sync_labs(tmp_path, check=True) == []
    assert sync_labs(tmp_path, check=False) == []  # unchanged labs are not rewritten
    assert lab.read_text(encoding="utf-8") == render_lab(sol, "solutions/01_a.ipynb")

    # Editing only the hidden answer leaves the lab as it is ...
    sol.cells[1].source = sol.cells[1].source.replace("return x * 2", "return x + x")
    write_solution(tmp_path, "01_a.ipynb", sol)
    assert sync_labs(tmp_path, check=True) == []
    # ... while a visible edit makes it stale.
    sol.cells[0].source = "# Lab 01, revised"
    write_solution(tmp_path, "01_a.ipynb", sol)
    assert sync_labs(tmp_path, check=True) == [lab]

    # An orphan lab (its solution is gone) is reported, never deleted.
    orphan = tmp_path / "labs" / "09_gone.ipynb"
    orphan.write_text("{}")
    assert sync_labs(tmp_path, check=True) == [lab, orphan]
    assert sync_labs(tmp_path, check=False) == [lab]
    assert sync_labs(tmp_path, check=True) == [orphan]
    orphan.unlink()
    assert sync_labs(tmp_path, check=True) == []


def test_sync_labs_requires_solutions_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sync_labs(tmp_path, check=True)
