"""architectures: does the geodesic penalty act the same on an MLP, a plain CNN and residual networks?

fc (no kernel) and simple_cnn / resnet_basic / resnet_bottleneck with kernel
3 / 5 / 7, each without and with the geodesic regularizer, 2 seeds.
"""

from geotune.config_loading import merge
from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="architectures",
    question="Does the geodesic penalty change latent geometry the same way across architectures and kernels?",
    base=merge(DIGITS_CNN, {"model": {"channels": [32, 64], "blocks_per_stage": 1}}),
    grid=[
        {"model.type": ["fc"], "model.channels": [[256, 128]], "regularizer.name": ["none", "geodesic"]},
        {
            "model.type": ["simple_cnn", "resnet_basic", "resnet_bottleneck"],
            "model.kernel_size": [3, 5, 7],
            "regularizer.name": ["none", "geodesic"],
        },
    ],
    seeds=[0, 1],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
