"""geodesic_grid: how do the strength and the neighbourhood size of the geodesic penalty trade accuracy for flatness?

lambda_reg x n_neighbors of the geodesic regularizer, 3 seeds each, plus the
unregularized baseline with the same seeds. ASHA stops the clearly worse
variants early (grace 3 epochs, halving).
"""

from geotune.search_spaces.space import DIGITS_CNN, Asha, SearchSpace

SPACE = SearchSpace(
    name="geodesic_grid",
    question="How do lambda and k of the geodesic penalty trade accuracy against latent flatness?",
    base=DIGITS_CNN,
    grid=[
        {"regularizer.name": ["none"]},
        {
            "regularizer.name": ["geodesic"],
            "regularizer.geodesic.lambda_reg": [0.05, 0.2, 1.0],
            "regularizer.geodesic.n_neighbors": [3, 5, 8],
        },
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    asha=Asha(grace_period=3, reduction_factor=2),
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
