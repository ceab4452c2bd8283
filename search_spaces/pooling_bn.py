"""pooling_bn: do the downsampling operator and BatchNorm change latent geometry, and the regularizer's effect on it?

pooling stride / max / avg x BatchNorm on / off x regularizer none / geodesic,
2 seeds. Every trial trains to the end, so cells compare like with like.
"""

from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="pooling_bn",
    question="Do pooling and BatchNorm change latent geometry and how the geodesic penalty acts on it?",
    base=DIGITS_CNN,
    grid=[
        {
            "model.pooling": ["stride", "max", "avg"],
            "model.batch_norm": [True, False],
            "regularizer.name": ["none", "geodesic"],
        }
    ],
    seeds=[0, 1],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
    reference={"model.pooling": "max", "model.batch_norm": False},  # the original platform's CNN: max, no BN
)
