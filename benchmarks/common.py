"""What every benchmark script shares: how it names the machine, how it writes its result,
and a trial session that reports nowhere (for timing trials outside Ray: geotune's own NoSession)."""

from __future__ import annotations

import json
import os
import platform
import time

from geotune.trainables.trial import NoSession  # re-exported for the scripts


def machine(extra: str = "") -> str:
    """The CPU and core count, plus ``extra`` (library versions, threads)."""
    text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    return f"{text}, {extra}" if extra else text


def today() -> str:
    return time.strftime("%Y-%m-%d")


def emit(result: dict, json_path: str | None) -> None:
    """Print the result, and write it to ``json_path`` when given (benchmarks/results/ keeps the recorded run)."""
    print(json.dumps(result, indent=2))
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)


__all__ = ["NoSession", "emit", "machine", "today"]
