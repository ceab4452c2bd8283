"""The registry of metric names: one entry per metric a trial reports, and the lists each view shows.

A name is the same everywhere (history, Ray results, metrics.json, DataFrame
columns, tables, figures, the report). Each entry says how to read it: a short
label, which direction is better (None where neither is: geometry describes, it
does not score), and how the report's findings print a difference of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    label: str  # a few words for table headers and figure axes
    better: str | None = None  # "higher", "lower", or None where neither is better
    scale: float = 1.0  # differences in the findings are shown times this (accuracies in points)
    unit: str = ""  # ... with this unit
    digits: int = 3  # ... and this many decimals


_ALL = [
    Metric("test_accuracy", "test accuracy", "higher", 100.0, " points", 2),
    Metric("val_accuracy", "validation accuracy", "higher", 100.0, " points", 2),
    Metric("train_accuracy", "train accuracy", "higher", 100.0, " points", 2),
    Metric("best_val_accuracy", "best validation accuracy", "higher", 100.0, " points", 2),
    Metric("val_loss", "validation loss", "lower"),
    Metric("test_loss", "test loss", "lower"),
    Metric("val_macro_f1", "validation macro-F1", "higher"),
    Metric("test_macro_f1", "test macro-F1", "higher"),
    Metric("overfit_gap", "train minus val accuracy", "lower"),
    Metric("train_test_gap", "train minus test accuracy (kept model, eval mode)", "lower", 100.0, " points", 2),
    Metric("reg_loss", "regularizer loss"),
    Metric("reg_loss_max", "largest epoch mean of the regularizer loss (0: it never acted)"),
    Metric("epochs_run", "epochs run", digits=0),
    Metric("wall_time_s", "wall time (s)", "lower", digits=1),
    Metric("train_time_s", "training time (s): the epochs' sum", "lower", digits=1),
    Metric("num_parameters", "parameters", digits=0),
    Metric("kept_epoch", "kept epoch", digits=0),
    Metric("train_eval_accuracy", "train accuracy (eval mode, kept model)", "higher", 100.0, " points", 2),
    Metric("test_miou", "test mIoU", "higher", 100.0, " points", 2),
    Metric("val_miou", "validation mIoU", "higher", 100.0, " points", 2),
    Metric("best_val_miou", "best validation mIoU", "higher", 100.0, " points", 2),
    Metric("test_dice", "test Dice (mean over classes)", "higher", 100.0, " points", 2),
    Metric("val_dice", "validation Dice (mean over classes)", "higher", 100.0, " points", 2),
    Metric("flatness_calibrated_per_class", "flatness within classes", digits=3),
    Metric("flatness_resolved_per_class", "share of classes whose flatness can see a bend", digits=2),
    Metric("participation_ratio_per_class", "participation ratio within classes", digits=2),
    Metric("top_pc_share_per_class", "share of variance on the first axis within classes"),
    Metric("intrinsic_dim_twonn_per_class", "intrinsic dimension within classes (TwoNN)", digits=2),
    Metric("flatness_calibrated", "flatness of the whole set"),
    Metric("flatness_reference", "flat reference of the whole set"),
    Metric("geodesic_ratio_mean", "raw geodesic ratio"),
    Metric("geodesic_ratio_mean_indirect", "raw geodesic ratio without direct pairs"),
    Metric("participation_ratio", "participation ratio of the whole set", digits=2),
    Metric("top_pc_share", "share of variance on the first axis"),
    Metric("intrinsic_dim_twonn", "intrinsic dimension (TwoNN)", digits=2),
    Metric("intrinsic_dim_mle", "intrinsic dimension (MLE)", digits=2),
    Metric("silhouette", "silhouette", "higher"),
    Metric("linear_separability", "linear separability", "higher"),
    Metric("knn_accuracy", "kNN accuracy", "higher", 100.0, " points", 2),
    Metric("pca_dims_90", "principal components for 90% of the variance", digits=0),
    Metric("trustworthiness", "trustworthiness of the 2-D projection", "higher"),
    # neural collapse (analysis.collapse): on the measured points; val_* every epoch in the history
    Metric("nc1", "NC1: within-class over between-class spread", digits=3),
    Metric("nc2_equinorm", "NC2: spread of the class means' norms (CV)", digits=3),
    Metric("nc2_equiangular", "NC2: class means' distance from simplex angles", digits=3),
    Metric("nc3_self_duality", "NC3: linear head against class means", digits=3),
    Metric("nc4_ncc_mismatch", "NC4: share unlike the nearest class mean", digits=3),
    Metric("val_nc1", "NC1 of the validation features", digits=3),
    Metric("val_nc2_equiangular", "NC2 (angles) of the validation features", digits=3),
    Metric("val_nc4_ncc_mismatch", "NC4 of the validation features", digits=3),
]
METRICS: dict[str, Metric] = {m.name: m for m in _ALL}


def metric_label(name: str) -> str:
    """The metric's label, or its name where it is not registered."""
    return METRICS[name].label if name in METRICS else name


