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


# ---------------------------------------------------------------------------
# latent space


def draw_embedding_scatter(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """2-D projection of embeddings, one colour per class."""
    from matplotlib import colormaps

    fig = Figure(figsize=(6.2, 5.4))
    ax = fig.add_subplot()
    n = len(class_names)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    for c in range(n):
        mask = labels == c
        if mask.any():
            colour = cmap(c if n <= 20 else c / max(1, n - 1))
            ax.scatter(points[mask, 0], points[mask, 1], s=9, alpha=0.8, color=colour,
                       label=class_names[c][:16] if n <= 20 else None)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if n <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best", frameon=True)
    return fig


def scatter_html(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> str:
    """A self-contained interactive SVG scatter: hover shows index and class, clicking a legend entry hides it."""
    import html

    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    n = len(class_names)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    colours = [to_hex(cmap(c if n <= 20 else c / max(1, n - 1))) for c in range(n)]
    lo, hi = points.min(0), points.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = 20 + (points - lo) / span * 560
    circles = "\n".join(
        f'<circle class="c{lab}" cx="{x:.1f}" cy="{600 - y:.1f}" r="3.5" fill="{colours[lab]}">'
        f"<title>#{i}: {html.escape(class_names[lab])}</title></circle>"
        for i, ((x, y), lab) in enumerate(zip(xy, labels.astype(int))))
    legend = "\n".join(
        f'<li data-c="{c}"><span style="background:{colours[c]}"></span>{html.escape(name)}</li>'
        for c, name in enumerate(class_names))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;display:flex;gap:1em}} circle{{opacity:.8}} circle:hover{{r:6;opacity:1}}
ul{{list-style:none;padding:0}} li{{cursor:pointer;margin:.2em 0}} li.off{{opacity:.3}}
li span{{display:inline-block;width:.9em;height:.9em;margin-right:.4em;border-radius:50%}}</style></head>
<body><div><h3>{html.escape(title)}</h3><svg width="600" height="620" viewBox="0 0 600 620">{circles}</svg></div>
<div><h4>classes (click to hide)</h4><ul>{legend}</ul></div>
<script>document.querySelectorAll('li').forEach(li => li.onclick = () => {{
  li.classList.toggle('off');
  document.querySelectorAll('circle.c' + li.dataset.c).forEach(
    c => c.style.display = li.classList.contains('off') ? 'none' : '');
}});</script></body></html>
"""


def draw_curves_comparison(runs: Sequence[tuple[str, Sequence[dict]]], title: str) -> Figure:
    """Loss, accuracy and regularizer loss per epoch for several runs (train dashed, validation solid)."""
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    panels = [("loss", ("train_loss", "val_loss")), ("accuracy", ("train_accuracy", "val_accuracy")),
              ("regularizer loss", ("reg_loss",))]
    for i, (ylabel, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for j, (label, history) in enumerate(runs):
            epochs = [row["epoch"] for row in history]
            for key in keys:
                style = "--" if key.startswith("train") else "-"
                ax.plot(epochs, [row.get(key, math.nan) for row in history], style, color=f"C{j}",
                        label=f"{label} {key.split('_')[0] if len(keys) > 1 else ''}".strip())
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig
