"""custom_layers: do the layers of a network (activation, attention, gated convolution, L2 pooling,
residual blocks) change its latent geometry, at the same number of parameters?

A simple_cnn with ReLU is the reference; each arm changes one thing: Swish instead of ReLU, channel
attention after each block, gated convolutions, L2 pooling, or a basic or bottleneck residual network.
Every network is scaled to 80,000 parameters (model.param_budget), so that a gated convolution's doubled
weights do not decide the comparison. 3 seeds.
"""

from geotune.config_loading import merge
from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="custom_layers",
    question="Do activation, attention, gated convolution, L2 pooling or residual blocks change latent geometry "
    "at a matched parameter count?",
    base=merge(DIGITS_CNN, {"model": {"param_budget": 80_000}}),
    grid=[
        {"model.activation": ["relu", "swish"]},
        {"model.attention": ["channel"]},
        {"model.conv": ["gated"]},
        {"model.pooling": ["l2"]},
        {"model.type": ["resnet_basic", "resnet_bottleneck"]},
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
