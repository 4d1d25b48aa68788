"""Grade student submissions of a lab: ``anlp-ft grade LAB SUBMISSION... --out gradebook.csv``.

Each submission is assembled into the notebook to run (:mod:`.assemble`), executed by papermill in a fresh,
limited kernel in a worker process (:mod:`.grade_worker`, :mod:`.sandbox`) with parameters ``PROFILE="quick"``,
``SEED`` and ``GRADING=True``, and scored from the result lines of the cells the grader injected
(:mod:`.probe`). The protocol for authors of solutions is in CONTRIBUTING.md, "Grading".

Statuses: ``ok``; ``timeout``, ``memory`` (a MemoryError or failed allocation in any cell),
``error: <what>`` (the kernel died, or an exception other than a failed public check in a student or
protected cell, the first one named);
``invalid notebook: <why>`` (not JSON, no cells, another lab's notebook; not executed, 0 points);
``tampered: <cells>``. Several are joined by ``; ``. Hidden tests that ran before a timeout or a
kernel death keep their points.

Threat model: see README ("What the grader detects, and what it does not").
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .assemble import Assembled, assemble, course_code, solved_lab, student_code
from .grade_worker import is_memory_error
from .gradebook import Row, summarize, write_gradebook
from .judge import judge_parts
from .labspec import GradingError, LabSpec, load_lab
from .reports import canvas_csv, feedback_markdown, gradescope_results, summary_markdown, write_histogram, write_json
from .suspicious import scan, summary

__all__ = ["GradingError", "LabSpec", "Row", "assemble", "grade", "grade_one", "load_lab", "usable_cores"]

DEFAULT_TIMEOUT_S = 600
DEFAULT_MEMORY_MB = 8192


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


def _score(spec: LabSpec, result: dict[str, Any], reference: dict[str, list[dict]] | None = None,
           ) -> tuple[dict[str, float], list[dict[str, Any]], list[str]]:
    """Points per exercise from the injected cells' result lines, each graded part as a record
    {exercises, cell, title, passed, error}, and notes for the instructor's log. A judged part's verdict comes from
    its judge, run here on the kernel's data against `reference` (the solution kernel's parts, by cell)."""
    passed = dict.fromkeys(spec.exercises, 0)
    total = dict.fromkeys(spec.exercises, 0)
    records: list[dict[str, Any]] = []
    notes: list[str] = []
    for cid, hidden in spec.hidden.items():
        for name in hidden.exercises:
            total[name] += len(hidden.parts)
        payloads = result.get("results", {}).get(cid, [])
        payload = payloads[0] if len(payloads) == 1 else None
        parts = payload.get("parts") if isinstance(payload, dict) else None
        if len(payloads) != 1:
            notes.append(f"{cid}: {len(payloads)} results (expected 1), counted as failed")
        elif (not isinstance(parts, list) or len(parts) != len(hidden.parts)
                or payload.get("exercise") != hidden.label):
            notes.append(f"{cid}: malformed result, counted as failed")
        if not isinstance(parts, list) or len(parts) != len(hidden.parts) or payload.get("exercise") != hidden.label:
            parts = [{"passed": False, "error": ""}] * len(hidden.parts)
        verdicts = judge_parts(hidden, parts, (reference or {}).get(cid))
        for number, verdict in enumerate(verdicts, start=1):
            ok, error = verdict["passed"], verdict["error"]
            records.append({"exercises": list(hidden.exercises), "cell": cid, "title": hidden.title(number),
                            "passed": ok, "error": error, "judged": bool(hidden.judge(number))})
            if ok:
                for name in hidden.exercises:
                    passed[name] += 1
            elif error:
                notes.append(f"{cid} part {number}: {error}")
    scores = {ex: round(points * passed[ex] / total[ex], 2) for ex, points in spec.exercises.items()}
    return scores, records, notes


def in_kernel_exercises(spec: LabSpec) -> list[str]:
    """Exercises with a part that has no judge: their verdict is the kernel's own report, which a submission can
    forge. Printed when grading starts and written in the batch's summary."""
    return [name for name in spec.exercises
            if any(name in h.exercises and not h.judged for h in spec.hidden.values())]


