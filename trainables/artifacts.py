"""Everything a finished trial leaves in its directory.

``config.yaml`` (resolved), ``metrics.json``, ``training_history.json``,
``classification_report.json`` (train, val, test), ``confusion_matrix.png``,
``train_val_loss.png``, ``train_val_accuracy.png``, ``grad_norms.png``,
``latents.npz`` (the measured embeddings, labels, logits), ``model.pt`` (state dict)
with ``preprocessing.json`` and, when asked, ``model.onnx`` checked against PyTorch.
Everything evaluated comes from the kept epoch (``train.keep``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geotune.analysis.collapse import neural_collapse
from geotune.analysis.latent import (
    geometry_summary,
    pca_projection,
    stratified_sample,
    trustworthiness,
    umap_projection,
)
from geotune.analysis.segmentation import segmentation_scores
from geotune.config import TrialConfig, task_of
from geotune.config_loading import save_config
from geotune.latents_file import write_latents
from geotune.layout import (
    CLASSIFICATION_FILE,
    CONFIG_FILE,
    GEODESIC_FILE,
    GEOMETRY_FILE,
    HISTORY_FILE,
    LATENTS_FILE,
    LAYER_GEOMETRY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_SUMMARY_FILE,
    ONNX_FILE,
    OUTPUT_SPARSITY_FILE,
    PREPROCESSING_FILE,
    SEGMENTATION_FILE,
    TEST_EXAMPLES_FILE,
    StopReason,
    recovery_of,
    write_json,
)
from geotune.metric_names import LAYER_CURVES
from geotune.preprocessing_file import CHANNEL_ORDERS, Preprocessing, write_preprocessing
from geotune.trainables.batches import Augmentation, augment_batch
from geotune.trainables.data import DataSplits
from geotune.trainables.export import export_onnx
from geotune.trainables.heads import OutputLayer
from geotune.trainables.internals import (
    INPUT_LAYER,
    activation_mosaic,
    first_conv,
    layer_outputs,
    layer_vectors,
    model_summary,
    output_sparsity,
    relative_depths,
    resolve_layers,
    summary_text,
)
from geotune.trainables.loop import EarlyStopping, Evaluation, KeptWeights, evaluate
from geotune.trainables.models import count_parameters, linear_head_weight
from geotune.trainables.parts import TrialParts
from geotune.trainables.synthetic_data import display_colours


def figures():
    """geotune.analysis.figures, imported where a trial draws: matplotlib is about 0.9 s of a Ray worker's start,
    which a sweep with ``logging.figures`` off would pay in every worker for nothing."""
    from geotune.analysis import figures as module  # deferred: see the docstring

    return module


def save_drawn(path: Path, draw: Callable) -> None:
    """``draw(geotune.analysis.figures)``'s figure as a PNG at ``path``."""
    drawing = figures()
    drawing.save_figure(draw(drawing), path)


def classification_summary(evaluation: Evaluation, class_names: list[str]) -> tuple[dict, np.ndarray]:
    """(per-class precision/recall/F1 report, confusion matrix) of one evaluated split."""
    # deferred: scikit-learn's first import costs 1.4 s; only the final evaluation needs it
    from sklearn.metrics import classification_report, confusion_matrix

    labels = list(range(len(class_names)))
    y_true, y_pred = evaluation.labels.numpy(), evaluation.predictions.numpy()
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    return report, confusion_matrix(y_true, y_pred, labels=labels)


def preprocessing_of(cfg: TrialConfig, data: DataSplits) -> Preprocessing:
    """How an image becomes this trial's model input: the data set's shape and the training split's statistics."""
    channels = data.input_shape[0]
    return Preprocessing(
        input_shape=list(data.input_shape),
        channel_order=CHANNEL_ORDERS[channels],
        mean=data.mean.flatten().tolist(),
        std=data.std.flatten().tolist(),
        class_names=list(data.class_names),
        output=cfg.model.output,
        dataset=cfg.dataset.name,
        task=task_of(cfg.dataset.name),
    )


def confusion_of(evaluation: Evaluation) -> np.ndarray:
    assert evaluation.confusion is not None
    return evaluation.confusion.numpy()


# How figures name a trial's latent points.
LATENT_POINTS_NAME = {
    "classification": "{split} embeddings",
    "segmentation": "validation bottleneck locations (balanced sample; label: majority class of the cell)",
}
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}
PROJECTION_POINTS = 3000  # umap.png, the scatter and trustworthiness use a seeded sample of at most this many


def geometry_sample(
    evaluations: dict[str, Evaluation], split: str, per_class: int, seed: int
) -> tuple[str, np.ndarray]:
    """(split, indices into it) of the points the final geometry summary measures: ``logging.geometry_split``
    and ``logging.geometry_points_per_class``.

    auto takes the split whose smallest class is largest (val on a tie, then train: held-out points
    first, the test split last), since within-class flatness needs enough points per class to
    see a bend. Each class keeps at most ``per_class`` points, a seeded sample in the split's order.
    """

    def smallest_class(name: str) -> int:
        counts = np.bincount(evaluations[name].labels.numpy())
        return int(min(counts[counts > 0].min(), per_class)) if counts.size and counts.any() else 0

    order = ("val", "train", "test")
    if split == "auto":
        split = max(order, key=lambda name: (smallest_class(name), -order.index(name)))
    labels = evaluations[split].labels.numpy()
    rng = np.random.default_rng(seed)
    classes = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    chosen = [m if len(m) <= per_class else rng.choice(m, per_class, replace=False) for m in classes]
    return split, np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


MASK_EXAMPLES = 4  # validation images in masks.png


def write_mask_examples(artifact_dir: Path, model, data: DataSplits, dataset_name: str) -> None:
    """masks.png: the first validation images with their true and predicted masks (kept model, eval mode)."""
    images = data.val.images[:MASK_EXAMPLES]
    model.eval()
    with torch.no_grad():
        predicted = model(data.normalize(images)).argmax(1)
    save_drawn(
        artifact_dir / "masks.png",
        lambda f: f.draw_mask_examples(
            images.cpu().numpy(),
            data.val.labels[:MASK_EXAMPLES].long().cpu().numpy(),
            predicted.cpu().numpy(),
            data.class_names,
            "validation images, true and predicted masks (kept model)",
            display_colours(dataset_name),
        ),
    )


def collapse_of(evaluation: Evaluation, model, chosen: np.ndarray | None = None, prefix: str = "") -> dict:
    """Neural collapse (``analysis.collapse``) of an evaluation's features, with the network's predictions and, for
    a linear head, its weights; ``chosen`` a subset of its points; keys with ``prefix`` (val_ in the history)."""
    assert evaluation.logits is not None, "classification only"
    chosen = np.arange(len(evaluation.labels)) if chosen is None else chosen
    weight = linear_head_weight(model)
    nc = neural_collapse(
        evaluation.embeddings.numpy()[chosen],
        evaluation.labels.numpy()[chosen],
        None if weight is None else weight.float().cpu().numpy(),
        evaluation.logits.numpy()[chosen].argmax(1),
    )
    return {prefix + name: value for name, value in nc.flat_metrics().items()}


CKA_IMAGES = 1000  # latents.npz's test_embeddings: the first test images, the same in every trial of a study

PREDICTION_IMAGES = 16  # test_predictions.png: the first test image of each class, then the most confident errors
EXAMPLE_CLASSES = 8  # test_examples.json: the first test image of each of the first 8 classes (the report compares)
THUMBNAIL_SIDE = 28  # test_examples.json keeps each image at most this many pixels on a side


def first_of_each_class(labels: np.ndarray, n: int) -> list[int]:
    """The index of the first image of each class present, in class order, at most ``n`` of them."""
    return [int(i) for i in np.unique(labels, return_index=True)[1]][:n]  # np.unique sorts the classes


def prediction_picks(labels: np.ndarray, probabilities: np.ndarray, n: int = PREDICTION_IMAGES) -> np.ndarray:
    """Indices of the test images to show: the first of each class (in class order), then the errors the model was
    surest of (what it takes for what), up to ``n``."""
    firsts = first_of_each_class(labels, n)
    wrong = np.flatnonzero(probabilities.argmax(1) != labels)
    wrong = wrong[np.argsort(-probabilities[wrong].max(1), kind="stable")]
    extra = [int(i) for i in wrong if int(i) not in firsts][: n - len(firsts)]
    return np.asarray(firsts + extra, dtype=np.int64)


def thumbnails(images: torch.Tensor, side: int = THUMBNAIL_SIDE) -> np.ndarray:
    """(N, h, w, C) uint8 copies of (N, C, H, W) uint8 images with their longer side at most ``side`` (area average)."""
    h, w = images.shape[2:]
    scale = min(1.0, side / max(h, w))
    small = images.float()
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        small = torch.nn.functional.interpolate(small, size=size, mode="area")
    return small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def write_test_predictions(artifact_dir: Path, cfg: TrialConfig, data: DataSplits, test: Evaluation) -> None:
    """test_predictions.png (test images with their true class and the model's three most probable ones) and
    test_examples.json (the first test image of each class with its raw logits and probabilities: the report
    sets them side by side across the variants of a study, e.g. softmax against sparsemax)."""
    assert test.logits is not None, "classification only"
    labels = test.labels.numpy()
    if not np.array_equal(labels, data.test.labels.cpu().numpy()):
        raise ValueError("the test evaluation is not in the order of the test split")
    probabilities = OutputLayer(cfg.model.output).probabilities(test.logits).numpy()
    picks = prediction_picks(labels, probabilities)
    images = thumbnails(data.test.images[torch.as_tensor(picks, device=data.test.images.device)], side=64)
    top = np.argsort(-probabilities[picks], axis=1, kind="stable")[:, :3]
    title = (
        f"test images: true class, and the kept model's three most probable ({cfg.model.output} output); "
        "first the first image of each class, then the errors it was surest of"
    )
    save_drawn(
        artifact_dir / "test_predictions.png",
        lambda f: f.draw_test_predictions(
            images,
            labels[picks],
            top,
            probabilities[picks][np.arange(len(picks))[:, None], top],
            data.class_names,
            title,
        ),
    )
    fixed = picks[: min(EXAMPLE_CLASSES, len(np.unique(labels)))]
    small = thumbnails(data.test.images[torch.as_tensor(fixed, device=data.test.images.device)])
    write_json(
        artifact_dir / TEST_EXAMPLES_FILE,
        {
            "output": cfg.model.output,
            "class_names": list(data.class_names),
            "examples": [
                {
                    "index": int(i),
                    "label": int(labels[i]),
                    "logits": [float(v) for v in test.logits[i].tolist()],
                    "probabilities": [float(v) for v in probabilities[i]],
                    "thumbnail": thumb.tolist(),
                }
                for i, thumb in zip(fixed, small)
            ],
        },
    )


SAMPLE_IMAGES = 8  # data_samples.png: rows, the first training image of each class (as far as classes go)
AUGMENTED_COPIES = 4  # data_samples.png: augmented copies of each row's image, as the trial's batches make them


def write_data_samples(artifact_dir: Path, cfg: TrialConfig, data: DataSplits) -> None:
    """data_samples.png: training images as the model receives them (after dataset.image_size and the channel
    handling) and, with dataset.augment, copies through the trial's own augmentation."""
    labels = data.train.labels
    if data.task == "segmentation":
        picks = list(range(min(SAMPLE_IMAGES, len(data.train))))
        captions = [f"training image {i}" for i in picks]
    else:
        values = labels.cpu().numpy()
        picks = first_of_each_class(values, SAMPLE_IMAGES)
        captions = [data.class_names[int(values[i])][:14] for i in picks]
    images = data.train.images[torch.as_tensor(picks, device=data.train.images.device)]
    columns = [images]
    augmentation = Augmentation.from_config(cfg.dataset)
    if augmentation is not None:
        generator = torch.Generator(device=images.device).manual_seed(cfg.train.seed)
        for _ in range(AUGMENTED_COPIES):
            x = augment_batch(data.normalize(images), augmentation, generator)
            pixels = (x * data.std.to(x.device) + data.mean.to(x.device)) * 255.0
            columns.append(pixels.round().clamp(0, 255).to(torch.uint8))
    grid = np.stack([thumbnails(c, side=96) for c in columns], axis=1)  # (rows, columns, h, w, C)
    a = cfg.dataset
    what = (
        f"augmented: flip {a.augment_flip}, shift <= {a.augment_translate} px, rotation <= {a.augment_rotate} deg"
        if augmentation is not None
        else "no augmentation (dataset.augment off)"
    )
    titles = ["as trained"] + [f"augmented {i + 1}" for i in range(len(columns) - 1)]
    save_drawn(
        artifact_dir / "data_samples.png",
        lambda f: f.draw_data_samples(grid, captions, titles, f"{cfg.dataset.name}, {tuple(data.input_shape)}: {what}"),
    )


def mask_warnings(confusion: np.ndarray, class_names: list[str], lr: float) -> list[str]:
    """A segmentation network that predicts one class everywhere has learned nothing."""
    predicted = np.flatnonzero(confusion.sum(0))
    if len(predicted) <= 1:
        which = class_names[int(predicted[0])] if len(predicted) else "nothing"
        return [
            f"the network predicts {which} for every validation pixel: it did not learn; a diverging "
            f"train.lr ({lr:g}) or a loss that ignores small classes (try weighted_ce or dice) is the usual cause"
        ]
    return []


def kept_reason(keep: str, kept: KeptWeights, history: list[dict]) -> str:
    """metrics.json's ``kept_reason``: which epoch's weights were tested and saved, and why, with the epochs
    that tied the kept value (a tie goes to the lower val_loss, then to the earlier epoch)."""
    if not history:
        return "untrained"
    if keep == "last":
        return f"last epoch ({kept.epoch})"
    reason = f"best {kept.metric} on the validation split ({kept.value:.4g}, epoch {kept.epoch} of {len(history)})"
    tied = [
        int(row["epoch"]) for row in history if float(row[kept.metric]) == kept.value and row["epoch"] != kept.epoch
    ]
    if tied:
        epochs = f"epoch{'s' if len(tied) > 1 else ''} {', '.join(map(str, tied))}"
        reason += f"; tied by {epochs}, this one kept for the lowest val_loss (then the earliest)"
    return reason


def evaluate_kept(cfg: TrialConfig, parts: TrialParts, kept: KeptWeights) -> tuple[Any, dict[str, Evaluation]]:
    """The model the trial keeps (``train.keep``: last or best epoch) and its evaluation on train, val and
    test, in eval mode: what every final metric and artifact is computed from."""
    data, t = parts.data, cfg.train
    model = kept.kept_model(parts.model)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    evaluations = {
        name: evaluate(
            model,
            parts.criterion,
            data,
            split,
            precision=t.precision,
            channels_last=t.channels_last,
            task=parts.task,
            seed=t.seed,
        )
        for name, split in splits.items()
    }
    return model, evaluations


