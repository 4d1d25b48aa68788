"""Shared by the tools/build_*.py scripts that write the course notebooks: cells with fixed ids (so re-running a
script, executing the notebooks and `anlp-ft assign` keep diffs small), the Colab badge and set-up cell, and the
writer. A script's `main()` calls `write_notebooks({path: cells, ...})`; `python tools/build_NN.py solutions`
writes only the notebooks under solutions/."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
COLAB = "https://colab.research.google.com/github/anlp-ft/anlp-ft/blob/main/{folder}/{name}.ipynb"
BADGE = "[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"

SETUP = '''# In Colab, install the course package (elsewhere it is already installed by `make setup`).
import sys
if "google.colab" in sys.modules:
    !pip install -q "anlp-ft @ git+https://github.com/anlp-ft/anlp-ft"'''


def md(cell_id: str, text: str):
    cell = new_markdown_cell(text.strip("\n"))
    cell.id = cell_id
    return cell


def code(cell_id: str, text: str, *, tags=None, meta=None):
    cell = new_code_cell(text.strip("\n"))
    cell.id = cell_id
    if tags:
        cell.metadata["tags"] = list(tags)
    if meta:
        cell.metadata["anlp_ft"] = dict(meta)
    return cell


def exercise(cell_id: str, text: str, name: str, points: int):
    return code(cell_id, text, meta={"exercise": name, "points": points})


def hidden(cell_id: str, text: str, name: str):
    return code(cell_id, text, tags=["hidden-tests"], meta={"hidden_tests_for": name})


def notebook(cells) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.nbformat_minor = 5
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": [], "gpuType": "T4"},
    }
    return nb


def write_notebooks(targets: dict[Path, list], argv: list[str] | None = None) -> int:
    """Write each notebook (without outputs); arguments like `solutions` or `lectures` keep only those folders."""
    only = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    for path, cells in targets.items():
        if only and path.parent.name not in only:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook(cells), str(path))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0
