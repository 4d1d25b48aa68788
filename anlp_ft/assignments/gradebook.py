"""The gradebook: one CSV row per submission, written the same way every time."""

from __future__ import annotations

import csv
import io
import os
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Row", "merge_gradebooks", "read_gradebook", "summarize", "write_gradebook"]


def _number(x: float) -> str:
    # 2 -> "2", 1.5 -> "1.5", 2/3 -> "0.67": stable text, and numeric in pandas and spreadsheets.
    return f"{round(float(x), 2):g}"


@dataclass(frozen=True)
class Row:
    submission: str
    scores: dict[str, float]  # exercise -> points earned
    total: float
    max_total: float
    status: str

    @property
    def percent(self) -> float:
        return round(100.0 * self.total / self.max_total, 1) if self.max_total else 0.0

    def cells(self, exercises: Sequence[str]) -> list[str]:
        return [self.submission, *(_number(self.scores.get(e, 0.0)) for e in exercises), _number(self.total),
                _number(self.max_total), _number(self.percent), self.status]


def header(exercises: Sequence[str]) -> list[str]:
    return ["submission", *exercises, "total", "max_total", "percent", "status"]


def write_gradebook(rows: Sequence[Row], exercises: Sequence[str], path: str | Path) -> None:
    """Write ``rows`` sorted by submission; refuses to replace an existing file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")  # RFC 4180, as Excel writes
    writer.writerow(header(exercises))
    for row in sorted(rows, key=lambda r: r.submission):
        writer.writerow(row.cells(exercises))
    path = Path(path)
    if path.parent != Path(""):
        path.parent.mkdir(parents=True, exist_ok=True)
    # "x": exclusive creation, so a gradebook appearing meanwhile is not clobbered either.
    with open(path, "x", encoding="utf-8", newline="") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())


def read_gradebook(path: str | Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def summarize(rows: Sequence[Row], seconds: Sequence[float] = ()) -> str:
    """Count, mean and median percent, and the submissions that did not run cleanly."""
    if not rows:
        return "graded 0 submissions"
    percents = [r.percent for r in rows]
    failures = [r for r in rows if r.status != "ok"]
    kinds = Counter(r.status.split(":")[0].split(";")[0] for r in failures)
    lines = [f"graded {len(rows)} submissions: mean {statistics.fmean(percents):.1f}%, "
             f"median {statistics.median(percents):.1f}%, {len(rows) - len(failures)} ok, {len(failures)} not ok"
             + (f" ({', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))})" if kinds else "")]
    if seconds:
        lines.append(f"time per submission: mean {statistics.fmean(seconds):.1f} s, max {max(seconds):.1f} s")
    lines += [f"  {r.submission}: {r.status}" for r in sorted(failures, key=lambda r: r.submission)]
    return "\n".join(lines)


def merge_gradebooks(parts: Sequence[str | Path], path: str | Path) -> int:
    """Join the gradebooks of `anlp-ft grade --shard K/N` runs into the one a single run writes (byte for byte:
    same header, rows sorted by submission, the same CSV dialect). Refuses different labs and repeated rows."""
    header_seen: list[str] | None = None
    rows: dict[str, list[str]] = {}
    for part in parts:
        with open(part, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header_row = next(reader, None)
            if header_row is None:
                raise ValueError(f"{part} is empty: not a gradebook")
            if header_seen is None:
                header_seen = header_row
            elif header_row != header_seen:
                raise ValueError(f"{part} has other columns than {parts[0]} (another lab?): {header_row}")
            for row in reader:
                if row[0] in rows:
                    raise ValueError(f"{row[0]} is graded in two of the gradebooks; each submission must be in one")
                rows[row[0]] = row
    if header_seen is None:
        raise ValueError("no gradebooks to merge")
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow(header_seen)
    for name in sorted(rows):
        writer.writerow(rows[name])
    path = Path(path)
    with open(path, "x", encoding="utf-8", newline="") as f:  # never replaces an existing gradebook
        f.write(buffer.getvalue())
    return len(rows)
