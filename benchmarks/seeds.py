"""Summaries over seeds shared by the benchmark scripts: mean and sample spread, differences paired by seed, and
the JSON file a committed run writes."""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Iterable


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


def save_run(args: argparse.Namespace, payload: dict) -> None:
    """Write a run's settings (its command-line arguments but --out) and payload to args.out as JSON."""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    Path(args.out).write_text(json.dumps({"settings": settings, **payload}, indent=1) + "\n")
