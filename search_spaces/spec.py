"""The old name of ``geotune.search_spaces.space`` (0.2), kept for one release: a search-space file that
imports ``StudySpec`` from here still loads, with a deprecation warning naming the new spelling."""

from __future__ import annotations

import warnings

from geotune.search_spaces import space as _space

RENAMED = {"StudySpec": "SearchSpace"}  # old name -> new name


def __getattr__(name: str):
    new = RENAMED.get(name, name)
    if not hasattr(_space, new):
        raise AttributeError(f"module 'geotune.search_spaces.spec' has no attribute '{name}'")
    warnings.warn(
        f"geotune.search_spaces.spec.{name} is now geotune.search_spaces.space.{new}; the old name goes in 0.4",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(_space, new)
