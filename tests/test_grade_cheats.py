"""Cheats a student who reads the grader's public source would try, on the real labs 05 and 06, and on lab 03 the
package's own chat labels.

Each is a blank lab plus the cheat. Every hidden test of these labs has a judge, so the verdict is computed in the
grader's process from the data the kernel hands over: patching json, sys.stdout, builtins, IPython's input
transformers or the injected harness earns nothing; the solutions are not on the kernel's disk; the package holds no
answer to import; processes end with the grading. Each row is flagged for a human as well.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from anlp_ft.assignments.grade import grade, load_lab
from anlp_ft.assignments.markers import render_lab
from tests.conftest import processes_with

ROOT = Path(__file__).resolve().parents[1]
ORPHAN = "617.25"  # sleep's argument: how this test finds the processes a submission left behind

CHEATS = {
    # The harness serialises its report with json.dumps: report every part as passed.
    "json-dumps": '''import json
_dumps = json.dumps
def _forged(obj, *args, **kwargs):
    if isinstance(obj, dict) and "parts" in obj:
        obj = {**obj, "parts": [{"passed": True} for _ in obj["parts"]]}
    return _dumps(obj, *args, **kwargs)
json.dumps = _forged''',
    # Rewrite what reaches stdout.
    "stdout": '''import sys
_write = sys.stdout.write
sys.stdout.write = lambda text: _write(text.replace('"passed": false', '"passed": true'))''',
    # No code raises any more: every hidden part "runs".
    "builtins": '''import builtins
builtins.exec = lambda *args, **kwargs: None''',
    # Rewrite the injected harness before it runs: it prints a perfect report with this run's nonce.
    "harness": '''def _forge(lines):
    head = '    """Run `parts` (source strings)'
    fake = ('    print("\\\\n" + nonce + " " + __import__("json").dumps({"exercise": exercise, '
            '"parts": [{"passed": True} for _ in parts]}))\\n    return\\n')
    return [fake + line if line.startswith(head) else line for line in lines]
get_ipython().input_transformers_cleanup.append(_forge)''',
    # Find the solution next to the installed package and run its exercise cells.
    "solutions-on-disk": '''import glob, json, os
import anlp_ft
_root = os.path.dirname(os.path.dirname(anlp_ft.__file__))
_path = glob.glob(os.path.join(_root, "solutions", "{number}_*.ipynb"))[0]
for _cell in json.load(open(_path))["cells"]:
    if _cell["cell_type"] == "code" and "exercise" in _cell["metadata"].get("anlp_ft", {}):
        exec("".join(_cell["source"]), globals())''',
    # Processes that try to outlive the grading.
    "orphans": f'''import subprocess
_kids = [subprocess.Popen(["sleep", "{ORPHAN}"], start_new_session=True) for _ in range(3)]''',
}
# The package's own version of an exercise: the calculator's breakdown holds Adam's row of lab 05's ex1 (the lecture's
# table, which the hidden tests do not grade), so copied for every optimizer it earns nothing and is flagged; lab 06's
# LoRA layer is not in the package any more.
PACKAGE_ANSWER = {
    "05": ("ex1", '''def state_bytes(n_params, precision="mixed", optimizer="adam"):
    shape = ModelShape("any", 8, 1, 1, 1, 8, 8, n_params_override=n_params)
    parts = memory.memory_breakdown(shape, TrainSetup(precision=precision))
    return {k: parts[k] for k in ("parameters", "gradients", "master weights", "optimizer states")}'''),
    "06": ("ex1", "from anlp_ft.lora import LoRALinear"),
}
PACKAGE_LABELS = '''def build_chat_example(tokenizer, messages, assistant_only=True):
    marked = training_template(tokenizer)
    return encode_chat(tokenizer, messages, chat_template=marked, assistant_only=assistant_only)'''


def _blank_answering(spec, exercise: str, answer: str, path: Path) -> Path:
    """The blank lab with `answer` as the code of `exercise`, written to path."""
    lab = nbformat.reads(render_lab(spec.solution_nb, spec.source_name), as_version=4)
    next(c for c in lab.cells if c.metadata.get("anlp_ft", {}).get("exercise") == exercise).source = answer
    path.write_text(json.dumps(lab), encoding="utf-8")
    return path


def _blank_with(number: str, spec, cheat: str) -> nbformat.NotebookNode:
    """The blank lab with `cheat` in a cell added right after the set-up (before any exercise)."""
    lab = nbformat.reads(render_lab(spec.solution_nb, spec.source_name), as_version=4)
    first_exercise = next(i for i, c in enumerate(lab.cells) if "exercise" in c.metadata.get("anlp_ft", {}))
    lab.cells.insert(first_exercise, nbformat.v4.new_code_cell(cheat.replace("{number}", number)))
    return lab


@pytest.mark.parametrize("number", ["05", "06"])
def test_cheats_earn_nothing_and_are_flagged(number: str, tmp_path: Path) -> None:
    solution = next((ROOT / "solutions").glob(f"{number}_*.ipynb"))
    spec = load_lab(solution)
    paths = {}
    for name, cheat in CHEATS.items():
        paths[name] = tmp_path / f"{name}.ipynb"
        paths[name].write_text(json.dumps(_blank_with(number, spec, cheat)), encoding="utf-8")
    paths["package-answer"] = _blank_answering(spec, *PACKAGE_ANSWER[number], tmp_path / "package-answer.ipynb")

    rows = {Path(r.submission).stem: r for r in grade(solution, list(paths.values()), tmp_path / "book.csv",
                                                      timeout=900, workers=2, output_dir=tmp_path / "runs",
                                                      quiet=True)}
    for name, row in sorted(rows.items()):
        print(f"lab {number} {name}: {row.scores} {row.status}")
    assert processes_with(ORPHAN) == []
    for name in CHEATS:
        assert rows[name].total == 0, (name, rows[name])
        assert "suspicious" in rows[name].status, (name, rows[name].status)
    forged = rows["package-answer"]
    assert "calls the course's own version of an exercise" in forged.status or number == "06", forged.status
    assert forged.scores == {name: 0.0 for name in spec.exercises}, forged


def test_the_packages_chat_labels_earn_only_the_whole_sequence_part_of_lab03_ex2(tmp_path: Path) -> None:
    # The package labels SmolLM2's template (training_template + encode_chat), not the other model's ChatML template
    # the hidden tests also use, so this earns ex2's second part (the whole sequence, which is plain tokenization).
    solution = next((ROOT / "solutions").glob("03_*.ipynb"))
    spec = load_lab(solution)
    path = _blank_answering(spec, "ex2", PACKAGE_LABELS, tmp_path / "package-labels.ipynb")
    (row,) = grade(solution, [path], tmp_path / "book.csv", timeout=900, workers=1, output_dir=tmp_path / "runs",
                   quiet=True)
    print(f"lab 03 package-labels: {row.scores} {row.status}")
    assert row.scores == {**{name: 0.0 for name in spec.exercises}, "ex2": 1.5}, row
    assert "calls the course's own version of an exercise" in row.status, row.status
