"""The grader on the course's real labs: the solution scores 100%, the generated blank lab 0% with status ok.

A lab whose solution is not written yet is skipped with a visible reason; once it exists, it is graded
here in CI. Each lab runs twice in the quick profile (solution and blank), so this takes minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from anlp_ft.assignments.grade import grade, load_lab
from anlp_ft.assignments.markers import render_lab
from anlp_ft.assignments.sync import read_solution

ROOT = Path(__file__).resolve().parents[1]
# CI grades these two (the cheapest); `make grade-all` sets ANLP_FT_GRADE_LABS="01 02 03 04 05 06".
LABS = os.environ.get("ANLP_FT_GRADE_LABS", "05 06").split()
TIMEOUT_S = 1800  # generous: CI machines are slow and shared; the quick profile needs about 3 minutes


def _solution(number: str) -> Path:
    found = sorted((ROOT / "solutions").glob(f"{number}_*.ipynb"))
    if not found:
        pytest.skip(f"solutions/{number}_*.ipynb does not exist yet")
    return found[0]


def _perfect_submission(solution: Path) -> nbformat.NotebookNode:
    """The lab as a student who solved every exercise hands it in: the solution's code in each exercise cell."""
    spec = load_lab(solution)
    lab = nbformat.reads(render_lab(read_solution(solution), spec.source_name), as_version=4)
    answers = {c.get("id"): c.source for c in spec.solution_nb.cells
               if c.cell_type == "code" and "exercise" in c.get("metadata", {}).get("anlp_ft", {})}
    for cell in lab.cells:
        if cell.get("id") in answers:
            cell.source = answers[cell.id]
    return lab


@pytest.mark.parametrize("number", LABS)
def test_solution_scores_100_and_blank_lab_0(number: str, tmp_path: Path) -> None:
    solution = _solution(number)
    spec = load_lab(solution)
    solved, blank = tmp_path / f"{number}_solved.ipynb", tmp_path / f"{number}_blank.ipynb"
    solved.write_text(json.dumps(_perfect_submission(solution), indent=1), encoding="utf-8")
    blank.write_text(render_lab(spec.solution_nb, spec.source_name), encoding="utf-8")
    rows = {Path(r.submission).name: r for r in
            grade(solution, [solved, blank], tmp_path / "gradebook.csv", timeout=TIMEOUT_S, workers=1,
                  output_dir=tmp_path / "runs", quiet=True)}
    logs = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/grading.json")}
    for name, log in sorted(logs.items()):
        print(f"lab {number} {name.rsplit('-', 1)[0]}: {log['status']}, {log['wall_s']:.0f} s")
    good, empty = rows[solved.name], rows[blank.name]
    assert (good.percent, good.status) == (100.0, "ok"), (good, logs)
    assert (empty.percent, empty.status) == (0.0, "ok"), (empty, logs)


