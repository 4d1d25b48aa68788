import json

import nbformat

from anlp_ft.cli import main
from anlp_ft.results import read_outcomes, record_outcomes


def _solution(path, answer: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Lab"),
                nbformat.v4.new_code_cell(f"def f():\n    # BEGIN SOLUTION\n    return {answer}\n    # END SOLUTION")]
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_assign_check_catches_a_stale_lab(tmp_path, capsys):
    _solution(tmp_path / "solutions" / "01_demo.ipynb", "1")
    assert main(["assign", "--root", str(tmp_path), "--check"]) == 1  # no lab yet
    assert main(["assign", "--root", str(tmp_path)]) == 0
    lab = (tmp_path / "labs" / "01_demo.ipynb").read_text()
    assert "raise NotImplementedError" in lab and "return 1" not in lab
    assert main(["assign", "--root", str(tmp_path), "--check"]) == 0
    capsys.readouterr()
    # The solution's text changes outside a solution block: the committed lab is now stale.
    (tmp_path / "solutions" / "01_demo.ipynb").write_text(
        (tmp_path / "solutions" / "01_demo.ipynb").read_text().replace("# Lab", "# Lab, edited"))
    assert main(["assign", "--root", str(tmp_path), "--check"]) == 1
    assert "out of sync" in capsys.readouterr().out


def test_outcomes_are_printed_and_collected(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANLP_FT_RESULTS", str(tmp_path / "r.jsonl"))
    record_outcomes("01_demo", {"accuracy before": 0.0625, "accuracy after": 0.9375})
    assert "accuracy after   0.938" in capsys.readouterr().out
    assert read_outcomes(tmp_path / "r.jsonl") == {"01_demo": {"accuracy before": 0.0625, "accuracy after": 0.9375}}
    assert json.loads((tmp_path / "r.jsonl").read_text())["notebook"] == "01_demo"
