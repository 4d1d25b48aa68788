"""Grade student submissions of a lab: ``anlp-ft grade LAB SUBMISSION... --out gradebook.csv``.

How a submission is graded
--------------------------
1. The grader reads the solution (``solutions/NN_name.ipynb``, the only place hidden tests live) and
   renders its lab with :func:`.markers.build_lab`, exactly as ``anlp-ft assign`` does.
2. It reads each submission once (a snapshot: what a kernel later does to the file changes nothing)
   and builds the notebook it will run, in the solution's cell order:

   * an **exercise cell** (lab metadata ``{"anlp_ft": {"exercise": "ex1", "points": 2}}``) is the
     student's cell with the same cell id (or, failing ids, the same exercise metadata); a missing
     one runs as the stub and scores 0;
   * every other **code cell is protected** (set-up, parameters, public checks, demos, results):
     the student's copy is compared with the lab's by a SHA-256 of its source (trailing whitespace
     ignored); an edited or deleted one is named in the status (``tampered: ex1-check (edited)``)
     and the lab's original is what runs;
   * code cells the student added run where the student put them (after the lab cell before them);
   * each solution cell tagged ``hidden-tests`` becomes a cell the grader injects at the same place.

3. papermill executes it in a fresh kernel per submission with parameters ``PROFILE="quick"``,
   ``SEED`` and ``GRADING=True``, within a wall-clock budget (from the first cell on) and a memory
   cap, with the network off where the OS allows; see :mod:`.grade_worker` and :mod:`.sandbox`.

Hidden-test protocol (for authors of solutions/)
------------------------------------------------
* A hidden-test cell is a code cell tagged ``hidden-tests`` with metadata
  ``{"anlp_ft": {"hidden_tests_for": "ex1"}}`` (or a list, ``["ex3", "ex4"]``) naming the
  exercises it grades; without that metadata the ``exN`` in its cell id name them (``ex34``: ex3 and
  ex4). It sits in the solution where its checks make sense (after the exercise and the cells whose
  results it reads) and runs there, in the student's kernel, after the student's code.
* Lines ``# PART`` (optionally followed by a label) split a hidden-test cell into parts for
  partial credit. An exercise's score is its points times the fraction of its parts (over all the
  hidden-test cells naming it) that pass; a part passes when it runs without raising.
* An exercise with no hidden-test cell is graded by the lab's own top-level ``check("exN", ...)``
  statements, re-run strictly by the grader right after the cell holding them. One with neither
  makes the grader refuse the lab.
* Inside hidden tests, ``from anlp_ft.assignments.public import labNN`` and ``check(...)`` reach a
  fresh copy of the lab's public check module, loaded from its file by the grader, so a student who
  replaced ``check`` or patched the module does not grade themselves. ``check`` is strict there: a
  stub fails instead of being reported. A solution may name another checks file (relative to
  itself) in its notebook metadata ``{"anlp_ft": {"public_checks": "path.py"}}``.
* ``### BEGIN HIDDEN TESTS`` line blocks inside ordinary cells are removed from labs but are not
  scored (the grader runs the lab's version of a protected cell): put graded tests in
  ``hidden-tests`` cells.

How scores are recorded
-----------------------
Each injected cell runs its parts under ``try``, then writes one line ``<nonce> <json>`` with the
pass/fail of each part. The nonce is random per submission, sent to the kernel only inside the
injected cells and never written to disk before the kernel is gone. The grader reads result lines
only from the output messages of the cells it injected, as they arrive (output caps do not hide
them). A missing, repeated or malformed result counts every part of that cell as failed. Nothing a
student cell prints is ever parsed, so a printed "score" earns nothing.

Statuses: ``ok``; ``timeout``, ``memory`` (a MemoryError or failed allocation in any cell),
``error: <what>`` (the kernel died, or an exception other than a failed public check in a student or
protected cell, the first one named);
``invalid notebook: <why>`` (not JSON, no cells, another lab's notebook; not executed, 0 points);
``tampered: <cells>``. Several are joined by ``; ``. Hidden tests that ran before a timeout or a
kernel death keep their points.

Threat model: see README ("Grading: what the grader detects"). In short, the kernel runs the
student's code with the grader's user rights; any code in the same process can in principle rewrite
the interpreter that the hidden tests then use. The grader stops the easy cheats and records
evidence; only running each submission in a container (``--network none``, read-only mounts, a
fresh user) stops a determined attacker.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import copy
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from .grade_worker import GRADER_KEY, is_memory_error
from .gradebook import Row, summarize, write_gradebook
from .markers import HIDDEN_TESTS_TAG, build_lab
from .sync import read_solution

__all__ = ["GradingError", "LabSpec", "Row", "add_grade_parser", "assemble", "grade", "load_lab"]

DEFAULT_TIMEOUT_S = 600
DEFAULT_MEMORY_MB = 8192
PART_LINE = re.compile(r"^[ \t]*#[ \t]*PART\b.*$", re.M)
PUBLIC_DIR = Path(__file__).resolve().parent / "public"


class GradingError(ValueError):
    """The lab cannot be graded as given (unknown lab, exercise without hidden tests, ...)."""


@dataclass
class HiddenCell:
    cell_id: str
    exercises: tuple[str, ...]  # every part counts for each of them
    parts: list[str]
    after: str | None = None  # None: at its place in the solution; else injected after this lab cell

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

    @property
    def max_total(self) -> float:
        return float(sum(self.exercises.values()))


# --- the lab ------------------------------------------------------------------------------------------------
def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def source_hash(cell: Any) -> str:
    """Checksum of a code cell as the student sees it; trailing whitespace does not count as an edit."""
    text = "\n".join(line.rstrip() for line in _source(cell).strip("\n").split("\n")).strip()
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
        parts = [p for p in PART_LINE.split(_source(cell)) if p.strip()]
        if not parts:
            raise GradingError(f"{source_name}, cell {cell_id}: empty hidden-tests cell")
        hidden[cell_id] = HiddenCell(cell_id, graded, parts)
        for name in graded:
            counts[name] += len(parts)
    # An exercise without hidden tests is graded by the lab's public check calls, re-run strictly.
    unchecked = {name for name, n in counts.items() if n == 0}
    for cell in lab_nb.cells:
        if cell.cell_type != "code":
            continue
        for name, calls in _check_calls(_source(cell)).items():
            if name in unchecked:
                key = f"{cell.id}-{name}-checks"
                hidden[key] = HiddenCell(key, (name,), calls, after=cell.id)
                counts[name] += len(calls)
    if missing := [name for name, n in counts.items() if n == 0]:
        raise GradingError(f"{source_name}: no hidden-tests cell and no check(...) call for {', '.join(missing)}; "
                           "every exercise needs one")
    checks = solution_nb.metadata.get("anlp_ft", {}).get("public_checks")
    checks_path = (solution.parent / checks).resolve() if checks else PUBLIC_DIR / f"lab{number}.py"
    return LabSpec(solution=solution, source_name=source_name, number=number, lab=lab_nb, solution_nb=solution_nb,
                   exercises=exercises, hidden=hidden, checks_module=f"anlp_ft.assignments.public.lab{number}",
                   checks_path=checks_path if checks_path.is_file() else None)


# --- one submission -> the notebook the grader runs -----------------------------------------------------------
_HARNESS = '''\
# Hidden tests for {exercise}, injected by the anlp-ft grader (not part of the submission).
def _anlp_ft_hidden_tests(nonce, exercise, module_name, module_path, parts):
    import importlib.util, json, sys, traceback
    ns = get_ipython().user_ns
    package_name, _, attr = module_name.rpartition(".")
    package = sys.modules.get(package_name)
    saved = sys.modules.get(module_name), getattr(package, attr, None), ns.get("check")
    results = []
    try:
        fresh = None
        if module_path:
            # A fresh copy from the file: patches to the imported module or to `check` do not reach it.
            spec = importlib.util.spec_from_file_location(module_name, module_path)
            fresh = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = fresh
            spec.loader.exec_module(fresh)
            if package is not None:
                setattr(package, attr, fresh)

        def check(name, *args, **kwargs):  # strict: a stub fails here instead of being reported
            if fresh is None:
                raise RuntimeError("this lab has no public checks module")
            getattr(fresh, name)(*args, **kwargs)
            return True

        ns["check"] = check
        for number, source in enumerate(parts, start=1):
            try:
                exec(compile(source, f"<hidden tests {{exercise}} part {{number}}>", "exec"), ns)
                results.append({{"passed": True}})
            except BaseException as error:
                results.append({{"passed": False, "error": f"{{type(error).__name__}}: {{error}}"[:300]}})
                traceback.print_exc()
    except BaseException as error:
        results = [{{"passed": False, "error": f"grader: {{type(error).__name__}}: {{error}}"[:300]}}] * len(parts)
    finally:
        for key, value in ((module_name, saved[0]),):
            if value is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = value
        if package is not None and saved[1] is not None:
            setattr(package, attr, saved[1])
        if saved[2] is None:
            ns.pop("check", None)
        else:
            ns["check"] = saved[2]
    sys.stdout.write("\\n" + nonce + " " + json.dumps({{"exercise": exercise, "parts": results}}) + "\\n")
    sys.stdout.flush()


_anlp_ft_hidden_tests({nonce!r}, {exercise!r}, {module!r}, {path!r}, {parts!r})
del _anlp_ft_hidden_tests
'''


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


def assemble(spec: LabSpec, data: bytes, nonce: str) -> Assembled:
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
        elif cell.get("cell_type") == "code" and _source(cell).strip():
            after.setdefault(last_lab, []).append(i)

    tampered: list[str] = []
    out: list[nbformat.NotebookNode] = [_clean_code(_source(student[i]), {}, f"added-{i}") for i in after.get(-1, [])]
    next_lab = 0
    injected_after: dict[str, list[HiddenCell]] = {}
    for hidden in spec.hidden.values():
        if hidden.after is not None:
            injected_after.setdefault(hidden.after, []).append(hidden)

    def harness(hidden: HiddenCell) -> nbformat.NotebookNode:
        source = _HARNESS.format(nonce=nonce, exercise=hidden.label, module=spec.checks_module,
                                 path=str(spec.checks_path) if spec.checks_path else None, parts=hidden.parts)
        return nbformat.v4.new_code_cell(source, id=f"{hidden.cell_id}-graded"[-64:],
                                         metadata={GRADER_KEY: {"cell": hidden.cell_id, "exercise": hidden.label}})

    def emit_lab_cell(j: int) -> None:
        cell = lab_cells[j]
        name = cell.get("id")
        if cell.cell_type == "code":
            if _exercise_of(cell):
                source = _source(student[matched[j]]) if j in matched else _source(cell)
                out.append(_clean_code(source, cell.metadata, name))
            else:
                if j not in matched:
                    tampered.append(f"{name} (deleted)")
                elif source_hash(student[matched[j]]) != source_hash(cell):
                    tampered.append(f"{name} (edited)")
                out.append(_clean_code(_source(cell), cell.metadata, name))
        elif cell.cell_type == "markdown":
            text = _source(student[matched[j]]) if j in matched else _source(cell)
            out.append(nbformat.v4.new_markdown_cell(text, id=name))
        for checks in injected_after.get(name, []):
            out.append(harness(checks))
        for i in after.get(j, []):
            out.append(_clean_code(_source(student[i]), {}, f"added-{i}"))

    # Walk the solution: its non-hidden cells are the lab's cells in the same order.
    for index, cell in enumerate(spec.solution_nb.cells):
        cid = cell.get("id") or f"cell-{index}"
        if cid in spec.hidden and HIDDEN_TESTS_TAG in cell.get("metadata", {}).get("tags", []):
            out.append(harness(spec.hidden[cid]))
        else:
            emit_lab_cell(next_lab)
            next_lab += 1

    graded = nbformat.v4.new_notebook(metadata=copy.deepcopy(spec.lab.metadata))
    graded.metadata.setdefault("anlp_ft", {})["graded"] = True
    graded.cells = out  # ids: the lab's, "added-N" (student's extra cell N) and "<hidden id>-graded"
    notes = [f"{sum(len(v) for v in after.values())} cells added by the student were run"] if after else []
    return Assembled(graded, tampered, None, notes)


# --- running and scoring ---------------------------------------------------------------------------------------
def _kill_orphan_kernel(pidfile: Path) -> None:
    """Kill the kernel of a worker that was killed or crashed (a clean worker shuts its kernel down)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"ipykernel" in cmdline:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


