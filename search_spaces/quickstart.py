"""quickstart: what does each regularizer do to accuracy and to the latent geometry of a small CNN?

digits, simple_cnn; regularizer none / geodesic / geometry / combined, 2 seeds each
(8 trials of 8 epochs). Every trial trains to the end so that each regularized
trial can be paired with its seed's baseline. About two minutes on a 2-core CPU.
"""
from search_spaces.spec import DIGITS_CNN, StudySpec
from study.config import merge

SPACE = StudySpec(
    name="quickstart",
    question="What does each latent-geometry regularizer do to accuracy and to latent geometry?",
    base=merge(DIGITS_CNN, {"train": {"epochs": 8}}),
    grid=[{"regularizer.name": ["none", "geodesic", "geometry", "combined"]}],
    seeds=[0, 1],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
