"""geotune: trainables."""
