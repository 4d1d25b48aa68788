"""One submission -> the notebook the grader runs, in the solution's cell order.

* An **exercise cell** (lab metadata ``{"anlp_ft": {"exercise": "ex1", "points": 2}}``) is the student's cell
  with the same cell id (or, failing ids, the same exercise metadata); a missing one runs as the stub and scores 0.
* Every other **code cell is protected** (set-up, parameters, public checks, demos, results): the student's copy
  is compared with the lab's by a SHA-256 of its source (trailing whitespace ignored); an edited or deleted one is
  named in the status (``tampered: ex1-check (edited)``) and the lab's original is what runs.
* Code cells the student added run where the student put them (after the lab cell before them).
* Each solution cell tagged ``hidden-tests`` becomes a cell the grader injects at the same place
  (:mod:`.probe`), its probes only (a part's judge never enters a kernel: :mod:`.judge`).
* Cells the solution tags ``demo`` and cells after the last injected one are not run: nothing graded depends on
  them (the executed copy lists them). A student's added cell still runs where the student put it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .grade_worker import GRADER_KEY
from .labspec import HiddenCell, LabSpec, cell_source, source_hash
from .markers import HIDDEN_TESTS_TAG
from .probe import injected_source

__all__ = ["Assembled", "assemble", "solved_lab", "student_code"]


@dataclass
class Assembled:
    notebook: nbformat.NotebookNode | None
    tampered: list[str]
    invalid: str | None = None
    notes: list[str] = field(default_factory=list)


def _read_submission(data: bytes) -> tuple[nbformat.NotebookNode | None, str | None]:
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        return None, f"not JSON ({type(error).__name__})"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list):
        return None, "not a notebook (no cells list)"
    if raw.get("nbformat") != 4:
        return None, f"nbformat {raw.get('nbformat')!r}, expected 4"
    try:
        nb = nbformat.from_dict(raw)
        cells = [c for c in nb.cells if isinstance(c, dict) and c.get("cell_type") in ("code", "markdown", "raw")]
    except Exception as error:  # any malformed structure is the student's problem, not a crash
        return None, f"malformed notebook ({type(error).__name__})"
    if not any(c.get("cell_type") == "code" for c in cells):
        return None, "no code cells"
    nb.cells = cells
    return nb, None


def _exercise_of(cell: Any) -> str | None:
    meta = cell.get("metadata", {})
    anlp = meta.get("anlp_ft") if isinstance(meta, dict) else None
    return str(anlp["exercise"]) if isinstance(anlp, dict) and "exercise" in anlp else None


def _clean_code(source: str, metadata: dict[str, Any], cell_id: str) -> nbformat.NotebookNode:
    # The lab's metadata, never the student's: a student cell must not carry tags such as `parameters`.
    return nbformat.v4.new_code_cell(source, metadata=copy.deepcopy(metadata), id=cell_id)


def assemble(spec: LabSpec, data: bytes, nonce: str, secret: int = 0) -> Assembled:
    """Build the notebook to run for one submission (see the module docstring for the rules)."""
    nb, invalid = _read_submission(data)
    if nb is None:
        return Assembled(None, [], invalid)
    meta = nb.metadata.get("anlp_ft")
    origin = meta.get("generated_from") if isinstance(meta, dict) else None
    if origin and Path(str(origin)).name != spec.solution.name:
        return Assembled(None, [], f"a notebook of {origin}, not of {spec.source_name}")

    lab_cells = spec.lab.cells
    student = [c for c in nb.cells]
    by_id: dict[str, int] = {}
    for i, cell in enumerate(student):
        cid = cell.get("id")
        if isinstance(cid, str) and cid not in by_id:
            by_id[cid] = i
    # lab cell index -> student cell index
    matched: dict[int, int] = {}
    used: set[int] = set()
    for j, cell in enumerate(lab_cells):
        i = by_id.get(cell.get("id"))
        if i is not None and student[i].get("cell_type") == cell.cell_type:
            matched[j] = i
            used.add(i)
    # Fallback for editors that drop cell ids: exercises by metadata, protected cells by content.
    for j, cell in enumerate(lab_cells):
        if j in matched or cell.cell_type != "code":
            continue
        exercise = _exercise_of(cell)
        for i, s in enumerate(student):
            if i in used or s.get("cell_type") != "code":
                continue
            if (exercise and _exercise_of(s) == exercise) or (not exercise and source_hash(s) == source_hash(cell)):
                matched[j] = i
                used.add(i)
                break
    code_lab = [j for j, c in enumerate(lab_cells) if c.cell_type == "code"]
    if sum(1 for j in code_lab if j in matched) < max(1, len(code_lab) // 2):
        return Assembled(None, [], f"fewer than half of the cells of {spec.source_name} are in it (another lab?)")

    # Extra student cells run after the lab cell they follow in the student's notebook.
    after: dict[int, list[int]] = {}
    last_lab = -1
    student_to_lab = {i: j for j, i in matched.items()}
    for i, cell in enumerate(student):
        if i in student_to_lab:
            last_lab = student_to_lab[i]
        elif cell.get("cell_type") == "code" and cell_source(cell).strip():
            after.setdefault(last_lab, []).append(i)

    tampered: list[str] = []
    out: list[nbformat.NotebookNode] = [_clean_code(cell_source(student[i]), {}, f"added-{i}")
                                        for i in after.get(-1, [])]
    next_lab = 0
    injected_after: dict[str, list[HiddenCell]] = {}
    for hidden in spec.hidden.values():
        if hidden.after is not None:
            injected_after.setdefault(hidden.after, []).append(hidden)

    def harness(hidden: HiddenCell) -> nbformat.NotebookNode:
        source = injected_source(nonce, hidden.label, spec.checks_module,
                                 str(spec.checks_path) if spec.checks_path else None, hidden.parts, secret)
        return nbformat.v4.new_code_cell(source, id=f"{hidden.cell_id}-graded"[-64:],
                                         metadata={GRADER_KEY: {"cell": hidden.cell_id, "exercise": hidden.label}})

    def emit_lab_cell(j: int) -> None:
        cell = lab_cells[j]
        name = cell.get("id")
        if cell.cell_type == "code":
            if _exercise_of(cell):
                source = cell_source(student[matched[j]]) if j in matched else cell_source(cell)
                out.append(_clean_code(source, cell.metadata, name))
            else:
                if j not in matched:
                    tampered.append(f"{name} (deleted)")
                elif source_hash(student[matched[j]]) != source_hash(cell):
                    tampered.append(f"{name} (edited)")
                out.append(_clean_code(cell_source(cell), cell.metadata, name))
        elif cell.cell_type == "markdown":
            text = cell_source(student[matched[j]]) if j in matched else cell_source(cell)
            out.append(nbformat.v4.new_markdown_cell(text, id=name))
        for checks in injected_after.get(name, []):
            out.append(harness(checks))
        for i in after.get(j, []):
            out.append(_clean_code(cell_source(student[i]), {}, f"added-{i}"))

    # Walk the solution: its non-hidden cells are the lab's cells in the same order.
    for index, cell in enumerate(spec.solution_nb.cells):
        cid = cell.get("id") or f"cell-{index}"
        if cid in spec.hidden and HIDDEN_TESTS_TAG in cell.get("metadata", {}).get("tags", []):
            out.append(harness(spec.hidden[cid]))
        else:
            emit_lab_cell(next_lab)
            next_lab += 1

    # Demonstrations (training runs, evaluations, plots) cost minutes and decide nothing: neither the cells the
    # solution tags `demo` nor anything after the last graded cell runs (the executed copy names them).
    last = max(i for i, c in enumerate(out) if GRADER_KEY in c.get("metadata", {}))
    skipped = [c for i, c in enumerate(out)
               if c.cell_type == "code" and (i > last or (c.get("id") in spec.demos and GRADER_KEY not in c.metadata))]
    if skipped:
        dropped = {id(c) for c in skipped}
        out = [c for c in out[:last + 1] if id(c) not in dropped] + [nbformat.v4.new_markdown_cell(
            f"[grader: {len(skipped)} demonstration cells were not run (nothing graded depends on them): "
            + ", ".join(str(c.get("id")) for c in skipped) + "]", id="grader-skipped")]
    graded = nbformat.v4.new_notebook(metadata=copy.deepcopy(spec.lab.metadata))
    graded.metadata.setdefault("anlp_ft", {})["graded"] = True
    graded.cells = out  # ids: the lab's, "added-N" (student's extra cell N) and "<hidden id>-graded"
    notes = [f"{sum(len(v) for v in after.values())} cells added by the student were run"] if after else []
    return Assembled(graded, tampered, None, notes)


def solved_lab(spec: LabSpec) -> bytes:
    """The lab as a student who solved every exercise with the solution's code hands it in (the reference run)."""
    lab = copy.deepcopy(spec.lab)
    answers = {c.get("id"): c.source for c in spec.solution_nb.cells
               if c.cell_type == "code" and "exercise" in c.get("metadata", {}).get("anlp_ft", {})}
    for cell in lab.cells:
        if cell.get("id") in answers:
            cell.source = answers[cell.id]
    return json.dumps(lab).encode("utf-8")


def student_code(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """(label, source) of every cell of an assembled notebook whose code the student wrote: the exercise cells
    (labelled by exercise) and the cells they added ("added-N"). What `suspicious.scan` reads."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exercise = _exercise_of(cell)
        if exercise or str(cell.get("id", "")).startswith("added-"):
            cells.append((exercise or cell.id, cell_source(cell)))
    return cells


def course_code(nb: nbformat.NotebookNode) -> list[str]:
    """Sources of an assembled notebook's cells the course wrote (set-up, demonstrations; not the grader's): their
    imports bind names the student's code uses without importing. What `suspicious.scan` is given beside
    `student_code`."""
    return [cell_source(cell) for cell in nb.cells if cell.cell_type == "code" and not _exercise_of(cell)
            and not str(cell.get("id", "")).startswith("added-") and GRADER_KEY not in cell.get("metadata", {})]
