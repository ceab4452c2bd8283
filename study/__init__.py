"""geotune.study, the top floor: the command line, planning a study, starting or joining Ray, Tune setup, resume.

Nothing happens on import: the environment Ray needs is set where Ray starts
(``geotune.study.cluster.ensure_ray``).
"""
