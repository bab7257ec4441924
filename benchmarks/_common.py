"""Shared helpers of the benchmark scripts: arguments, repetitions, tables, machine line.

The benchmarks run on a shared, noisy 2-core machine, so no absolute figure means much
on its own: every script runs its variants interleaved inside each repetition (side by
side, so a noisy neighbour slows all of them alike), prints min and median over the
repetitions, and states its targets as ratios of figures from that same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

__all__ = [
    "Bench",
    "fresh_db",
    "machine_line",
    "med",
    "print_table",
    "ratio_cell",
]


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_line() -> str:
    """Date, CPU, cores, load, Python and SQLite: the header every table is printed under."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now}; {cpu}, {os.cpu_count()} cores, load {load}; Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; {platform.system()} {platform.release()}"
    )


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, file: TextIO | None = None) -> None:
    """A Markdown table (pastes straight into benchmarks/README.md), columns padded."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    out = file or sys.stdout
    print(line(headers), file=out)
    rule = ("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
    print("|" + "|".join(rule) + "|", file=out)
    for row in text_rows:
        print(line(row), file=out)
    out.flush()


def ratio_cell(values: Sequence[float]) -> str:
    """``min / median`` of paired ratios, e.g. ``0.93 / 1.02``."""
    if not values:
        return "-"
    return f"{min(values):.2f} / {med(values):.2f}"


def fresh_db(directory: Path, name: str) -> str:
    """A path for a new database file on disk, with any leftovers (WAL, SHM) removed."""
    path = directory / f"{name}.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return str(path)


class Bench:
    """Argument parsing and a scratch directory on the real disk, removed at the end."""

    def __init__(self, description: str, *, reps: int, quick_reps: int) -> None:
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--quick", action="store_true", help="a short run (under 30 s) printing the same table")
        parser.add_argument(
            "--reps", type=int, default=None, help=f"repetitions (default {reps}; --quick {quick_reps})"
        )
        parser.add_argument("--dir", default=None, help="scratch directory for the SQLite files (default: a temp dir)")
        parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
        self.parser = parser
        self._reps, self._quick_reps = reps, quick_reps
        self.args: argparse.Namespace | None = None
        self.dir: Path | None = None

    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        self.args = args = self.parser.parse_args(argv)
        if args.reps is None:
            args.reps = self._quick_reps if args.quick else self._reps
        # /tmp is on the same ext4 disk as the project on this machine; SQLite files are real files.
        self.dir = Path(tempfile.mkdtemp(prefix="quaero-bench-", dir=args.dir))
        return args

    def cleanup(self) -> None:
        if self.dir is not None and not (self.args and self.args.keep):
            shutil.rmtree(self.dir, ignore_errors=True)
