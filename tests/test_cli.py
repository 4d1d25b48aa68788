"""anlp_ft.cli: `anlp-ft assign` writes labs/ and, with --check, fails on a stale lab; `anlp-ft course` runs the
chosen notebooks from their folders, keeps going past a failure and prints each one's outcomes."""
import nbformat

from anlp_ft.cli import course_notebooks, main
from anlp_ft.results import NOTEBOOK_ENV, RESULTS_ENV


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
    assert "raise NotImplementedError" in lab
    assert "return 1" not in lab
    assert main(["assign", "--root", str(tmp_path), "--check"]) == 0
    capsys.readouterr()
    # The solution's text changes outside a solution block: the committed lab is now stale.
    (tmp_path / "solutions" / "01_demo.ipynb").write_text(
        (tmp_path / "solutions" / "01_demo.ipynb").read_text().replace("# Lab", "# Lab, edited"))
    assert main(["assign", "--root", str(tmp_path), "--check"]) == 1
    assert "out of sync" in capsys.readouterr().out


def test_cli_parser_registers_grade() -> None:
    import argparse

    from anlp_ft.cli import add_grade_parser

    parser = argparse.ArgumentParser()
    add_grade_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["grade", "01", "a.ipynb", "b.ipynb", "--out", "g.csv", "--timeout", "30",
                              "--memory-mb", "2048", "--workers", "2", "--output-dir", "runs"])
    assert (args.lab, args.submissions, args.out, args.timeout, args.memory_mb, args.workers, args.output_dir) == (
        "01", ["a.ipynb", "b.ipynb"], "g.csv", 30.0, 2048, 2, "runs")
    assert callable(args.func)


def _notebook(path, code: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nb.cells[0].id = "cell-0"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_course_runs_the_chosen_notebooks_and_reports_a_failure(tmp_path, capsys, monkeypatch):
    for name in (RESULTS_ENV, NOTEBOOK_ENV):  # the command sets both for its kernels; restored after the test
        monkeypatch.setenv(name, "")
    _notebook(tmp_path / "lectures" / "01_demo.ipynb", "import os\nfrom anlp_ft.results import record_outcomes\n"
              "record_outcomes('demo', {'runs from its folder': os.getcwd().endswith('lectures')})")
    _notebook(tmp_path / "solutions" / "01_demo.ipynb", "raise ValueError('broken on purpose')")
    _notebook(tmp_path / "solutions" / "02_other.ipynb", "x = 1")
    chosen = course_notebooks(tmp_path, ["01_"])
    assert [f"{p.parent.name}/{p.name}" for p in chosen] == ["lectures/01_demo.ipynb", "solutions/01_demo.ipynb"]

    assert main(["course", "--root", str(tmp_path), "--out", str(tmp_path / "out"), "--only", "01_"]) == 1
    out = capsys.readouterr().out.split("=== Measured outcomes")[1]
    assert "lectures/01_demo.ipynb: ok" in out
    assert "runs from its folder  True" in out
    assert "solutions/01_demo.ipynb: FAILED: PapermillExecutionError" in out
    assert "02_other" not in out
    assert (tmp_path / "out" / "lectures" / "01_demo.ipynb").exists()
