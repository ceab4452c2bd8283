"""geotune: does shaping the geometry of a CNN's latent space change what it learns?

The package is built in floors; a module imports only from its own floor or the
floors below it (``tests/test_architecture.py`` checks this):

5. ``geotune.study``          the CLI, planning a study, starting or joining Ray, Tune setup, resume
4. ``geotune.search_spaces``  one module per named study
3. ``geotune.trainables``     one trial, Ray-free at its core, and a thin Ray Tune adapter
2. ``geotune.analysis``       latent-geometry metrics, statistics, figures, the report
1. ``geotune`` itself         what every floor shares: the config schema and its errors, the
                              on-disk layout of a study and a trial, the registry of metric names

Importing any of it changes nothing in the calling process.

The Python API (``geotune.study.api``, kept stable across releases) is reached from here:
``import geotune as gt; gt.load_study("runs/NAME")``, ``gt.measure(x, labels)``, ``gt.run("quickstart")``,
``gt.resume(...)``, ``gt.load_trained(...)``, ``gt.predict(...)``. The names load on first use (PEP 562), so
``import geotune`` itself still imports nothing.
"""

__version__ = "0.2.0"

API = ("Measurement", "Study", "load_study", "load_trained", "measure", "predict", "resume", "run")


def __getattr__(name: str):
    if name in API:
        # deferred, and the one import upward: the package facade lends the top floor's API its short names
        from geotune.study import api

        return getattr(api, name)
    raise AttributeError(f"module 'geotune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
