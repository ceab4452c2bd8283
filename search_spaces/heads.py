"""heads: does a sparse output (sparsemax) shape the latent space differently from softmax?

output softmax / sparsemax x regularizer none / geodesic, 3 seeds.
"""

from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="heads",
    question="Does a sparsemax output shape the latent space differently from softmax, "
    "with and without the geodesic penalty?",
    base=DIGITS_CNN,
    grid=[{"model.output": ["softmax", "sparsemax"], "regularizer.name": ["none", "geodesic"]}],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
