"""geotune.analysis (floor 2): latent-geometry metrics, statistics, figure data and drawing, the report.

Imports only the bottom floor (``geotune.*`` modules outside the subpackages).
"""
