"""quickstart: what does each regularizer do to accuracy and to the latent geometry of a small CNN?

digits, simple_cnn; no regularizer, the geodesic penalty with each target (flat:
pairs that must bend are pulled towards their chord, flat data is left alone;
fixed: every kNN-graph ratio is pulled to 1, the original platform's penalty,
which rewards collapse) and the geometry penalty, 3 seeds each (12 trials of 8
epochs). Every trial trains to the end so that each regularized trial can be
paired with its seed's baseline: 3 pairs per regularizer, the fewest that allow a
paired test.
"""

from geotune.config_loading import merge
from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="quickstart",
    question="What does each latent-geometry regularizer do to accuracy and to latent geometry?",
    base=merge(DIGITS_CNN, {"train": {"epochs": 8}}),
    grid=[
        {"regularizer.name": ["none", "geodesic", "geometry"]},
        {"regularizer.name": ["geodesic"], "regularizer.geodesic.target": ["fixed"]},
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