def reference_parts(spec: LabSpec, run_dir: Path, secret: int, timeout: float, memory_mb: int, seed: int,
                    profile: str, mask_paths: Sequence[str], threads: int) -> dict[str, list[dict]]:
    """Run the solution itself, with the same probes and GRADER_SEED, and return its parts' data by cell: what
    each judge compares a submission's data with. A probe the solution fails, or a judge that rejects the
    solution's own data, stops the batch: the lab's hidden tests are broken, not the students."""
    row, log = grade_one(spec, "reference solution", solved_lab(spec), run_dir, timeout,
                         memory_mb, seed, profile, mask_paths, threads, secret=secret, keep_result=True)
    result = log.get("result", {})
    parts = {cid: payloads[0]["parts"] for cid, payloads in result.get("results", {}).items()
             if len(payloads) == 1 and isinstance(payloads[0], dict) and isinstance(payloads[0].get("parts"), list)}
    _, records, _ = _score(spec, result, parts)
    failed = [f"{r['cell']} ({r['title']}): {r['error'] or 'no result'}" for r in records if not r["passed"]]
    if failed or "error" in row.status or "timeout" in row.status:
        raise GradingError(f"the solution fails its own hidden tests, so nothing can be judged ({row.status}): "
                           + "; ".join(failed[:5]) + f"; see {run_dir}")
    return parts


def _status(assembled: Assembled, result: dict[str, Any] | None, suspicious: str = "") -> str:
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
    if suspicious:  # evidence for a human; the points stand
        parts.append(suspicious)
    return "; ".join(parts) or "ok"


def _unprotected(result: dict[str, Any]) -> str:
    """Say plainly which of the kernel's protections the OS refused (network, masks, process clean-up)."""
    shield = result.get("protections")
    if not isinstance(shield, dict):
        return "unprotected: the sandbox did not report" if result.get("outcome") == "ok" else ""
    missing = []
    if shield.get("network") != "off":
        missing.append(f"network {shield.get('network')}")
    masked = str(shield.get("masked", ""))
    if not masked.startswith("applied") or "NOT" in masked:
        missing.append(f"masks {masked}")
    if shield.get("processes") != "pid namespace":
        missing.append(f"processes: {shield.get('processes')}")
    return "unprotected: " + ", ".join(missing) if missing else ""


def mask_paths_for(spec: LabSpec, output_dir: Path, submissions: Sequence[str]) -> list[str]:
    """What a kernel must not read: everything in the course folder but the package and the Python environment
    (so solutions/, its git history and executed copies in out/ too), the grader's runs (other submissions'
    results) and the submitted files. A submissions folder is masked whole unless it holds what the kernel needs;
    then its submissions are masked one by one."""
    needed = [Path(sys.prefix).resolve(), Path(__file__).resolve().parents[1]]

    def holds_needed(path: Path) -> bool:
        return any(n == path or n.is_relative_to(path) for n in needed)

    root = spec.solution.parent.parent.resolve()
    paths = [entry for entry in sorted(root.iterdir()) if not holds_needed(entry.resolve())]
    paths += [spec.solution.parent.resolve(), output_dir.resolve()]
    for folder, files in _by_folder(submissions).items():
        paths += files if holds_needed(folder) else [folder]
    return [str(p) for p in dict.fromkeys(paths)]


def _by_folder(submissions: Sequence[str]) -> dict[Path, list[Path]]:
    folders: dict[Path, list[Path]] = {}
    for name in submissions:
        path = Path(name).resolve()
        folders.setdefault(path.parent, []).append(path)
    return folders


def _run_name(submission: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(submission).stem)[:60] or "submission"
    return f"{stem}-{hashlib.sha256(submission.encode()).hexdigest()[:8]}"