def write_trial_artifacts(
    artifact_dir: Path,
    cfg: TrialConfig,
    parts: TrialParts,
    history: list[dict],
    early: EarlyStopping,
    kept: KeptWeights,
    stop: StopReason,
    elapsed: float,
    model,
    evaluations: dict[str, Evaluation],
    recovery: dict | None = None,
) -> dict:
    """Write every artifact of a finished trial from its kept ``model`` and its ``evaluations``
    (``evaluate_kept``); return the final metrics. ``recovery``: the crashes Tune retried it after
    (``layout.recovery_of``; none by default)."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, artifact_dir / CONFIG_FILE)
    data, t = parts.data, cfg.train
    val, test = evaluations["val"], evaluations["test"]
    segmentation = parts.task.segmentation
    if segmentation:
        scores = {name: segmentation_scores(confusion_of(e), data.class_names) for name, e in evaluations.items()}
        test_matrix = confusion_of(test)
    else:
        reports = {name: classification_summary(e, data.class_names) for name, e in evaluations.items()}
        test_matrix = reports["test"][1]

    # The kept epoch's training-set numbers are the running means of its epoch (as the history records them,
    # with dropout and augmentation on), comparable with every other epoch's; train_eval_* is the kept model
    # on the training split in eval mode, comparable with val and test.
    row = history[kept.epoch - 1] if history and kept.epoch else (history[-1] if history else {})
    metrics: dict[str, Any] = {
        "task": parts.task.name,
        "val_loss": val.loss,
        "val_accuracy": val.accuracy,
        "test_loss": test.loss,
        "test_accuracy": test.accuracy,
    }
    if segmentation:  # accuracy above is pixel accuracy
        metrics.update(
            val_miou=scores["val"]["miou"],
            val_dice=scores["val"]["mean_dice"],
            test_miou=scores["test"]["miou"],
            test_dice=scores["test"]["mean_dice"],
            test_iou_per_class=scores["test"]["iou"],
            test_dice_per_class=scores["test"]["dice"],
        )
    else:
        metrics.update(
            val_macro_f1=reports["val"][0]["macro avg"]["f1-score"],
            test_macro_f1=reports["test"][0]["macro avg"]["f1-score"],
        )
    if parts.criterion.class_weights is not None:  # weighted_ce's weights, from the training labels
        metrics["loss_class_weights"] = dict(zip(data.class_names, parts.criterion.class_weights.tolist()))
    metrics |= {
        "train_loss": row.get("train_loss"),
        "train_accuracy": row.get("train_accuracy"),
        "train_eval_loss": evaluations["train"].loss,
        "train_eval_accuracy": evaluations["train"].accuracy,
        "overfit_gap": (row["train_accuracy"] - val.accuracy) if history else None,
        # the kept model on the training split and on the test split, both in eval mode: how much it memorised
        "train_test_gap": evaluations["train"].accuracy - test.accuracy,
        "reg_loss": row.get("reg_loss", 0.0),
        # the largest epoch mean of the penalty added: 0 means it was 0 on every step (a penalty is never negative)
        "reg_loss_max": max((h.get("reg_loss") or 0.0 for h in history), default=0.0),
        "keep": t.keep,
        "keep_by": t.keep_by,
        "kept_epoch": kept.epoch if history else 0,
        "kept_reason": kept_reason(t.keep, kept, history),
        "best_val_loss": early.best if history else None,
        "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None),
        "best_epoch": early.best_epoch,
        "epochs_run": len(history),
        # trained with a penalty (RegularizerConfig.active): the report pairs on this, never on the name alone
        "regularized": cfg.regularizer.active,
        "stop": stop.value,
        "stop_reason": stop.sentence(cfg.train.patience),
        "wall_time_s": elapsed,
        "train_time_s": sum(h.get("epoch_time", 0.0) for h in history),
        "num_parameters": count_parameters(parts.model),
        "num_trainable_parameters": sum(p.numel() for p in parts.model.parameters() if p.requires_grad),
        "channels_built": cfg.model.resolved_channels or list(cfg.model.channels),
        "device": str(parts.device),
        "train_size": len(data.train),
        "val_size": len(data.val),
        "test_size": len(data.test),
    }

    if segmentation:
        metrics["best_val_miou"] = max((h["val_miou"] or 0.0 for h in history), default=None)
        warnings = mask_warnings(confusion_of(val), data.class_names, cfg.train.lr)
    else:
        warnings = learning_warnings(val.accuracy, len(data.val), data.num_classes, cfg.train.lr)

    def optional(what: str, step) -> None:
        """A figure or a summary that fails is a warning: it must not cost the trial its results."""
        try:
            step()
        except Exception as exc:
            warnings.append(f"{what} could not be written ({type(exc).__name__}: {str(exc)[:160]})")

    write_json(artifact_dir / HISTORY_FILE, history)
    if segmentation:
        write_json(
            artifact_dir / SEGMENTATION_FILE,
            {name: {**scores[name], "confusion": confusion_of(e).tolist()} for name, e in evaluations.items()},
        )
    else:
        write_json(artifact_dir / CLASSIFICATION_FILE, {name: report for name, (report, _) in reports.items()})
    if segmentation:  # bottleneck locations: the task's balanced sample of the validation maps
        measured_split, chosen = "val", np.arange(len(val.labels))
    else:
        measured_split, chosen = geometry_sample(
            evaluations, cfg.logging.geometry_split, cfg.logging.geometry_points_per_class, t.seed
        )
    measured = evaluations[measured_split]
    points, point_labels = measured.embeddings.numpy()[chosen], measured.labels.numpy()[chosen]
    metrics["geometry_split"] = measured_split
    metrics["geometry_points"] = len(chosen)
    if cfg.logging.save_latents:  # the points the geometry summary measured, so that it can be recomputed
        write_latents(
            artifact_dir / LATENTS_FILE,
            points,
            point_labels,
            measured.logits.numpy()[chosen] if measured.logits is not None else None,
            data.class_names,
            measured_split,
            None if segmentation else test.embeddings.numpy()[:CKA_IMAGES],
        )
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, artifact_dir / MODEL_FILE)
    write_preprocessing(artifact_dir / PREPROCESSING_FILE, preprocessing_of(cfg, data))
    matrix_title = (
        f"test pixel confusion matrix (mIoU {metrics['test_miou']:.3f}, pixel accuracy {test.accuracy:.3f})"
        if segmentation
        else f"test confusion matrix (accuracy {test.accuracy:.3f})"
    )
    draw = cfg.logging.figures  # off: the numbers and files without a PNG (large sweeps; most tests)
    if draw:
        optional(
            "confusion_matrix.png",
            lambda: save_drawn(
                artifact_dir / "confusion_matrix.png",
                lambda f: f.draw_confusion_matrix(test_matrix, data.class_names, matrix_title),
            ),
        )
    if segmentation and draw:
        optional("masks.png", lambda: write_mask_examples(artifact_dir, model, data, cfg.dataset.name))
    if not segmentation and draw:
        optional("test_predictions.png", lambda: write_test_predictions(artifact_dir, cfg, data, test))
    if draw:
        optional("data_samples.png", lambda: write_data_samples(artifact_dir, cfg, data))
    if history and draw:
        optional("the training curves", lambda: write_curves(artifact_dir, history, kept.epoch))
    optional(
        "the geometry summary",
        lambda: metrics.update(
            write_geometry_artifacts(
                artifact_dir,
                cfg,
                points,
                point_labels,
                data.class_names,
                LATENT_POINTS_NAME[parts.task.name].format(split=SPLIT_NAMES[measured_split]),
            )
        ),
    )
    if not segmentation:  # on the measured points, in eval mode, as the geometry (Papyan et al. use the train split)
        metrics.update(collapse_of(measured, model, chosen))
    if internals_wanted(cfg, metrics["num_parameters"]):
        optional("the network internals", lambda: write_internals(artifact_dir, cfg, model, data, val))
    if cfg.logging.geometry_layers:
        optional(
            "the layer-by-layer geometry",
            lambda: write_layer_geometry(artifact_dir, cfg, model, data, measured_split, chosen),
        )
    if cfg.logging.export_onnx:
        exported = export_onnx(
            model, data.mean, data.std, data.test.images[:64], artifact_dir / ONNX_FILE, normalize=data.normalize
        )
        metrics.update(exported)
    metrics.update(recovery or recovery_of([]))
    metrics["warnings"] = warnings
    write_json(artifact_dir / METRICS_FILE, metrics)
    return metrics


INTERNALS_MAX_PARAMETERS = 5_000_000  # logging.internals: auto draws the internals of models up to this size
ACTIVATION_IMAGES = 4  # validation images in activations.png (one per class, as far as classes go)


def internals_wanted(cfg: TrialConfig, num_parameters: int) -> bool:
    if cfg.logging.internals == "auto":
        return num_parameters <= INTERNALS_MAX_PARAMETERS
    return cfg.logging.internals == "on"


def write_internals(artifact_dir: Path, cfg: TrialConfig, model, data: DataSplits, val: Evaluation) -> None:
    """model_summary.txt, logits.png, output_sparsity.json and (for a model with a convolution) activations.png."""
    example = data.normalize(data.val.images[:2])
    (artifact_dir / MODEL_SUMMARY_FILE).write_text(
        summary_text(model_summary(model, example), count_parameters(model), data.input_shape)
    )
    labels = val.labels.numpy()
    if val.logits is not None:  # classification: one logit vector per image
        write_json(artifact_dir / OUTPUT_SPARSITY_FILE, output_sparsity(val.logits))
        title = f"validation logits of the kept model ({cfg.model.output} output)"
        if cfg.logging.figures:
            logits = val.logits.numpy()
            save_drawn(artifact_dir / "logits.png", lambda f: f.draw_logits(logits, labels, data.class_names, title))

    layer = cfg.logging.activation_layer or first_conv(model)
    if layer is None or not cfg.logging.figures:
        return  # an fc network has no feature maps; model_summary.txt says so by its layers
    name, module = next(iter(resolve_layers(model, [layer], "logging.activation_layer").items()))
    if val.logits is not None:  # one image per class, as far as classes go
        picks = first_of_each_class(labels, ACTIVATION_IMAGES)
        captions = [f"class {data.class_names[int(labels[i])][:12]}" for i in picks]
    else:  # masks: every image holds several classes
        picks = list(range(min(ACTIVATION_IMAGES, len(data.val))))
        captions = [f"validation image {i}" for i in picks]
    images = data.val.images[picks]
    maps = layer_outputs(model, {name: module}, data.normalize(images))[name]
    if maps.dim() != 4:
        raise ValueError(f"layer {name} outputs shape {list(maps.shape[1:])}, not feature maps")
    mosaic, channels = activation_mosaic(images.cpu().numpy(), maps)
    save_drawn(
        artifact_dir / "activations.png", lambda f: f.draw_activations(mosaic, len(picks), channels, name, captions)
    )


def write_layer_geometry(
    artifact_dir: Path, cfg: TrialConfig, model, data: DataSplits, split: str, chosen: np.ndarray
) -> None:
    """layer_geometry.json and layer_geometry.png: the geometry summary of the input and each of
    logging.geometry_layers against relative depth, on (a sample of) the images the final summary measures
    (``split``, rows ``chosen``)."""
    log = cfg.logging
    layers = resolve_layers(
        model, [INPUT_LAYER, *[n for n in log.geometry_layers if n != INPUT_LAYER]], "logging.geometry_layers"
    )
    evaluated = getattr(data, split)
    labels = evaluated.labels.cpu().numpy()[chosen]
    rows_kept = chosen[stratified_sample(labels, log.layer_points, cfg.train.seed)]
    picked = torch.as_tensor(rows_kept, device=evaluated.images.device)
    images, labels = evaluated.images[picked], evaluated.labels[picked].cpu().numpy()  # stored (uint8) images
    depths = relative_depths(model, layers, data.normalize(images[:2]))
    k, rows = log.metrics_n_neighbors, []
    for name, module in layers.items():
        vectors = layer_vectors(
            model,
            name,
            module,
            images,
            log.layer_features,
            log.layer_projection_dim,
            seed=0,  # one projection for every trial: readings differ by the network, not by the projection
            normalize=data.normalize,
        )
        summary = geometry_summary(
            vectors.points, labels, n_neighbors=k, class_names=data.class_names, seed=cfg.train.seed
        )
        rows.append(
            {
                "layer": name,
                "relative_depth": depths[name],
                "output_shape": vectors.output_shape,
                "width": vectors.width,
                "dim": int(vectors.points.shape[1]),
                "projected": vectors.projected,
                **summary.flat_metrics(),
            }
        )
    rows.sort(key=lambda r: r["relative_depth"])  # stable: layers at one depth keep the order given
    features = (
        "flattened (channels x positions, as Ansuini et al. 2019)"
        if log.layer_features == "flattened"
        else "spatial outputs averaged over positions (one value per channel; the input's pixels flattened)"
    )
    write_json(
        artifact_dir / LAYER_GEOMETRY_FILE,
        {
            "definition": f"geometry summary of each layer's outputs on {len(labels)} of the "
            f"{SPLIT_NAMES[split]} images the final summary measures (kept model, eval mode); one vector per "
            f"image: {features}; outputs wider than {log.layer_projection_dim} dimensions are measured on a "
            "seeded sparse random projection to that many (projected: true; width is the dimension before); "
            "the input layer is the normalised pixels; relative_depth is the share of the network's weight "
            "layers (convolutions, linear maps) applied by that output, 0 at the input, 1 at the logits",
            "split": split,
            "n_points": len(labels),
            "n_neighbors": k,
            "layer_features": log.layer_features,
            "layer_projection_dim": log.layer_projection_dim,
            "layers": rows,
        },
    )
    if log.figures:  # the panels only where drawn: building them imports matplotlib
        drawing = figures()
        values = {m: [np.nan if r[m] is None else r[m] for r in rows] for m in LAYER_CURVES}
        panels = [(m, [drawing.LayerSeries("this trial", v, v, v)]) for m, v in values.items()]
        figure = drawing.draw_layer_curves(
            [r["layer"] for r in rows], panels, depths=[r["relative_depth"] for r in rows]
        )
        drawing.save_figure(figure, artifact_dir / "layer_geometry.png")


def write_curves(artifact_dir: Path, history: list[dict], kept_epoch: int = 0) -> None:
    drawing = figures()
    with_test = any("test_loss" in row for row in history)  # logging.test_every_epoch
    for quantity, file in (("loss", "train_val_loss.png"), ("accuracy", "train_val_accuracy.png")):
        keys = [f"train_{quantity}", f"val_{quantity}"] + ([f"test_{quantity}"] if with_test else [])
        title = f"training{', validation and test' if with_test else ' and validation'} {quantity}"
        drawing.save_figure(
            drawing.draw_training_curves(history, keys, quantity, title, kept_epoch), artifact_dir / file
        )
    drawing.save_figure(drawing.draw_grad_norms(drawing.grad_norm_table(history)), artifact_dir / "grad_norms.png")


def learning_warnings(val_accuracy: float, n_val: int, n_classes: int, lr: float) -> list[str]:
    """A run whose validation accuracy is within two standard errors of guessing (and less than halfway
    from guessing to perfect, so that a tiny split does not trigger it) has learned nothing."""
    chance = 1.0 / n_classes
    if (
        n_val
        and val_accuracy <= chance + 2.0 * math.sqrt(chance * (1 - chance) / n_val)
        and val_accuracy < (1.0 + chance) / 2
    ):
        return [
            f"val_accuracy {val_accuracy:.3f} is no better than chance ({chance:.3f} for {n_classes} classes, "
            f"{n_val} images): the network did not learn; a diverging train.lr ({lr:g}) is the usual cause"
        ]
    return []


def write_geometry_artifacts(
    artifact_dir: Path,
    cfg: TrialConfig,
    embeddings: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    what: str = LATENT_POINTS_NAME["classification"],
) -> dict:
    """geometry_summary.json, geodesic_summary.json, umap.png (UMAP and PCA side by side; PCA alone with
    logging.save_umap off) and the HTML scatter; returns headline metrics."""
    k = cfg.logging.metrics_n_neighbors
    summary = geometry_summary(embeddings, labels, n_neighbors=k, class_names=class_names, seed=cfg.train.seed)
    shown = np.arange(len(labels))
    if len(shown) > PROJECTION_POINTS:  # UMAP's cost grows with the points; a sample shows the same picture
        shown = np.sort(np.random.default_rng(cfg.train.seed).choice(len(shown), PROJECTION_POINTS, replace=False))
    embeddings, labels = embeddings[shown], labels[shown]
    pca = pca_projection(embeddings)
    if cfg.logging.save_umap:
        projection, name = umap_projection(embeddings, k, seed=cfg.train.seed), "umap"
    else:
        projection, name = pca, "pca"
    summary.trustworthiness = trustworthiness(embeddings, projection, k, seed=cfg.train.seed)
    summary.projection = name
    write_json(artifact_dir / GEOMETRY_FILE, summary.to_dict())
    write_json(
        artifact_dir / GEODESIC_FILE,
        {
            "definition": "graph geodesic / Euclidean distance over connected pairs of the symmetric kNN graph "
            "(Euclidean edge weights, as scikit-learn Isomap's dist_matrix_); flatness: the same ratio "
            "for chord geodesics (paths may take any straight segment that stays on the data): 1 = flat",
            "n_neighbors": k,
            "overall": {**summary.to_dict()["geodesic"], "flatness": summary.to_dict()["flatness"]},
            "per_class": {c: {**v["geodesic"], "flatness": v["flatness"]} for c, v in summary.per_class.items()},
        },
    )
    flat = summary.flat_metrics()
    trust = flat.get("trustworthiness")
    title = ("UMAP" if name == "umap" else "PCA (UMAP off: logging.save_umap = false)") + (
        f"; trustworthiness {trust:.3f}" if trust is not None else "; too few points for trustworthiness"
    )
    panels = [(projection, title)] + ([(pca, "PCA (first two components)")] if name == "umap" else [])
    if cfg.logging.figures:
        save_drawn(
            artifact_dir / "umap.png",
            lambda f: f.draw_embedding_panels(
                panels, labels, class_names, f"{len(labels)} {what}", display_colours(cfg.dataset.name)
            ),
        )
    if cfg.logging.interactive_scatter:
        (artifact_dir / "latent_scatter.html").write_text(
            figures().scatter_html(projection, labels, class_names, title)
        )
    return flat
