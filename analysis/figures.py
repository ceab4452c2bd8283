"""Drawing: plain data objects in, matplotlib figures out.

Nothing here computes a statistic; functions that build the data objects live
beside their users (``analysis.latent``, ``analysis.stats``) so they can be tested
without drawing. Figures are created with ``matplotlib.figure.Figure`` directly
(no pyplot state), which is safe in Ray workers and threads.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import imread
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

CLASS_COLOURS = "tab10"


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """PNG at ``dpi``. A figure with a layout engine (constrained layout) already fits its contents: cropping it
    as well ("tight") would draw it twice; the others are cropped to what they draw."""
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches=None if fig.get_layout_engine() is not None else "tight")
    return path


# ---------------------------------------------------------------------------
# per-trial figures


def draw_training_curves(
    history: Sequence[dict], keys: Sequence[str], ylabel: str, title: str, kept_epoch: int = 0
) -> Figure:
    """One line per history key (e.g. train_loss and val_loss) against the epoch; a key whose quartiles over
    batches are recorded (``train_loss_q25``/``_q75``) gets them as a band; the kept epoch as a dotted line."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    epochs = [row["epoch"] for row in history]
    for key in keys:
        (line,) = ax.plot(epochs, [row.get(key, math.nan) for row in history], marker="o", ms=3, label=key)
        if all(f"{key}_q25" in row for row in history):
            ax.fill_between(
                epochs,
                [row[f"{key}_q25"] for row in history],
                [row[f"{key}_q75"] for row in history],
                color=line.get_color(),
                alpha=0.2,
                linewidth=0,
                label=f"{key}: 25-75th percentile over batches",
            )
    if kept_epoch:
        ax.axvline(kept_epoch, color="0.3", linestyle=":", linewidth=1, label=f"kept model (epoch {kept_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
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
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
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
    ax.set_xticks(range(0, len(table.epochs), step), [str(e) for e in table.epochs[::step]])
    ax.set_xlabel("epoch")
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------------------
# latent space


def draw_embedding_panels(
    panels: Sequence[tuple[np.ndarray, str]],
    labels: np.ndarray,
    class_names: Sequence[str],
    title: str = "",
    colours: np.ndarray | None = None,
) -> Figure:
    """Several 2-D projections of the same points side by side (e.g. UMAP and PCA), one colour per class
    (``colours``: (classes, 3) RGB in [0, 1] where the data set has its own, else the class colour map)."""
    fig = Figure(figsize=(6.2 * len(panels), 5.4))
    for i, (points, panel_title) in enumerate(panels):
        _scatter_panel(fig.add_subplot(1, len(panels), i + 1), points, labels, class_names, panel_title, colours)
    if title:
        fig.suptitle(title)
    return fig


def _scatter_panel(
    ax, points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str, colours: np.ndarray | None
) -> None:
    n = len(class_names)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    for c in range(n):
        mask = labels == c
        if mask.any():
            colour = colours[c] if colours is not None else cmap(c if n <= 20 else c / max(1, n - 1))
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=9,
                alpha=0.8,
                color=colour,
                label=class_names[c][:16] if n <= 20 else None,
            )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if n <= 20:
        ax.legend(markerscale=2, fontsize=7, loc="best", frameon=True)


def mask_colours(num_classes: int) -> np.ndarray:
    """(classes, 3) RGB in [0, 1] for mask images: background (class 0) black, the others the class colours."""
    cmap = colormaps[CLASS_COLOURS]
    return np.array([(0.0, 0.0, 0.0)] + [cmap(c)[:3] for c in range(num_classes - 1)])


