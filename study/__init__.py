"""geotune: study orchestration (CLI, config, Tuner setup, resume).

Importing this package sets the Ray environment defaults geotune relies on
(token authentication, no usage reporting). Ray caches its authentication mode
when it is first imported, so this must happen before ``import ray``; every
geotune entry point (CLI, trainables, tests) imports ``study`` first.
"""
from study.cluster import quiet_ray_environment

quiet_ray_environment()
