"""Submissions graded per hour with one worker (the baseline) and with more, on this machine, in one run.

    python benchmarks/grading_throughput.py                     # lab 05, 4 solved copies, workers 1 then 2
    python benchmarks/grading_throughput.py --lab 06 --copies 6 --workers 1 2

Each worker's kernel gets cores / workers threads (never more threads than cores), so more workers help only where
a kernel leaves cores idle (start-up, imports, single-threaded Python). Run it on a quiet machine: anything else
running on the cores is counted too. The reference run of the solution (once per batch) is reported apart.
Prints one line per setting and the ratio to one worker.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from anlp_ft.assignments.assemble import solved_lab  # noqa: E402
from anlp_ft.assignments.grade import grade, load_lab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab", default="05")
    parser.add_argument("--copies", type=int, default=4, help="solved submissions per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    spec = load_lab(args.lab)
    rates = {}
    print(f"lab {spec.number}, {args.copies} submissions per setting, {os.cpu_count()} cores")
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            paths = []
            for i in range(args.copies):
                path = Path(tmp) / f"student{i:02d}.ipynb"
                path.write_bytes(solved_lab(spec))
                paths.append(path)
            tic = time.monotonic()
            rows = grade(spec.solution, paths, Path(tmp) / "book.csv", workers=workers, output_dir=Path(tmp) / "runs",
                         quiet=True)
            wall = time.monotonic() - tic
            assert all(r.percent == 100.0 for r in rows), [(r.submission, r.percent, r.status) for r in rows]
            logs = [json.loads(p.read_text()) for p in (Path(tmp) / "runs").glob("student*/grading.json")]
            result = json.loads((Path(tmp) / "runs" / "_reference" / "result.json").read_text())
            reference = float(result.get("seconds") or 0.0)  # once per batch, before the submissions start
            per_submission = sum(log["wall_s"] for log in logs) / len(logs)
            rates[workers] = 3600 * len(rows) / (wall - reference)
            print(f"workers {workers}: {wall:.0f} s for {len(rows)} submissions ({reference:.0f} s of it the "
                  f"reference run), {per_submission:.0f} s each, {rates[workers]:.0f} submissions/hour", flush=True)
    base = rates.get(1)
    if base:
        for workers, rate in rates.items():
            print(f"workers {workers} / workers 1: {rate / base:.2f}x")


if __name__ == "__main__":
    main()