# Wrong-but-plausible answers to each exercise: each must lose its own exercise's points and no other's.
# CI grades labs 05 and 06 (seconds each); ANLP_FT_MUTANT_LABS="01 05 06" adds lab 01 (about 5 minutes).
MUTANT_LABS = os.environ.get("ANLP_FT_MUTANT_LABS", "05 06").split()
MUTANTS = {"05": {
    "ex1": ("the momentum buffer forgotten",
            '''def state_bytes(n_params: float, precision: str = "mixed", optimizer: str = "adam") -> dict[str, float]:
    w = 4 if precision == "fp32" else 2
    return {"parameters": n_params * w, "gradients": n_params * w,
            "master weights": n_params * 4 if precision == "mixed" else 0,
            "optimizer states": n_params * 8 if optimizer == "adam" else 0}'''),
    "ex2": ("the formula instead of a measurement",
            '''def saved_activation_bytes(model: torch.nn.Module, batch: dict) -> int:
    return memory.activation_bytes(ModelShape.from_config(model.config), *batch["input_ids"].shape)'''),
    "ex3": ("stage 2 leaves the gradients whole",
            '''def zero_per_gpu(parts: dict[str, float], stage: int, n_gpus: int) -> dict[str, float]:
    split = {"master weights", "optimizer states"} if stage >= 1 else set()
    if stage >= 3:
        split |= {"gradients", "parameters"}
    return {k: v / n_gpus if k in split else v for k, v in parts.items()}'''),
    "ex4": ("gradient checkpointing left off",
            '''def largest_batch(model: str, method: str, seq: int, gpu: str) -> int:
    batch = 0
    while memory.calculate(model=model, method=method, batch=batch + 1, seq=seq, gpu=gpu).fits:
        batch += 1
    return batch'''),
}, "01": {
    "ex1": ("no end-of-sequence token", (" + [tokenizer.eos_token_id]", "")),
    "ex2": ("labels not shifted", ("logits, labels = logits[:, :-1].float(), labels[:, 1:]",
                                   "logits, labels = logits.float(), labels")),
    "ex3": ("the schedule never stepped", ("        scheduler.step()\n", "")),
    "ex4": ("full fine-tuning instead of LoRA", ("    model = get_peft_model(model, LORA)\n", "")),
    "ex5": ("a copy of the pre-trained weights", ("return type(model)(model.config).to(model.device)",
                                                 "return copy.deepcopy(model)")),
    "ex6": ("steps that grow with n", ("TrainConfig(steps=DE_STEPS,", "TrainConfig(steps=max(1, n // DE_BATCH),")),
    "ex7": ("the KL in the other direction", ("kl = (logp.exp() * (logp - logq)).sum(-1)",
                                              "kl = (logq.exp() * (logq - logp)).sum(-1)")),
}, "06": {
    "ex1": ("the update scaled by alpha, not alpha / r", ("self.scaling = alpha / r", "self.scaling = alpha")),
    "ex2": ("adapters on the attention projections only",
            ("name.rsplit(\".\", 1)[-1] in TARGETS", "name.rsplit(\".\", 1)[-1] in (\"q_proj\", \"v_proj\")")),
    "ex3": ("absmax without the absolute value", ("absmax = blocks.abs().amax(dim=1)", "absmax = blocks.amax(dim=1)")),
    "ex4": ("double quantization without the second-level constants",
            ("return 4 + 8 / block + 32 / (block * dq_block)", "return 4 + 8 / block")),
}}


def _mutant(solution: Path, exercise: str, change: str | tuple[str, str]) -> nbformat.NotebookNode:
    """The perfect submission with one exercise's code replaced (a str) or edited (an (old, new) pair)."""
    nb = _perfect_submission(solution)
    for cell in nb.cells:
        if cell.get("metadata", {}).get("anlp_ft", {}).get("exercise") == exercise:
            if isinstance(change, str):
                cell.source = change
            else:
                source = "".join(cell.source) if isinstance(cell.source, list) else cell.source
                assert change[0] in source, f"{exercise}: {change[0]!r} is not in the solution"
                cell.source = source.replace(*change)
    return nb


@pytest.mark.parametrize("number", MUTANT_LABS)
def test_each_wrong_exercise_costs_only_its_own_points(number: str, tmp_path: Path) -> None:
    solution = _solution(number)
    spec = load_lab(solution)
    paths = []
    for exercise, (_, change) in MUTANTS[number].items():
        path = tmp_path / f"{number}_wrong_{exercise}.ipynb"
        path.write_text(json.dumps(_mutant(solution, exercise, change), indent=1), encoding="utf-8")
        paths.append(path)
    rows = {Path(r.submission).stem: r for r in
            grade(solution, paths, tmp_path / "gradebook.csv", timeout=TIMEOUT_S, workers=1,
                  output_dir=tmp_path / "runs", quiet=True)}
    for exercise, (mistake, _) in MUTANTS[number].items():
        row = rows[f"{number}_wrong_{exercise}"]
        print(f"lab {number}, {exercise} wrong ({mistake}): {row.scores}, {row.status}")
        assert row.scores[exercise] < spec.exercises[exercise], f"{mistake} kept all of {exercise}'s points"
        others = {name: row.scores[name] for name in spec.exercises if name != exercise}
        assert others == {name: spec.exercises[name] for name in others}, f"{mistake} cost other exercises"
