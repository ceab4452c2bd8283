"""Drawing: plain data objects in, matplotlib figures out.

Nothing here computes a statistic; functions that build the data objects live
beside their users (``analysis.latent``, ``analysis.stats``) so they can be tested
without drawing. Figures are created with ``matplotlib.figure.Figure`` directly
(no pyplot state), which is safe in Ray workers and threads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

CLASS_COLOURS = "tab10"


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------
# per-trial figures


def draw_training_curves(history: Sequence[dict], keys: Sequence[str], ylabel: str, title: str) -> Figure:
    """One line per history key (e.g. train_loss and val_loss) against the epoch."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    for key in keys:
        ax.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", ms=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def draw_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Row-normalised confusion matrix; counts written in the cells when there are few classes."""
    n = len(class_names)
    size = min(14, max(4.5, 0.45 * n + 2))
    fig = Figure(figsize=(size, size * 0.9))
    ax = fig.add_subplot()
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if share[i, j] > 0.5 else "black")
        labels = [name[:14] for name in class_names]
        ax.set_xticks(range(n), labels, rotation=45 if max(map(len, labels)) > 3 else 0, ha="right")
        ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return fig


@dataclass
class GradNormTable:
    """Mean per-layer gradient L2 norm: ``values[layer, epoch]``."""
    layers: list[str]
    epochs: list[int]
    values: np.ndarray


def grad_norm_table(history: Sequence[dict]) -> GradNormTable:
    layers: list[str] = []
    for row in history:
        for name in row.get("grad_norms", {}):
            if name not in layers:
                layers.append(name)
    values = np.full((len(layers), len(history)), np.nan)
    for j, row in enumerate(history):
        for i, name in enumerate(layers):
            values[i, j] = row.get("grad_norms", {}).get(name, np.nan)
    return GradNormTable(layers, [row["epoch"] for row in history], values)


def draw_grad_norms(table: GradNormTable, title: str = "gradient L2 norm per layer (log10)") -> Figure:
    """Heatmap layers x epochs on a log10 scale (norms span orders of magnitude across layers)."""
    fig = Figure(figsize=(max(5, 0.35 * len(table.epochs) + 3), max(3, 0.28 * len(table.layers) + 1.5)))
    ax = fig.add_subplot()
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = np.log10(table.values)
    logged[~np.isfinite(logged)] = np.nan
    image = ax.imshow(logged, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="log10 ||grad||")
    ax.set_yticks(range(len(table.layers)), table.layers, fontsize=7)
    step = max(1, len(table.epochs) // 15)
    ax.set_xticks(range(0, len(table.epochs), step), table.epochs[::step])
    ax.set_xlabel("epoch")
    ax.set_title(title)
    return fig