# What the group and paired tables report; the headline first.
SUMMARY = (
    "test_accuracy",
    "flatness_calibrated_per_class",
    "participation_ratio_per_class",
    "top_pc_share_per_class",
    "intrinsic_dim_twonn_per_class",
    "intrinsic_dim_twonn",
    "silhouette",
    "knn_accuracy",
    "linear_separability",
    "nc1",
    "val_loss",
    "overfit_gap",
    "flatness_calibrated",
    "geodesic_ratio_mean",
)
# The answer at a glance (forest plot, findings): what a regularizer did to accuracy and to each class's geometry.
HEADLINE = (
    "test_accuracy",
    "flatness_calibrated_per_class",
    "participation_ratio_per_class",
    "intrinsic_dim_twonn_per_class",
    "silhouette",
    "knn_accuracy",
    "nc1",  # neural collapse, beside the participation ratio's dimensional collapse within classes
)
# The report's group tables, by theme.
PERFORMANCE = ("test_accuracy", "val_loss", "overfit_gap", "train_test_gap")
GEOMETRY = (
    "flatness_calibrated_per_class",
    "flatness_resolved_per_class",
    "participation_ratio_per_class",
    "top_pc_share_per_class",
    "intrinsic_dim_twonn_per_class",
)
STRUCTURE = ("silhouette", "knn_accuracy", "linear_separability", "flatness_calibrated", "geodesic_ratio_mean")
NEURAL_COLLAPSE = ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3_self_duality", "nc4_ncc_mismatch")
# Neural collapse per epoch (the history's validation features): NC1 falls through training (Papyan et al.)
NEURAL_COLLAPSE_EPOCH = ("val_nc1", "val_nc2_equiangular", "val_nc4_ncc_mismatch")
# Per factor of a multi-factor study.
BY_FACTOR = (
    "test_accuracy",
    "overfit_gap",
    "flatness_calibrated_per_class",
    "participation_ratio_per_class",
    "intrinsic_dim_twonn_per_class",
)
# Against depth (logging.geometry_layers): per trial and per group in the report.
LAYER_CURVES = (
    "intrinsic_dim_twonn",
    "flatness_calibrated_per_class",
    "flatness_resolved_per_class",
    "linear_separability",
)
# What a group costs: its model's size and its time.
COST = ("num_parameters", "train_time_s", "wall_time_s")
# Against lambda, and in a pooling x BatchNorm grid.
AGAINST_LAMBDA = ("test_accuracy", "flatness_calibrated_per_class", "participation_ratio_per_class")
HEATMAPS = ("test_accuracy", "flatness_calibrated_per_class")
# A regularized run against its unregularized twin (comparison_report.json's differences).
COMPARED = (
    "val_accuracy",
    "test_accuracy",
    "val_loss",
    "test_loss",
    "val_macro_f1",
    "test_macro_f1",
    "train_accuracy",
    "overfit_gap",
    "best_val_accuracy",
    "epochs_run",
    "wall_time_s",
    "flatness_calibrated_per_class",
    "flatness_resolved_per_class",
    "participation_ratio_per_class",
    "top_pc_share_per_class",
    "intrinsic_dim_twonn_per_class",
    "flatness_calibrated",
    "flatness_reference",
    "geodesic_ratio_mean",
    "geodesic_ratio_mean_indirect",
    "participation_ratio",
    "top_pc_share",
    "intrinsic_dim_twonn",
    "intrinsic_dim_mle",
    "silhouette",
    "linear_separability",
    "knn_accuracy",
    "pca_dims_90",
    "trustworthiness",
)
# What `geotune train` prints at its end.
TRAIN_PRINTED = (
    "val_accuracy",
    "test_accuracy",
    "val_miou",
    "test_miou",
    "test_dice",
    "val_loss",
    "test_loss",
    "test_macro_f1",
    "overfit_gap",
    "best_val_accuracy",
    "flatness_calibrated_per_class",
    "flatness_resolved_per_class",
    "participation_ratio_per_class",
    "top_pc_share_per_class",
    "intrinsic_dim_twonn_per_class",
    "silhouette",
    "knn_accuracy",
    "flatness_calibrated",
    "geodesic_ratio_mean",
)
# Measured on the validation set every logging.embedding_metrics_every epochs: within-class flatness and spread first.
EPOCH = (
    "flatness_calibrated_per_class",
    "participation_ratio_per_class",
    "flatness_calibrated",
    "geodesic_ratio_mean",
    "intrinsic_dim_twonn",
    "silhouette",
)
# Ray's trial table, beside the epoch and the ranking metric.
PROGRESS = ("val_loss", "reg_loss", "test_accuracy")

# Segmentation scores where classification's lists name accuracy: a segmentation study's tables and figures show
# mIoU and Dice instead (accuracy, of pixels, is dominated by the background and stays in metrics.json).
SEGMENTATION_SCORES = {
    "test_accuracy": ("test_miou", "test_dice"),
    "val_accuracy": ("val_miou",),
    "best_val_accuracy": ("best_val_miou",),
    "train_test_gap": (),  # of pixel accuracy: no segmentation view shows it (metrics.json keeps it)
    # neural collapse is a classifier's: a segmentation trial measures none
    **{name: () for name in NEURAL_COLLAPSE + NEURAL_COLLAPSE_EPOCH},
}


def for_task(names: tuple[str, ...] | list[str], task: str) -> tuple[str, ...]:
    """A view's metric list for a study of ``task`` (classification or segmentation)."""
    if task != "segmentation":
        return tuple(names)
    return tuple(m for name in names for m in SEGMENTATION_SCORES.get(name, (name,)))


def score_of(name: str, task: str) -> str:
    """The one metric shown in place of ``name`` for ``task`` (test_accuracy -> test_miou for segmentation)."""
    return for_task((name,), task)[0]
