"""Summaries over seeds shared by the benchmark scripts: mean and sample spread, and differences paired by seed."""
from __future__ import annotations

import statistics
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