def draw_mask_examples(
    images: np.ndarray,
    true_masks: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    title: str,
    colours: np.ndarray | None = None,
) -> Figure:
    """One row per image: the image (uint8, C x H x W), its true mask and the predicted mask, each class in
    ``colours`` ((classes, 3) RGB in [0, 1]; default ``mask_colours``)."""
    n = len(images)
    colours = colours if colours is not None else mask_colours(len(class_names))
    fig = Figure(figsize=(7.5, 2.5 * n + 0.8))
    for row in range(n):
        image = images[row].transpose(1, 2, 0)
        panels = (
            (image if image.shape[2] == 3 else image[..., 0], "image"),
            (colours[true_masks[row]], "true mask"),
            (colours[predicted[row]], f"predicted (pixel accuracy {(predicted[row] == true_masks[row]).mean():.3f})"),
        )
        for col, (picture, caption) in enumerate(panels):
            ax = fig.add_subplot(n, 3, row * 3 + col + 1)
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
            ax.set_title(caption, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=colours[c], label=name[:20]) for c, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(class_names)), fontsize=8, frameon=False)
    fig.suptitle(title)
    fig.subplots_adjust(bottom=0.6 / (2.5 * n + 0.8))
    return fig


def scatter_html(points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> str:
    """A self-contained interactive SVG scatter: hover shows index and class, clicking a legend entry hides it."""
    n = len(class_names)
    cmap = colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    colours = [to_hex(cmap(c if n <= 20 else c / max(1, n - 1))) for c in range(n)]
    lo, hi = points.min(0), points.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = 20 + (points - lo) / span * 560
    circles = "\n".join(
        f'<circle class="c{lab}" cx="{x:.1f}" cy="{600 - y:.1f}" r="3.5" fill="{colours[lab]}">'
        f"<title>#{i}: {html.escape(class_names[lab])}</title></circle>"
        for i, ((x, y), lab) in enumerate(zip(xy, labels.astype(int)))
    )
    legend = "\n".join(
        f'<li data-c="{c}"><span style="background:{colours[c]}"></span>{html.escape(name)}</li>'
        for c, name in enumerate(class_names)
    )
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
    panels = [
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_accuracy", "val_accuracy")),
        ("regularizer loss", ("reg_loss",)),
    ]
    for i, (ylabel, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for j, (label, history) in enumerate(runs):
            epochs = [row["epoch"] for row in history]
            for key in keys:
                style = "--" if key.startswith("train") else "-"
                ax.plot(
                    epochs,
                    [row.get(key, math.nan) for row in history],
                    style,
                    color=f"C{j}",
                    label=f"{label} {key.split('_')[0] if len(keys) > 1 else ''}".strip(),
                )
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------
# study figures (data objects from analysis.figure_data)


def _pretty(name: str) -> str:
    return name.rsplit(".", 1)[-1].replace("_", " ")


def draw_curve_bands(curves, title: str = "") -> Figure:
    """Median per epoch with the interquartile range over each group's trials; one panel per history key."""
    columns = min(3, len(curves.keys))
    rows = math.ceil(len(curves.keys) / columns)
    fig = Figure(figsize=(6 * columns, 4.2 * rows), layout="constrained")
    for i, key in enumerate(curves.keys):
        ax = fig.add_subplot(rows, columns, i + 1)
        for j, band in enumerate(curves.groups[key]):
            colour = f"C{j % 10}"
            ax.plot(band.x, band.centre, color=colour, label=f"{band.label} (n={max(band.n) if band.n else 0})")
            ax.fill_between(band.x, band.low, band.high, color=colour, alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(_pretty(key))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"training curves by {curves.grouped_by}: median over trials, band = interquartile range")
    return fig


def draw_forest(data) -> Figure:
    """One panel per metric, one row per regularizer: 95% CI of the paired mean difference (bar), the mean
    (diamond), each pair's difference (dots), and the line of no effect. Dark where the CI excludes 0."""
    n_rows = len(data.regularizers)
    columns = min(3, len(data.metrics))
    grid_rows = math.ceil(len(data.metrics) / columns)
    fig = Figure(figsize=(4.2 * columns + 1.2, (0.45 * n_rows + 1.3) * grid_rows), layout="constrained")
    axes = fig.subplots(grid_rows, columns, sharey=True, squeeze=False).ravel()
    for ax in axes[len(data.metrics) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes, data.metrics):
        scale = data.scales[metric]
        for row, label in enumerate(data.regularizers):
            cell = data.cells.get((label, metric))
            if cell is None or cell.mean is None:
                continue
            y = n_rows - 1 - row
            excludes = cell.low is not None and (cell.low > 0 or cell.high < 0)
            colour = "#1f4e79" if excludes else "#8c8c8c"
            if cell.low is not None:
                ax.plot([cell.low * scale, cell.high * scale], [y, y], color=colour, lw=2.2, solid_capstyle="butt")
            jitter = np.linspace(-0.12, 0.12, len(cell.diffs)) if len(cell.diffs) > 1 else [0.0] * len(cell.diffs)
            ax.scatter(
                [d * scale for d in cell.diffs],
                [y + j for j in jitter],
                s=14,
                color=colour,
                alpha=0.55,
                zorder=3,
                linewidths=0,
            )
            ax.scatter([cell.mean * scale], [y], marker="D", s=38, color=colour, zorder=4)
        ax.axvline(0.0, color="black", lw=0.8, ls="--")
        ax.set_title(data.labels[metric], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="x", labelsize=8)
        # at most 5 ticks, and a power of ten beside the axis below 1e-3: a panel of tiny differences (a
        # flatness moved by 1e-4) otherwise prints labels like -0.000125 that run into each other
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
        ax.xaxis.get_offset_text().set_fontsize(8)
    axes[0].set_yticks(range(n_rows), [label[:40] for label in reversed(data.regularizers)], fontsize=8)
    axes[0].set_ylim(-0.6, n_rows - 0.4)
    for ax in axes[columns::columns]:  # sharey keeps the labels only on the first column: repeat them per row
        ax.tick_params(axis="y", labelleft=True, labelsize=8)
    fig.supxlabel(data.difference, fontsize=9)
    return fig


def draw_factor_lines(panels: Sequence) -> Figure:
    """Metric vs a numeric factor with 95% CIs, one line per value of a second factor, baseline as a band."""
    fig = Figure(figsize=(6 * len(panels), 4.2), layout="constrained")
    for i, data in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for j, (label, band) in enumerate(sorted(data.lines.items())):
            yerr = [np.subtract(band.centre, band.low), np.subtract(band.high, band.centre)]
            ax.errorbar(band.x, band.centre, yerr=yerr, marker="o", capsize=3, color=f"C{j % 10}", label=label)
        if data.baseline is not None:
            ax.axhline(data.baseline.centre[0], color="black", linestyle="--", label="no regularizer")
            ax.axhspan(data.baseline.low[0], data.baseline.high[0], color="black", alpha=0.08)
        if all(x > 0 for band in data.lines.values() for x in band.x):
            ax.set_xscale("log")
        ax.set_xlabel(_pretty(data.x_name))
        ax.set_ylabel(_pretty(data.metric))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("mean and 95% confidence interval over seeds")
    return fig


def draw_heatmaps(maps: Sequence, columns: int = 2) -> Figure:
    rows = math.ceil(len(maps) / columns)
    fig = Figure(figsize=(5.2 * columns, 3.8 * rows), layout="constrained")
    for i, hm in enumerate(maps):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = ax.imshow(hm.values, cmap="viridis", aspect="auto")
        fig.colorbar(image, ax=ax)
        for r in range(len(hm.rows)):
            for c in range(len(hm.cols)):
                if not np.isnan(hm.values[r, c]):
                    ax.text(
                        c,
                        r,
                        f"{hm.values[r, c]:.3f}\nn={hm.counts[r, c]}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white",
                    )
        ax.set_xticks(range(len(hm.cols)), hm.cols)
        ax.set_yticks(range(len(hm.rows)), hm.rows)
        ax.set_xlabel(_pretty(hm.col_name))
        ax.set_ylabel(_pretty(hm.row_name))
        ax.set_title(hm.title, fontsize=10)
    return fig


def draw_scatter(data, title: str) -> Figure:
    fig = Figure(figsize=(6.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    for j, (label, (x, y, _)) in enumerate(data.groups.items()):
        ax.scatter(x, y, s=28, alpha=0.8, color=f"C{j % 10}", label=label)
    ax.set_xlabel(_pretty(data.x_name))
    ax.set_ylabel(_pretty(data.y_name))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)
    return fig


def draw_grad_norm_groups(tables: dict, columns: int = 0) -> Figure:
    """One layers x epochs log10 heatmap per group, on one shared colour scale (one colour bar). A panel writes
    its layer names unless the panel to its left has the same layers (groups of one network: once per row;
    each name is text that matplotlib lays out twice: the backbones space's six groups drew in 8.1 s with every
    panel named, 6.1 s so); three columns from five groups up (a study of 9 network x loss groups drew a page 64
    inches tall)."""
    items = list(tables.items())
    columns = min(columns or (2 if len(items) <= 4 else 3), len(items))
    rows = math.ceil(len(items) / columns)
    same_layers = all(t.layers == items[0][1].layers for _, t in items)
    # 0.12 inch a layer holds its 6-point name; the axis, title and tick labels need about 1.2 inches more
    height = max(2.5, 0.12 * max(len(t.layers) for _, t in items) + 1.2)
    width = 5.0 + (0 if same_layers else 1.5)  # room for each panel's own layer names
    fig = Figure(figsize=(width * columns + 1.0, height * rows), layout="constrained")
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = {label: np.log10(t.values) for label, t in items}
    finite = np.concatenate([v[np.isfinite(v)] for v in logs.values()]) if logs else np.array([0.0])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    axes = []
    for i, (label, table) in enumerate(items):
        ax = fig.add_subplot(rows, columns, i + 1)
        image = ax.imshow(logs[label], aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        if i % columns == 0 or table.layers != items[i - 1][1].layers:
            ax.set_yticks(range(len(table.layers)), table.layers, fontsize=6)
        else:
            ax.set_yticks(range(len(table.layers)), [])
        step = max(1, len(table.epochs) // 10)
        ax.set_xticks(range(0, len(table.epochs), step), [str(e) for e in table.epochs[::step]])
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=9)
        axes.append(ax)
    fig.colorbar(image, ax=axes, label="log10 ||grad||", shrink=min(1.0, 6.0 / (height * rows)))
    fig.suptitle("mean per-layer gradient L2 norm over each group's trials")
    return fig


def draw_image_grid(panels: Sequence, columns: int = 3) -> Figure:
    """PNG files (e.g. each group's best UMAP) side by side with their titles."""
    rows = math.ceil(len(panels) / columns)
    images = [imread(panel.image) for panel in panels]
    aspect = max(image.shape[1] / image.shape[0] for image in images)  # umap.png holds one or two panels
    fig = Figure(figsize=(4.6 * aspect * min(columns, len(panels)), 4.4 * rows), layout="constrained")
    for i, (panel, image) in enumerate(zip(panels, images)):
        ax = fig.add_subplot(rows, min(columns, len(panels)), i + 1)
        ax.imshow(image)
        ax.set_title(panel.title, fontsize=8)
        ax.axis("off")
    return fig


def _mosaic(tiles: np.ndarray, gap: int = 2) -> np.ndarray:
    """(rows, columns, h, w, C) uint8 tiles as one RGB image with white gaps: one imshow draws them all (a grid
    of subplots costs about 10 ms per panel, which every trial would pay)."""
    rows, columns, h, w, c = tiles.shape
    rgb = np.repeat(tiles, 3, axis=-1) if c == 1 else tiles[..., :3]
    out = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for col in range(columns):
            top, left = gap + r * (h + gap), gap + col * (w + gap)
            out[top : top + h, left : left + w] = rgb[r, col]
    return out


def draw_data_samples(grid: np.ndarray, captions: Sequence[str], titles: Sequence[str], title: str) -> Figure:
    """A (rows, columns, h, w, C) uint8 grid of images: one row per sample, its copies across."""
    rows, columns, h, w = grid.shape[:4]
    fig = Figure(figsize=(1.5 * columns + 1.2, 1.5 * rows + 0.7), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(_mosaic(grid), interpolation="nearest")
    ax.set_xticks([2 + (w + 2) * (c + 0.5) for c in range(columns)], list(titles), fontsize=8)
    ax.set_yticks([2 + (h + 2) * (r + 0.5) for r in range(rows)], list(captions), fontsize=8)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    ax.set_title(title, fontsize=9)
    return fig


def draw_test_predictions(
    images: np.ndarray,
    labels: np.ndarray,
    top: np.ndarray,
    top_probabilities: np.ndarray,
    class_names: Sequence[str],
    title: str,
    columns: int = 4,
) -> Figure:
    """Test images (N, h, w, C uint8) in a grid, each captioned with its true class and the model's three most
    probable classes with their probabilities; red where the most probable is wrong."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / columns)
    padded = np.full((rows * columns, h, w, images.shape[3]), 255, dtype=np.uint8)
    padded[:n] = images
    tiles = padded.reshape(rows, columns, h, w, images.shape[3])
    # room under each image for four lines of text: the tile is stretched vertically by blank rows
    room = max(4, int(round(h * 0.45)))
    tiles = np.concatenate([tiles, np.full((rows, columns, room, w, images.shape[3]), 255, np.uint8)], axis=2)
    mosaic = _mosaic(tiles)
    width = 2.0 * columns  # inches: a tile about 2 inches wide, its four lines of text in the room below it
    fig = Figure(figsize=(width, width * mosaic.shape[0] / mosaic.shape[1] + 0.5), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_axis_off()
    for i in range(n):
        r, c = divmod(i, columns)
        x, y = 2 + c * (w + 2) + w / 2, 2 + r * (h + room + 2) + h + 1
        wrong = top[i][0] != labels[i]
        guesses = "\n".join(f"{class_names[k][:12]} {p:.2f}" for k, p in zip(top[i], top_probabilities[i]))
        ax.text(
            x,
            y,
            f"true {class_names[labels[i]][:12]}\n{guesses}",
            ha="center",
            va="top",
            fontsize=7,
            color="#b2182b" if wrong else "black",
        )
    ax.set_title(title, fontsize=9)
    return fig


def draw_cka_matrix(data) -> Figure:
    """Trials x trials linear CKA, values written in the cells while they fit."""
    n = len(data.labels)
    side = min(14.0, 2.5 + 0.42 * n)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.add_subplot()
    finite = data.values[np.isfinite(data.values)]
    low = float(finite.min()) if finite.size and finite.min() < 1.0 else 0.0
    image = ax.imshow(data.values, cmap="viridis", vmin=low, vmax=1.0)
    fig.colorbar(image, ax=ax, label="linear CKA (1: the same representation up to rotation and scale)")
    ax.set_xticks(range(n), [label[:40] for label in data.labels], rotation=90, fontsize=7)
    ax.set_yticks(range(n), [label[:40] for label in data.labels], fontsize=7)
    if n <= 16:
        for i in range(n):
            for j in range(n):
                if np.isfinite(data.values[i, j]):
                    bright = (data.values[i, j] - low) / (1.0 - low) > 0.6  # viridis turns yellow: dark text
                    colour = "black" if bright else "white"
                    ax.text(j, i, f"{data.values[i, j]:.2f}", ha="center", va="center", fontsize=6, color=colour)
    return fig


def draw_output_examples(data) -> Figure:
    """Per test image (rows): the image, each variant's output probabilities and its raw logits (grouped bars, one
    colour per variant): where softmax spreads mass over every class, sparsemax gives most of them exactly 0."""
    n_images, n_classes = len(data.images), len(data.class_names)
    fig = Figure(figsize=(2.2 + 2 * max(4.0, 0.5 * n_classes), 2.3 * n_images + 0.7), layout="constrained")
    axes = fig.subplots(n_images, 3, squeeze=False, gridspec_kw={"width_ratios": [0.45, 1, 1]})
    width = 0.8 / len(data.groups)
    x = np.arange(n_classes)
    for row in range(n_images):
        image = data.images[row]
        axes[row, 0].imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(f"test #{data.indices[row]}: {data.class_names[data.labels[row]][:12]}", fontsize=8)
        axes[row, 0].axis("off")
        for column, (values, name) in enumerate(((data.probabilities, "probability"), (data.logits, "raw logit"))):
            ax = axes[row, column + 1]
            for g, group in enumerate(data.groups):
                ax.bar(x + (g - (len(data.groups) - 1) / 2) * width, values[g, row], width, label=group, color=f"C{g}")
            ax.axhline(0, color="black", lw=0.6)
            ax.axvspan(data.labels[row] - 0.45, data.labels[row] + 0.45, color="black", alpha=0.07)
            ax.set_xticks(x, [c[:8] for c in data.class_names], fontsize=6, rotation=90 if n_classes > 10 else 0)
            ax.set_ylabel(name, fontsize=8)
            if row == 0:
                ax.set_title(f"{name} per class (grey: the true class)", fontsize=9)
    axes[0, 2].legend(fontsize=7)
    return fig


def draw_logits(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """Validation logits as a heatmap: one row per image, grouped by true class (lines between classes)."""
    order = np.argsort(labels, kind="stable")
    values, sorted_labels = logits[order], labels[order]
    n = len(class_names)
    fig = Figure(figsize=(min(12, 3 + 0.45 * n), 6))
    ax = fig.add_subplot()
    limit = float(np.quantile(np.abs(values), 0.99)) or 1.0
    image = ax.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="logit (colour clipped at the 99th percentile of |logit|)")
    bounds = np.flatnonzero(np.diff(sorted_labels)) + 0.5
    for y in bounds:
        ax.axhline(y, color="black", linewidth=0.6)
    starts = np.concatenate([[0], np.ceil(bounds)]).astype(int)
    ends = np.concatenate([np.ceil(bounds), [len(values)]]).astype(int)
    ax.set_yticks((starts + ends - 1) / 2, [class_names[sorted_labels[s]][:14] for s in starts], fontsize=7)
    ax.set_xticks(range(n), [name[:14] for name in class_names], rotation=90 if n > 10 else 0, fontsize=7)
    ax.set_xlabel("output (class)")
    ax.set_ylabel("validation images, by true class")
    ax.set_title(title)
    return fig


def draw_activations(mosaic: np.ndarray, rows: int, channels: int, layer: str, captions: Sequence[str]) -> Figure:
    """Feature maps as one mosaic (a single image: fast to draw): per row an input and its first channels."""
    fig = Figure(figsize=(1.3 * (channels + 1) + 1.2, 1.3 * rows + 0.8))
    ax = fig.add_subplot()
    ax.imshow(mosaic, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    tile_h, tile_w = mosaic.shape[0] / rows, mosaic.shape[1] / (channels + 1)
    ax.set_xticks([tile_w * (i + 0.5) for i in range(channels + 1)], ["input"] + [f"ch {c}" for c in range(channels)])
    ax.set_yticks([tile_h * (i + 0.5) for i in range(rows)], list(captions))
    ax.tick_params(length=0, labelsize=8)
    ax.set_title(f"feature maps of {layer} (each channel scaled to [0, 1] over these images)", fontsize=9)
    return fig


@dataclass
class LayerSeries:
    """One line of a metric against depth: a trial's values, or a group's mean over seeds with a 95% CI."""

    label: str
    mean: list[float]
    low: list[float]
    high: list[float]


def draw_layer_curves(
    layers: Sequence[str],
    panels: Sequence[tuple[str, Sequence[LayerSeries]]],
    depths: Sequence[float] | None = None,
) -> Figure:
    """Metrics against relative depth (layer names on the top axis): one panel per metric, one line per series,
    a band where low and high differ. On the dimension panel a dashed line marks each series' input dimension,
    so that "the last layer is far below the input" (Ansuini et al. 2019) is read off at a glance. Without
    ``depths`` the layers are spaced evenly."""
    fig = Figure(figsize=(4.2 * len(panels), 4.2), layout="constrained")
    x = np.asarray(depths if depths is not None else np.linspace(0, 1, len(layers)), dtype=float)
    for i, (metric, series) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for one in series:
            (line,) = ax.plot(x, one.mean, marker="o", ms=3, label=one.label)
            if not np.allclose(np.asarray(one.low, float), np.asarray(one.high, float), equal_nan=True):
                ax.fill_between(x, one.low, one.high, color=line.get_color(), alpha=0.2, linewidth=0)
            if metric == "intrinsic_dim_twonn" and layers and layers[0] == "input" and np.isfinite(one.mean[0]):
                ax.axhline(one.mean[0], color=line.get_color(), ls="--", lw=0.8, alpha=0.7)
        if metric == "intrinsic_dim_twonn" and layers and layers[0] == "input":
            ax.plot([], [], color="0.4", ls="--", lw=0.8, label="input dimension")
        ax.set_xlim(-0.04, 1.04)
        ax.set_xlabel("relative depth (share of weight layers applied)", fontsize=8)
        top = ax.secondary_xaxis("top")
        names: dict[float, list[str]] = {}  # layers at one depth (a ReLU after its convolution) share a tick
        for depth, layer in zip(x, layers):
            names.setdefault(float(depth), []).append(layer[-16:])
        top.set_xticks(list(names), [" + ".join(n) for n in names.values()], rotation=40, ha="left", fontsize=7)
        ax.set_title(_pretty(metric), fontsize=10)
        ax.grid(alpha=0.3)
        if metric == "intrinsic_dim_twonn" or (len(series) > 1 and i == len(panels) - 1):
            ax.legend(fontsize=7)
    return fig


def draw_labelled_images(images: Sequence[np.ndarray], titles: Sequence[str], columns: int) -> Figure:
    """uint8 images (C, H, W; one channel drawn grey) in a grid, each under its multi-line title."""
    rows = math.ceil(len(images) / columns)
    lines = max((t.count("\n") + 1 for t in titles), default=1)
    fig = Figure(figsize=(1.9 * columns, (1.7 + 0.16 * lines) * rows), layout="constrained")
    for i, (image, title) in enumerate(zip(images, titles)):
        ax = fig.add_subplot(rows, columns, i + 1)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(title, fontsize=7, loc="left")
        ax.axis("off")
    return fig


def draw_pareto(front) -> Figure:
    """Trials on two objectives; the Pareto front joined by a line, its trials named."""
    fig = Figure(figsize=(7.5, 5.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    off = [i for i, on in enumerate(front.on_front) if not on]
    on = sorted((i for i, flag in enumerate(front.on_front) if flag), key=lambda i: front.x[i])
    ax.scatter([front.x[i] for i in off], [front.y[i] for i in off], color="0.6", label="dominated")
    ax.plot([front.x[i] for i in on], [front.y[i] for i in on], "o-", color="C3", label="Pareto front")
    for i in on:
        ax.annotate(
            front.trials[i].split("_", 1)[0],
            (front.x[i], front.y[i]),
            fontsize=8,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xlabel(f"{front.names[0]} ({'higher' if front.modes[0] == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{front.names[1]} ({'higher' if front.modes[1] == 'max' else 'lower'} is better)")
    ax.legend()
    return fig


def draw_optuna(views) -> Figure:
    """Parameter importances, optimisation history and parallel coordinates of an Optuna study."""
    fig = Figure(figsize=(18, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 3, 1)
    if views.importances:
        names = list(views.importances)[::-1]
        ax.barh([_pretty(n) for n in names], [views.importances[n] for n in names], color="C0")
        ax.set_xlabel(f"importance: {views.evaluator}")
    else:
        ax.text(0.5, 0.5, "too few complete trials for importances", ha="center", transform=ax.transAxes)
    ax.set_title("parameter importances")
    ax = fig.add_subplot(1, 3, 2)
    ax.scatter(views.numbers, views.values, s=16, color="C0", label="trial")
    ax.step(views.numbers, views.best_so_far, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel("objective")
    ax.set_title(f"optimisation history ({views.direction})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 3, 3)
    names = list(views.params)
    values = np.asarray(views.values)
    lo, hi = values.min(), values.max()
    cmap = colormaps["viridis"]
    scaled = {}
    for i, name in enumerate(names):
        column = np.asarray(views.params[name], dtype=float)
        categories = views.categories.get(name)
        if categories:  # a choice's position, spread over the axis; each labelled where it sits
            low, span = 0.0, float(max(1, len(categories) - 1))
            for code, label in enumerate(categories):
                ax.text(i + 0.04, code / span, label[:14], fontsize=7, va="center", color="dimgray")
        else:
            if views.log_scale.get(name) and (column[np.isfinite(column)] > 0).all():
                column = np.log10(column)
            low = np.nanmin(column) if np.isfinite(column).any() else 0.0
            span = (np.nanmax(column) - low) if np.isfinite(column).any() else 0.0
        scaled[name] = (column - low) / span if span > 0 else np.where(np.isfinite(column), 0.5, np.nan)
    for t in range(len(values)):  # a parameter a trial did not sample (conditional) leaves a gap in its line
        ys = [scaled[name][t] for name in names]
        ax.plot(range(len(names)), ys, color=cmap((values[t] - lo) / (hi - lo) if hi > lo else 0.5), alpha=0.7)
    ax.set_xticks(range(len(names)), [_pretty(n) for n in names], rotation=20, fontsize=7)
    ax.set_yticks([0, 1], ["min", "max"])
    ax.set_title("parallel coordinates (colour = objective)")
    return fig


def draw_dataset_eda(eda: dict) -> Figure:
    """shapes_seg's statistics (``dataset_eda.json``): the share of pixels in each class, and how much the
    rectangles overlap and hide each other, with rectangles wholly inside the image and allowed to run off."""
    variants = eda["variants"]
    names = list(next(iter(variants.values()))["area_fraction"])
    fig = Figure(figsize=(12, 4), layout="constrained")
    width = 0.8 / len(variants)
    panels = (
        ("area_fraction", names, "share of all pixels per mask class"),
        ("hidden_fraction", names[1:], "share of each rectangle hidden by a later one"),
    )
    for i, (key, labels, title) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for j, (variant, stats) in enumerate(variants.items()):
            values = [stats[key][n] for n in labels]
            marker = " (configured)" if variant == eda["configured"] else ""
            ax.bar(np.arange(len(labels)) + j * width, values, width, label=variant.replace("_", " ") + marker)
        ax.set_xticks(np.arange(len(labels)) + width * (len(variants) - 1) / 2, labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 3, 3)
    keys = ("overlap_fraction", "cut_fraction")
    for j, (variant, stats) in enumerate(variants.items()):
        ax.bar(np.arange(len(keys)) + j * width, [stats[k] for k in keys], width, label=variant.replace("_", " "))
    ax.set_xticks(
        np.arange(len(keys)) + width * (len(variants) - 1) / 2,
        ["pixels under 2+ rectangles", "rectangles cut by the edge"],
        fontsize=8,
    )
    ax.set_title("overlap and cut-off", fontsize=10)
    ax.legend(fontsize=7)
    settings = eda["settings"]
    fig.suptitle(
        f"{eda['dataset']}: {settings['num_samples']} images of {settings['image_size']} px, sides "
        f"{settings['min_extent']:g}-{settings['max_extent']:g} of the image, seed {settings['split_seed']}"
    )
    return fig


def draw_variant_bars(data) -> Figure:
    """One panel per metric, a horizontal bar per variant: the mean over seeds, with its 95% CI as a whisker."""
    rows = len(data.variants)
    fig = Figure(figsize=(4.0 * len(data.metrics) + 1.5, 0.32 * rows + 1.2), layout="constrained")
    axes = fig.subplots(1, len(data.metrics), sharey=True, squeeze=False)[0]
    positions = np.arange(rows)[::-1]
    for ax, metric in zip(axes, data.metrics):
        scale = data.scales[metric]
        values = [data.means.get((v, metric), np.nan) * scale for v in data.variants]
        ax.barh(positions, values, color="#4c72b0", alpha=0.8)
        for y, variant in zip(positions, data.variants):
            if (variant, metric) in data.intervals:
                low, high = data.intervals[(variant, metric)]
                ax.plot([low * scale, high * scale], [y, y], color="black", lw=1.2)
        finite = [v for v in values if np.isfinite(v)]
        if finite and metric.endswith("accuracy"):  # accuracies differ in their last points: start near them
            ax.set_xlim(max(0.0, min(finite) - 5.0), min(100.0, max(finite) + 2.0))
        ax.set_title(data.labels[metric], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, [v[:60] for v in data.variants], fontsize=8)
    return fig