_RUNNING: dict[int, tuple[subprocess.Popen, Path]] = {}  # workers in flight, stopped together on Ctrl-C


def _stop(proc: subprocess.Popen, run_dir: Path) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker has its own session: its group is only its own
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    _kill_orphan_kernel(run_dir / "kernel.pid")  # jupyter starts kernels in a session of their own


def _execute(job: dict[str, Any], run_dir: Path, timeout: float) -> dict[str, Any]:
    """Run one job in a worker process; a worker that hangs or crashes becomes an error, never a stall."""
    log = (run_dir / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "anlp_ft.assignments.grade_worker", str(run_dir)],
                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    _RUNNING[proc.pid] = (proc, run_dir)
    try:
        proc.communicate(json.dumps(job).encode("utf-8"), timeout=timeout + job["start_timeout"] + 60)
    except subprocess.TimeoutExpired:
        _stop(proc, run_dir)
    finally:
        _RUNNING.pop(proc.pid, None)
        log.close()
    if proc.returncode != 0:
        _kill_orphan_kernel(run_dir / "kernel.pid")
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        return {"outcome": "error", "message": f"the grading worker failed (exit {proc.returncode}); see worker.log",
                "results": {}, "errors": [], "seconds": None}
    return json.loads(result_file.read_text(encoding="utf-8"))


