"""kernels: does the kernel size change latent geometry once the networks have the same number of parameters?

simple_cnn with kernels 3 / 5 / 7 at a matched budget of 60,000 parameters (model.param_budget scales
every width by one factor per kernel), and, as a second arm, the same kernels at the base widths, whose
sizes differ (85k / 118k / 168k on 16 px digits): the difference between the arms is what the size alone
did. 3 seeds; the report's size-and-time table shows each group's parameter count.
"""

from geotune.search_spaces.space import DIGITS_CNN, SearchSpace

SPACE = SearchSpace(
    name="kernels",
    question="Does kernel size change latent geometry when the networks have the same number of parameters?",
    base=DIGITS_CNN,
    grid=[
        {"model.kernel_size": [3, 5, 7], "model.param_budget": [60_000]},
        {"model.kernel_size": [3, 5, 7]},
    ],
    seeds=[0, 1, 2],
    metric="val_accuracy",
    mode="max",
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
