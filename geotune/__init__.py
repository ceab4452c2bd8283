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
"""

__version__ = "0.2.0"
