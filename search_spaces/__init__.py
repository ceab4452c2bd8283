"""geotune.search_spaces (floor 4): one module per named study; ``spec`` says what a study is."""
