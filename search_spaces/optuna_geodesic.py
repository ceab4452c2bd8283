"""optuna_geodesic: which geodesic-penalty settings keep accuracy while flattening the latent space most?

Optuna TPE over lambda_reg (log scale), n_neighbors, the target mode (flat, or
fixed with a sampled target_ratio), start_epoch and the learning rate; ASHA stops
unpromising trials. With --pareto it asks the trade-off as two objectives (validation
accuracy up, per-class calibrated flatness down) and the report draws the Pareto
front. The Optuna study lives in
STUDY_DIR/optuna.db, so Optuna's dashboard and plots read it directly.
"""

from geotune.config_loading import merge
from geotune.search_spaces.space import DIGITS_CNN, Asha, SearchSpace


def sample(trial) -> None:
    trial.suggest_float("regularizer.geodesic.lambda_reg", 1e-3, 3.0, log=True)
    trial.suggest_int("regularizer.geodesic.n_neighbors", 3, 10)
    if trial.suggest_categorical("regularizer.geodesic.target", ["flat", "fixed"]) == "fixed":
        trial.suggest_float("regularizer.geodesic.target_ratio", 1.0, 1.5)  # the fixed mode's own knob
    trial.suggest_int("regularizer.geodesic.start_epoch", 1, 5)
    trial.suggest_float("train.lr", 3e-4, 1e-2, log=True)


SPACE = SearchSpace(
    name="optuna_geodesic",
    question="Which geodesic-penalty settings keep accuracy while flattening the latent space most?",
    base=merge(DIGITS_CNN, {"regularizer": {"name": "geodesic"}}),
    optuna=sample,
    num_samples=24,
    seeds=[0],
    metric="val_accuracy",
    mode="max",
    asha=Asha(grace_period=3, reduction_factor=2),
    # --pareto: the trade-off itself, accuracy against per-class flatness (lower is flatter), without ASHA
    pareto=[("val_accuracy", "max"), ("flatness_calibrated_per_class", "min")],
    cpus_per_trial=1,
    gpus_per_trial=0.25,
)