def grade_one(spec: LabSpec, submission: str, data: bytes, run_dir: Path, timeout: float, memory_mb: int,
              seed: int = 0, profile: str = "quick", mask_paths: Sequence[str] = (),
              threads: int = 1, *, secret: int = 0, reference: dict[str, list[dict]] | None = None,
              keep_result: bool = False) -> tuple[Row, dict[str, Any]]:
    """Grade one submission whose bytes are ``data``; writes executed.ipynb and logs into ``run_dir``. The kernel
    cannot read ``mask_paths`` (see :mod:`.sandbox`) and gets ``threads`` CPU threads; its probes draw inputs from
    ``secret``, and judged parts compare with ``reference`` (see `reference_parts`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    nonce = secrets.token_hex(16)
    try:
        assembled = assemble(spec, data, nonce, secret)
    except Exception as error:  # JSON that is a notebook only in outline (odd types inside cells)
        assembled = Assembled(None, [], f"malformed notebook ({type(error).__name__})")
    zero = dict.fromkeys(spec.exercises, 0.0)
    if assembled.notebook is None:
        row = Row(submission, zero, 0.0, spec.max_total, _status(assembled, None))
        return row, {"status": row.status, "parts": _score(spec, {})[1]}
    job = {"notebook": assembled.notebook, "nonce": nonce, "timeout": timeout, "memory_mb": memory_mb,
           "parameters": {"PROFILE": profile, "SEED": seed, "GRADING": True}, "start_timeout": 120,
           "mask_paths": list(mask_paths), "threads": threads}
    findings = scan(student_code(assembled.notebook), course_code(assembled.notebook))
    result = _execute(job, run_dir, timeout)
    scores, parts, notes = _score(spec, result, reference)
    status = _status(assembled, result, "; ".join(filter(None, [_unprotected(result), summary(findings)])))
    row = Row(submission, scores, round(sum(scores.values()), 2), spec.max_total, status)
    log = {"status": row.status, "tampered": assembled.tampered, "notes": assembled.notes + notes,
           "suspicious": [str(f) for f in findings], "protections": result.get("protections", {}),
           "errors": result.get("errors", []), "seconds": result.get("seconds"),
           "dropped_output_bytes": result.get("dropped_bytes", 0), "parts": parts}
    if keep_result:
        log["result"] = result
    return row, log


def parse_shard(text: str | None) -> tuple[int, int]:
    """"K/N" -> (K, N), 1 <= K <= N; None -> (1, 1)."""
    if not text:
        return 1, 1
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise GradingError(f"--shard must be K/N with 1 <= K <= N (e.g. 2/4), not {text!r}")
    return int(k), int(n)


def _resume_key(spec: LabSpec, data: bytes | None, timeout: float, memory_mb: int, seed: int, profile: str) -> dict:
    """What a stored row depends on: the same lab, submission bytes and settings give the same row."""
    return {"solution_sha256": hashlib.sha256(spec.solution.read_bytes()).hexdigest(),
            "submission_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "timeout": timeout, "memory_mb": memory_mb, "seed": seed, "profile": profile}


def _stored_row(record_file: Path, key: dict) -> tuple[Row, dict[str, Any]] | None:
    """The row an earlier, interrupted run of the same command already wrote for this submission, if any."""
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("key") != key or not isinstance(record.get("row"), dict):
        return None
    r = record["row"]
    return Row(r["submission"], r["scores"], r["total"], r["max_total"], r["status"]), record


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (narrowed by taskset, a container's cpuset or a parallel
    test worker), not the machine's count. Parallel kernels share these."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def grade(lab: str | Path, submissions: list[str | Path], out_csv: str | Path, timeout: float = DEFAULT_TIMEOUT_S,
          memory_mb: int = DEFAULT_MEMORY_MB, workers: int = 1, output_dir: str | Path | None = None,
          seed: int = 0, profile: str = "quick", quiet: bool = False, shard: str | None = None,
          formats: Sequence[str] = ()) -> list[Row]:
    """Grade ``submissions`` of ``lab`` into the gradebook ``out_csv``; one row per submission, sorted by name.

    ``out_csv`` must not exist yet (an earlier gradebook is never overwritten). Executed copies, logs, feedback
    and each submission's row go to ``output_dir`` (default: ``<out_csv without .csv>-runs/``), one folder per
    submission, as soon as it is graded: the same command run again after an interruption grades only what is
    missing. ``shard="K/N"`` grades the K-th of N deterministic parts (merge their gradebooks with
    `merge_gradebooks`). ``formats`` adds exports beside the gradebook: "canvas". Submission files are read once
    and never written.
    """
    out_csv = Path(out_csv)
    if out_csv.exists():
        raise FileExistsError(f"{out_csv} exists; grading never overwrites a gradebook: "
                              "move it away or pick another --out")
    unknown = set(formats) - {"canvas"}
    if unknown:
        raise GradingError(f"unknown --format {sorted(unknown)}; known: canvas")
    k, n = parse_shard(shard)
    spec = load_lab(lab)
    output_dir = (Path(output_dir) if output_dir else out_csv.with_name(out_csv.stem + "-runs")).resolve()
    names = sorted(dict.fromkeys(str(s) for s in submissions))[k - 1::n]
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
    masks = mask_paths_for(spec, output_dir, [n for n in names if snapshots[n] is not None])
    threads = max(1, usable_cores() // max(1, workers))  # workers share the cores, never oversubscribe
    resumed = 0
    interrupted = threading.Event()  # set on Ctrl-C / SIGTERM: a run cut short by it must not be recorded
    secret = secrets.randbelow(2**31)  # the probes' inputs: new every run, on disk only in the masked runs folder
    judged = any(any(h.judges) for h in spec.hidden.values())
    reference: dict[str, list[dict]] = {}
    reference_lock = threading.Lock()
    in_kernel = in_kernel_exercises(spec)
    if in_kernel and not quiet:
        print(f"note: lab {spec.number}'s {', '.join(in_kernel)} are judged inside the student's kernel "
              "(no `# JUDGE` in their hidden tests): a submission can forge those verdicts", file=sys.stderr)

    def judged_against() -> dict[str, list[dict]] | None:
        """The solution's data for this run's inputs, computed once, on first need (a resumed run may need none)."""
        if not judged:
            return None
        with reference_lock:
            if not reference:
                tic = time.monotonic()
                reference.update(reference_parts(spec, output_dir / "_reference", secret, timeout, memory_mb, seed,
                                                 profile, masks, threads))
                if not quiet:
                    print(f"reference run (the solution through the same probes): {time.monotonic() - tic:.0f} s",
                          flush=True)
        return reference

    def one(name: str) -> tuple[Row, dict[str, Any]]:
        nonlocal resumed
        run_dir = output_dir / _run_name(name)
        data = snapshots[name]
        key = _resume_key(spec, data, timeout, memory_mb, seed, profile)
        stored = _stored_row(run_dir / "grading.json", key)
        if stored is not None:
            resumed += 1
            return stored
        against = judged_against() if data is not None else None  # before the clock: it is the batch's cost
        tic = time.monotonic()
        if data is None:
            row = Row(name, dict.fromkeys(spec.exercises, 0.0), 0.0, spec.max_total,
                      "invalid notebook: cannot read the file")
            log: dict[str, Any] = {"status": row.status, "parts": _score(spec, {})[1]}
        else:
            try:
                row, log = grade_one(spec, name, data, run_dir, timeout, memory_mb, seed, profile, masks, threads,
                                     secret=secret, reference=against)
            except GradingError:  # the lab's own tests are broken: stop, every row would be wrong
                raise
            except Exception as error:  # the batch always completes
                row = Row(name, dict.fromkeys(spec.exercises, 0.0), 0.0, spec.max_total,
                          f"error: grader failed: {type(error).__name__}: {error}"[:300])
                log = {"status": row.status, "parts": _score(spec, {})[1]}
        log["wall_s"] = round(time.monotonic() - tic, 2)
        if interrupted.is_set():  # its worker was stopped by the interruption: grade it again next time
            raise KeyboardInterrupt(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "feedback.md").write_text(feedback_markdown(spec.number, row, spec.exercises, log["parts"]),
                                             encoding="utf-8")
        write_json(run_dir / "results.json", gradescope_results(row, spec.exercises, log["parts"]))
        # The row last, atomically: its presence is what marks the submission as graded.
        record = {"submission": name, "key": key, "row": asdict(row), **log}
        tmp = run_dir / "grading.json.tmp"
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(run_dir / "grading.json")
        if not quiet:
            print(f"{row.percent:6.1f}%  {row.status}  {name}  ({log['wall_s']:.0f} s)", flush=True)
        return row, record

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        graded = list(pool.map(one, names))
    except BaseException:  # Ctrl-C: no worker or kernel may outlive the command
        interrupted.set()
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
    histogram = out_csv.with_name(out_csv.stem + "-histogram.png")
    write_histogram(rows, histogram, f"lab {spec.number}: percent per submission")
    out_csv.with_name(out_csv.stem + "-summary.md").write_text(
        summary_markdown(spec.number, rows, spec.exercises, histogram.name, in_kernel), encoding="utf-8")
    if "canvas" in formats:
        out_csv.with_name(out_csv.stem + "-canvas.csv").write_text(
            canvas_csv(rows, f"Lab {spec.number}"), encoding="utf-8", newline="")
    if not quiet:
        if resumed:
            print(f"resumed: {resumed} of {len(rows)} rows were already graded by an earlier run of this command")
        print(summarize(rows, [log.get("wall_s", 0.0) for _, log in graded]))
        print(f"gradebook: {out_csv} (summary, histogram{', canvas' if formats else ''} beside it); "
              f"executed notebooks, logs and feedback: {output_dir}")
    return rows
