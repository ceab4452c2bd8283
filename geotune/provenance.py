"""What produced a study: the versions of geotune and of the libraries its numbers depend on, and the git commit."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import geotune

LIBRARIES = ("torch", "ray", "optuna", "numpy")


def git_commit(folder: Path = Path(geotune.__file__).parent) -> str | None:
    """The commit of the checkout geotune runs from ('+dirty' with uncommitted changes), None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def versions() -> dict[str, str | None]:
    """{"geotune": ..., "torch": ..., "ray": ..., "optuna": ..., "numpy": ..., "git_commit": ...}."""
    out: dict[str, str | None] = {"geotune": geotune.__version__}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["git_commit"] = git_commit()
    return out
