"""Synthetic study directories, written the way a real study writes them, without training anything."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np

from geotune.layout import StopReason, StudyPlan
from geotune.variants import variant_labels


def tiny_png(path: Path, colour: float = 0.5) -> None:
    path.write_bytes(_png_bytes(colour))


@functools.cache
def _png_bytes(colour: float) -> bytes:
    """A small matplotlib PNG of one colour, drawn once per colour (500 trials drew it 500 times: 10 s)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot().imshow(np.full((4, 4), colour), vmin=0, vmax=1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def history(epochs: int, final_acc: float, layers=("body.block1.conv", "embedding.linear", "head")) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        acc = final_acc * e / epochs
        rows.append(
            {
                "epoch": e,
                "train_loss": 1.0 / e,
                "val_loss": 1.1 / e,
                "train_accuracy": acc + 0.01,
                "val_accuracy": acc,
                "reg_loss": 0.0,
                "lr": 0.001,
                "epoch_time": 0.1,
                "grad_norms": {name: 0.1 * (i + 1) / e for i, name in enumerate(layers)},
            }
        )
    return rows


def study_plan(root: Path, variants: list[dict], **fields) -> StudyPlan:
    """A plan as `geotune run` would save it for ``variants`` in ``root``; ``fields`` override any of it."""
    plan = dict(
        space="synthetic",
        module="tests",
        question="Does it work?",
        study_dir=str(root),
        base={"dataset": {"name": "digits"}, "train": {"epochs": 4}},
        variants=variants,
        optuna=False,
        num_samples=1,
        seeds=sorted({v.get("train.seed", 0) for v in variants}),
        metric="val_accuracy",
        mode="max",
        asha=None,
        cpus_per_trial=1,
        gpus_per_trial=0,
        max_concurrent=None,
        max_failures=2,
        created="2026-11-22 10:00:00",
    )
    plan.update(fields)
    return StudyPlan(**plan)


def make_study(
    root: Path,
    variants: list[dict],
    trials: list[dict],
    *,
    base: dict | None = None,
    space: str = "synthetic",
    optuna: bool = False,
) -> Path:
    """Write ``root`` as a study: study.json planning ``variants``; one folder per entry of ``trials``.

    Each trial dict: ``variant`` (index into variants), ``status`` (completed | asha | failed | interrupted),
    ``metrics`` (scalars merged into metrics.json), ``epochs``.
    """
    root.mkdir(parents=True)
    base = base or {"dataset": {"name": "digits"}, "train": {"epochs": 4}}
    labels = variant_labels(variants)
    study_plan(root, variants, base=base, space=space, optuna=optuna, command=["run", space]).save()
    for index, trial in enumerate(trials):
        label = labels[trial["variant"]]
        folder = root / f"{index:05d}_{label}"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"variant": label}))
        epochs = trial.get("epochs", 4)
        metrics = {
            "val_accuracy": 0.9,
            "test_accuracy": 0.9,
            "val_loss": 0.3,
            "overfit_gap": 0.01,
            "geodesic_ratio_mean": 1.5,
            "flatness_calibrated": 1.2,
            "flatness_calibrated_per_class": 1.1,
            "participation_ratio_per_class": 5.0,
            "top_pc_share_per_class": 0.3,
            "intrinsic_dim_twonn": 6.0,
            "silhouette": 0.3,
            "knn_accuracy": 0.95,
            "linear_separability": 0.95,
            "epochs_run": epochs,
            "stop": StopReason.COMPLETED.value,
            "stop_reason": StopReason.COMPLETED.sentence(),
            "wall_time_s": 10.0,
        }
        metrics.update(trial.get("metrics", {}))
        status = trial.get("status", "completed")
        lines = [{"epoch": e, "val_accuracy": metrics["val_accuracy"], "time_total_s": e} for e in range(1, epochs + 1)]
        if status in ("completed", "asha"):
            if status == "asha":
                metrics["stop"], metrics["stop_reason"] = StopReason.SCHEDULER.value, StopReason.SCHEDULER.sentence()
            (folder / "metrics.json").write_text(json.dumps(metrics))
            (folder / "training_history.json").write_text(json.dumps(history(epochs, metrics["val_accuracy"])))
            for png in ("umap.png", "confusion_matrix.png", "activations.png", "data_samples.png"):
                tiny_png(folder / png, colour=metrics["val_accuracy"])
            (folder / "model.pt").write_bytes(b"weights")
            (folder / f"checkpoint_{epochs - 1:06d}").mkdir()
        elif status == "failed":
            (folder / "error.txt").write_text(
                "Traceback (most recent call last):\n  ...\n"
                "geotune.trainables.loop.NonFiniteLossError: the task loss became nan in epoch 2\n"
            )
            lines = lines[:1]
        elif status == "interrupted":
            lines = lines[: max(1, epochs // 2)]
        (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root
