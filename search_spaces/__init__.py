"""geotune: search_spaces."""
