"""geotune: analysis."""
