"""What every benchmark script shares: how it names the machine, how it writes its result,
and a trial session that reports nowhere (for timing trials outside Ray: geotune's own NoSession)."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

from geotune.trainables.trial import NoSession  # re-exported for the scripts


def machine(extra: str = "") -> str:
    """The CPU and core count, plus ``extra`` (library versions, threads)."""
    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"{text}, {extra}" if extra else text


def today() -> str:
    return time.strftime("%Y-%m-%d")


def arguments(doc: str, repeats: int = 3) -> argparse.Namespace:
    """The command line of a timing script: --repeats (how many timed calls give each median) and --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--json")
    return parser.parse_args()


def median_time(fn, repeats: int) -> tuple[float, object]:
    """The median of ``repeats`` timed calls of ``fn`` (seconds), and the last call's result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def emit(result: dict, json_path: str | None) -> None:
    """Print the result, and write it to ``json_path`` when given (benchmarks/results/ keeps the recorded run)."""
    print(json.dumps(result, indent=2))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)


__all__ = ["NoSession", "arguments", "emit", "machine", "median_time", "today"]