def _score(spec: LabSpec, result: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
    passed = dict.fromkeys(spec.exercises, 0)
    total = dict.fromkeys(spec.exercises, 0)
    notes: list[str] = []
    for cid, hidden in spec.hidden.items():
        for name in hidden.exercises:
            total[name] += len(hidden.parts)
        payloads = result.get("results", {}).get(cid, [])
        if len(payloads) != 1:
            notes.append(f"{cid}: {len(payloads)} results (expected 1), counted as failed")
            continue
        payload = payloads[0]
        parts = payload.get("parts") if isinstance(payload, dict) else None
        if (not isinstance(parts, list) or len(parts) != len(hidden.parts)
                or payload.get("exercise") != hidden.label):
            notes.append(f"{cid}: malformed result, counted as failed")
            continue
        for number, part in enumerate(parts, start=1):
            if isinstance(part, dict) and part.get("passed") is True:
                for name in hidden.exercises:
                    passed[name] += 1
            else:
                error = part.get("error", "") if isinstance(part, dict) else ""
                notes.append(f"{cid} part {number}: {error}")
    scores = {ex: round(points * passed[ex] / total[ex], 2) for ex, points in spec.exercises.items()}
    return scores, notes


def _status(assembled: Assembled, result: dict[str, Any] | None) -> str:
    parts: list[str] = []
    if result is not None:
        errors = result.get("errors", [])
        outcome = result.get("outcome")
        if outcome == "timeout":
            parts.append("timeout")
        elif any(is_memory_error(e.get("ename", ""), e.get("evalue", "")) for e in errors):
            parts.append("memory")
        elif outcome == "died":
            parts.append("error: the kernel died")
        elif outcome == "error":
            parts.append(f"error: {result.get('message', '')}")
        else:
            # A failed public check is a wrong answer (it costs points), not a broken run.
            student_errors = [e for e in errors if not e.get("grader") and e.get("ename") != "CheckFailed"]
            if student_errors:
                first = student_errors[0]
                parts.append(f"error: {first['ename']} in cell {first['cell']}")
    if assembled.invalid:
        parts.append(f"invalid notebook: {assembled.invalid}")
    if assembled.tampered:
        parts.append("tampered: " + ", ".join(assembled.tampered))
    return "; ".join(parts) or "ok"


def _run_name(submission: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(submission).stem)[:60] or "submission"
    return f"{stem}-{hashlib.sha256(submission.encode()).hexdigest()[:8]}"


def grade_one(spec: LabSpec, submission: str, data: bytes, run_dir: Path, timeout: float, memory_mb: int,
              seed: int = 0, profile: str = "quick") -> tuple[Row, dict[str, Any]]:
    """Grade one submission whose bytes are ``data``; writes executed.ipynb and logs into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    nonce = secrets.token_hex(16)
    try:
        assembled = assemble(spec, data, nonce)
    except Exception as error:  # JSON that is a notebook only in outline (odd types inside cells)
        assembled = Assembled(None, [], f"malformed notebook ({type(error).__name__})")
    zero = dict.fromkeys(spec.exercises, 0.0)
    if assembled.notebook is None:
        row = Row(submission, zero, 0.0, spec.max_total, _status(assembled, None))
        return row, {"status": row.status}
    job = {"notebook": assembled.notebook, "nonce": nonce, "timeout": timeout, "memory_mb": memory_mb,
           "parameters": {"PROFILE": profile, "SEED": seed, "GRADING": True}, "start_timeout": 120}
    result = _execute(job, run_dir, timeout)
    scores, notes = _score(spec, result)
    row = Row(submission, scores, round(sum(scores.values()), 2), spec.max_total, _status(assembled, result))
    log = {"status": row.status, "tampered": assembled.tampered, "notes": assembled.notes + notes,
           "errors": result.get("errors", []), "seconds": result.get("seconds"),
           "dropped_output_bytes": result.get("dropped_bytes", 0)}
    return row, log


def grade(lab: str | Path, submissions: list[str | Path], out_csv: str | Path, timeout: float = DEFAULT_TIMEOUT_S,
          memory_mb: int = DEFAULT_MEMORY_MB, workers: int = 1, output_dir: str | Path | None = None,
          seed: int = 0, profile: str = "quick", quiet: bool = False) -> list[Row]:
    """Grade ``submissions`` of ``lab`` into the gradebook ``out_csv``; one row per submission, sorted by name.

    ``out_csv`` must not exist yet (an earlier gradebook is never overwritten). Executed copies and
    logs go to ``output_dir`` (default: ``<out_csv without .csv>-runs/``), one folder per submission.
    Submission files are read once and never written.
    """
    out_csv = Path(out_csv)
    if out_csv.exists():
        raise FileExistsError(f"{out_csv} exists; grading never overwrites a gradebook: "
                              "move it away or pick another --out")
    spec = load_lab(lab)
    output_dir = (Path(output_dir) if output_dir else out_csv.with_name(out_csv.stem + "-runs")).resolve()
    names = sorted(dict.fromkeys(str(s) for s in submissions))
    snapshots: dict[str, bytes | None] = {}
    for name in names:
        try:
            snapshots[name] = Path(name).read_bytes()
        except OSError:
            snapshots[name] = None
    digests = {n: hashlib.sha256(d).hexdigest() for n, d in snapshots.items() if d is not None}
    resolved = {Path(n).resolve() for n in names}
    if any(p.is_relative_to(output_dir.resolve()) for p in resolved):
        raise GradingError(f"the output folder {output_dir} holds submissions; pick another --output-dir")
    output_dir.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> tuple[Row, dict[str, Any]]:
        run_dir = output_dir / _run_name(name)
        data = snapshots[name]
        tic = time.monotonic()
        if data is None:
            row = Row(name, dict.fromkeys(spec.exercises, 0.0), 0.0, spec.max_total,
                      "invalid notebook: cannot read the file")
            log: dict[str, Any] = {"status": row.status}
        else:
            try:
                row, log = grade_one(spec, name, data, run_dir, timeout, memory_mb, seed, profile)
            except Exception as error:  # the batch always completes
                row = Row(name, dict.fromkeys(spec.exercises, 0.0), 0.0, spec.max_total,
                          f"error: grader failed: {type(error).__name__}: {error}"[:300])
                log = {"status": row.status}
        log["wall_s"] = round(time.monotonic() - tic, 2)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "grading.json").write_text(json.dumps({"submission": name, **log}, indent=1, sort_keys=True),
                                              encoding="utf-8")
        if not quiet:
            print(f"{row.percent:6.1f}%  {row.status}  {name}  ({log['wall_s']:.0f} s)", flush=True)
        return row, log

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        graded = list(pool.map(one, names))
    except BaseException:  # Ctrl-C: no worker or kernel may outlive the command
        pool.shutdown(wait=False, cancel_futures=True)
        for proc, run_dir in list(_RUNNING.values()):
            _stop(proc, run_dir)
        raise
    pool.shutdown()
    rows = [row for row, _ in graded]
    for row in rows:  # a kernel may have written to other submissions: grades came from the snapshots
        now = Path(row.submission)
        changed = not now.is_file() or hashlib.sha256(now.read_bytes()).hexdigest() != digests.get(row.submission)
        if row.submission in digests and changed:
            print(f"warning: {row.submission} changed on disk during grading (graded from the copy read at the start)",
                  file=sys.stderr)
    write_gradebook(rows, list(spec.exercises), out_csv)
    if not quiet:
        print(summarize(rows, [log.get("wall_s", 0.0) for _, log in graded]))
        print(f"gradebook: {out_csv}; executed notebooks and logs: {output_dir}")
    return rows


# --- command line ---------------------------------------------------------------------------------------------
def cmd_grade(args: argparse.Namespace) -> int:
    # `kill` or a CI timeout: exit through grade()'s clean-up, which stops the workers and kernels.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows = grade(args.lab, args.submissions, args.out, timeout=args.timeout, memory_mb=args.memory_mb,
                     workers=args.workers, output_dir=args.output_dir)
    except (GradingError, FileExistsError) as error:
        print(f"anlp-ft grade: {error}", file=sys.stderr)
        return 2
    return 0 if rows else 1


def add_grade_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``anlp-ft grade`` on the CLI's subparsers."""
    p = subparsers.add_parser("grade", help="grade submissions of a lab into a gradebook CSV",
                              description="Run each submission in its own limited kernel with the lab's hidden tests "
                                          "and write one gradebook row per submission.")
    p.add_argument("lab", metavar="LAB", help="lab number (01..06) or a solution notebook's path")
    p.add_argument("submissions", metavar="SUBMISSION", nargs="+", help="submitted notebooks (never modified)")
    p.add_argument("--out", required=True, help="gradebook CSV to create (an existing file is never overwritten)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"wall-clock seconds per submission (default {DEFAULT_TIMEOUT_S})")
    p.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                   help=f"address-space cap of each kernel in MiB (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--workers", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument("--output-dir", default=None, help="executed notebooks and logs (default: <out>-runs/)")
    p.set_defaults(func=cmd_grade)
    return p


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m anlp_ft.assignments.grade")
    add_grade_parser(parser.add_subparsers(dest="command", required=True))
    arguments = parser.parse_args(["grade", *sys.argv[1:]])
    sys.exit(arguments.func(arguments))
