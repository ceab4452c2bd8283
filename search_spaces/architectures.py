"""architectures: does the geodesic penalty act the same on an MLP, a plain CNN and residual networks, with and
without dropout?

The original architecture experiment's arms, each with its own widths (a grid per arm, not one cartesian product):
fc with hidden widths 256, 128; simple_cnn with 32, 64 channels; resnet_basic and resnet_bottleneck with 32, 64
channels per stage (one block each). Each arm without and with dropout (0.5 before the embedding) and without and
with the geodesic regularizer, 3 seeds. Kernel size has its own space (``kernels``). The report contrasts the arms
with fc (their widths move with them), dropout with none, and the regularizer with none within each arm.
"""

from geotune.config_loading import merge
from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

ARMS = {  # each architecture's own widths: hidden layers (fc) or channels per block / stage
    "fc": [256, 128],
    "simple_cnn": [32, 64],
    "resnet_basic": [32, 64],
    "resnet_bottleneck": [32, 64],
}

SPACE = SearchSpace(
    name="architectures",
    question="Does the geodesic penalty change latent geometry the same way across architectures, with and without "
    "dropout?",
    base=merge(DIGITS_CNN, {"model": {"blocks_per_stage": 1}}),
    grid=[
        {
            "model.type": [arm],
            "model.channels": [widths],
            "model.dropout": [0.0, 0.5],
            "regularizer.name": ["none", "geodesic"],
        }
        for arm, widths in ARMS.items()
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
    reference={"model.type": "fc", "model.dropout": 0.0},  # what each change is measured from
)
