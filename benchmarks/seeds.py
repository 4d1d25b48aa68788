"""Summaries over seeds shared by the benchmark scripts: mean and sample spread, differences paired by seed, and
the JSON file a committed run writes."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Callable, Iterable


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = list(values)
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_sd_text(values: Iterable[float], digits: int = 3) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def paired_text(gaps: list[float], digits: int = 1) -> str:
    """Differences paired by seed: their mean ± spread, then each seed's."""
    mean, sd = mean_sd(gaps)
    return f"{mean:+.{digits}f} ± {sd:.{digits}f}   per seed " + " ".join(f"{g:+.{digits}f}" for g in gaps)


def run_settings(args: argparse.Namespace) -> dict:
    """A run's command-line arguments but where its files go."""
    return {k: v for k, v in vars(args).items() if k not in ("out", "report")}


def save_run(args: argparse.Namespace, payload: dict, **settings) -> None:
    """Write a run's settings (its arguments, plus the script's constants given as keywords) and payload to args.out
    as JSON."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": {**run_settings(args), **settings}, **payload}, indent=1) + "\n")


def run_parser(description: str, model_help: str | None = "default: SmolLM2-135M (offline: SmolLM2-135M-Instruct)"
               ) -> argparse.ArgumentParser:
    """The options every seeded run shares: --seeds, --model (with this help; None: the script names its models its
    own way), --out (write the run as JSON) and --report (print a saved run's table instead of running); the script
    adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    if model_help is not None:
        parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument("--out", help="write the settings and rows to this JSON file")
    parser.add_argument("--report", help="print the table of a run written with --out, and stop")
    return parser


def print_saved_report(args: argparse.Namespace, report: Callable[[dict], str]) -> bool:
    """With --report FILE, print that saved run's table and return True: the caller stops."""
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
    return bool(args.report)


def finish_run(args: argparse.Namespace, payload: dict, report: Callable[[dict], str], **settings) -> None:
    """Print the run's table and, with --out, save it; extra settings (constants of the script) are saved too."""
    print("\n" + report({"settings": {**run_settings(args), **settings}, **payload}))
    if args.out:
        save_run(args, payload, **settings)
