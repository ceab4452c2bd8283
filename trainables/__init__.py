"""geotune.trainables (floor 3): one trial, Ray-free at its core (data, models, heads, regularizers,
loop, artifacts), and the thin Ray Tune adapter (``trainable``). Imports analysis and the bottom floor.
"""
