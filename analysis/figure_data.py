"""The numbers behind each report figure, as plain data objects (drawn by ``analysis.figures``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from geotune.analysis.figures import GradNormTable, LayerSeries, grad_norm_table
from geotune.analysis.similarity import cka_matrix
from geotune.analysis.stats import PairedEffect, Pairing, group_label, mean_ci, regularizer_label
from geotune.layout import LAYER_GEOMETRY_FILE, read_json
from geotune.metric_names import LAYER_CURVES, METRICS, metric_label

MAX_LINES = 10  # more groups than this in one panel stop being readable


@dataclass
class Band:
    label: str
    x: list
    centre: list  # the line: a median (CurveBands) or a mean (FactorLines), as each figure's caption says
    low: list
    high: list
    n: list


@dataclass
class CurveBands:
    """Per-epoch median over a group's trials with its interquartile range, for each history key (as the original
    experiment reports drew them: with 3-5 seeds a mean +/- std band is pulled by one diverging seed)."""

    keys: list[str]
    groups: dict[str, list[Band]]  # key -> one band per group
    grouped_by: str


def plot_groups(
    frame: pd.DataFrame, factors: Sequence[str], metric: str = "val_accuracy", mode: str = "max"
) -> tuple[pd.Series, str]:
    """How trials are grouped in figures (a label per trial; None = not drawn) and how to say so.

    By full variant when there are few; else by regularizer (or the first factor); and if that still
    leaves more than MAX_LINES groups, only the MAX_LINES best by ``metric`` (plus the baseline) are drawn.
    """
    labels = (
        frame.apply(lambda row: group_label(row, factors), axis=1) if factors else pd.Series("all", index=frame.index)
    )
    how = ", ".join(f.rsplit(".", 1)[-1] for f in factors) or "all trials"
    if labels.nunique() > MAX_LINES:
        if "regularizer.name" in frame:
            labels, how = regularizer_label(frame), "regularizer"
        else:
            first = factors[0]
            labels, how = frame[first].map(lambda v: f"{first.rsplit('.', 1)[-1]}={v}"), first
    if labels.nunique() > MAX_LINES and metric in frame:
        means = frame.groupby(labels)[metric].mean().sort_values(ascending=(mode == "min"))
        keep = set(means.index[:MAX_LINES])
        keep |= {label for label in means.index if str(label).split(",")[0] in ("none", "name=none")}
        labels = labels.where(labels.isin(keep), None)
        how += f" (the {MAX_LINES} best by {metric}, and the baseline)"
    return labels, how


def curve_bands(
    frame: pd.DataFrame,
    histories: dict[str, list[dict]],
    factors: Sequence[str],
    keys: Sequence[str] = ("val_accuracy", "val_loss"),
    metric: str = "val_accuracy",
    mode: str = "max",
) -> CurveBands:
    labels, grouped_by = plot_groups(frame, factors, metric, mode)
    out: dict[str, list[Band]] = {k: [] for k in keys}
    for label in sorted(labels.dropna().unique()):
        trials = [t for t in frame.loc[labels == label, "trial"] if t in histories]
        if not trials:
            continue
        for key in keys:
            by_epoch: dict[int, list[float]] = {}
            for t in trials:
                for row in histories[t]:
                    if row.get(key) is not None:
                        by_epoch.setdefault(row["epoch"], []).append(row[key])
            epochs = sorted(by_epoch)
            if not epochs:
                continue
            # trials that stopped early leave later epochs to fewer trials: quartiles per epoch
            low, centre, high = ([float(np.percentile(by_epoch[e], q)) for e in epochs] for q in (25, 50, 75))
            out[key].append(Band(label, epochs, centre, low, high, [len(by_epoch[e]) for e in epochs]))
    return CurveBands([k for k in keys if out[k]], {k: v for k, v in out.items() if v}, grouped_by)


@dataclass
class LayerCurves:
    """Layer-by-layer geometry per group: for each metric, one line per group (mean over its trials, 95% CI)."""

    layers: list[str]
    panels: list[tuple[str, list[LayerSeries]]]
    grouped_by: str
    left_out: list[str]  # groups measured at other layers than the most common list (not comparable on one axis)
    depths: list[float] | None = None  # each layer's relative depth (mean over trials); None in files before it


def layer_curves(
    frame: pd.DataFrame,
    factors: Sequence[str],
    metric: str = "val_accuracy",
    mode: str = "max",
    metrics: Sequence[str] = LAYER_CURVES,
) -> LayerCurves | None:
    """From each trial's layer_geometry.json (logging.geometry_layers); None when no trial has one."""
    labels, grouped_by = plot_groups(frame, factors, metric, mode)
    measured: dict[str, list[list[dict]]] = {}
    for label in sorted(labels.dropna().unique()):
        for path in frame.loc[labels == label, "path"]:
            data = read_json(Path(path) / LAYER_GEOMETRY_FILE) if isinstance(path, str) else None
            if data and data.get("layers"):
                measured.setdefault(label, []).append(data["layers"])
    if not measured:
        return None
    lists = [tuple(row["layer"] for row in layers) for trials in measured.values() for layers in trials]
    common = max(set(lists), key=lists.count)
    panels: list[tuple[str, list[LayerSeries]]] = [(m, []) for m in metrics]
    left_out = []
    for label, trials in measured.items():
        same = [layers for layers in trials if tuple(row["layer"] for row in layers) == common]
        if not same:
            left_out.append(label)
            continue
        for m, series in panels:
            cis = [
                mean_ci([float(v) for layers in same if (v := layers[i].get(m)) is not None])
                for i in range(len(common))
            ]
            means = [float(c.mean) if c.n and c.mean is not None else math.nan for c in cis]
            low = [float(c.ci_low) if c.ci_low is not None else mean for c, mean in zip(cis, means)]
            high = [float(c.ci_high) if c.ci_high is not None else mean for c, mean in zip(cis, means)]
            series.append(LayerSeries(f"{label} (n={len(same)})", means, low, high))
    placed = [
        [row["relative_depth"] for row in layers]
        for trials in measured.values()
        for layers in trials
        if tuple(row["layer"] for row in layers) == common and all("relative_depth" in row for row in layers)
    ]
    depths = [float(np.mean(column)) for column in zip(*placed)] if placed else None
    return LayerCurves(list(common), panels, grouped_by, left_out, depths)


@dataclass
class ForestCell:
    """One regularizer's paired effect on one metric: mean difference, its 95% CI, the difference of each pair."""

    mean: float | None
    low: float | None
    high: float | None
    diffs: list[float]
    test: str | None
    p_value: float | None


@dataclass
class Forest:
    """Paired effects of every regularizer (rows) on the headline metrics (panels)."""

    metrics: list[str]
    labels: dict[str, str]  # metric -> how to read it
    scales: dict[str, float]  # metric -> factor for display (accuracies in percentage points)
    regularizers: list[str]
    cells: dict[tuple[str, str], ForestCell]  # (regularizer, metric) -> cell
    difference: str = "regularized minus its baseline (same seed and data)"  # what each row's values are
    left_out: int = 0  # rows beyond FOREST_MAX_ROWS not drawn (the weakest; every effect is in the tables)


FOREST_MAX_ROWS = 30  # beyond this many rows a forest summarises: the rows with the strongest effects


def effect_strength(cell: ForestCell) -> float:
    """How far an effect stands from zero in units of its CI's half-width (|mean| where it has no CI)."""
    if cell.mean is None:
        return 0.0
    if cell.low is None or cell.high is None or cell.high <= cell.low:
        return abs(cell.mean)
    return abs(cell.mean) / ((cell.high - cell.low) / 2)


def forest(
    pairing: Pairing, effects: Sequence[PairedEffect], metrics: Sequence[str], difference: str | None = None
) -> Forest | None:
    """What the forest plot draws, or None when no regularized trial has a baseline; ``difference`` says what
    a row's values are when its rows are not regularizers (a factor's levels against its reference)."""
    if pairing.pairs.empty or not effects:
        return None
    by_key = {(e.regularizer, e.metric): e for e in effects}
    regularizers = sorted({e.regularizer for e in effects})
    shown = [
        m for m in metrics if any(by_key.get((r, m)) and by_key[(r, m)].mean_diff is not None for r in regularizers)
    ]
    cells = {}
    for label, part in pairing.pairs.groupby("regularizer", sort=True):
        for metric in shown:
            e = by_key.get((label, metric))
            diffs = [float(v) for v in part.get(f"{metric}_diff", []) if v is not None and np.isfinite(v)]
            if e is not None:
                cells[(label, metric)] = ForestCell(e.mean_diff, e.ci_low, e.ci_high, diffs, e.test, e.p_value)
    scales = {m: METRICS[m].scale if m in METRICS else 1.0 for m in shown}
    labels = {m: metric_label(m) + (" (points)" if scales[m] == 100.0 else "") for m in shown}
    left_out = 0
    if len(regularizers) > FOREST_MAX_ROWS:  # hundreds of rows are unreadable: draw the strongest effects
        strength = {
            r: max((effect_strength(cells[(r, m)]) for m in shown if (r, m) in cells), default=0.0)
            for r in regularizers
        }
        kept = sorted(regularizers, key=lambda r: (-strength[r], r))[:FOREST_MAX_ROWS]
        left_out = len(regularizers) - len(kept)
        regularizers = kept
        cells = {key: cell for key, cell in cells.items() if key[0] in kept}
    forest = Forest(shown, labels, scales, regularizers, cells, left_out=left_out)
    if difference is not None:
        forest.difference = difference
    if left_out:
        forest.difference += (
            f"; the {len(regularizers)} rows whose effects stand furthest from 0 (|mean| / CI half-width), "
            f"{left_out} more in the tables and comparison_report.json"
        )
    return forest


@dataclass
class FactorLines:
    """Metric against a numeric factor, one line per value of another factor, with 95% CIs; optional baseline."""

    metric: str
    x_name: str
    line_name: str
    lines: dict[str, Band]
    baseline: Band | None = None


def factor_lines(frame: pd.DataFrame, x: str, line: str, metric: str, baseline_mask: pd.Series) -> FactorLines:
    treated = frame[~baseline_mask]
    lines = {}
    for value, part in treated.groupby(line, sort=True):
        xs, means, lows, highs, ns = [], [], [], [], []
        for xv, cell in part.groupby(x, sort=True):
            summary = mean_ci(cell[metric].tolist())
            if summary.mean is None:
                continue
            xs.append(float(xv))
            means.append(summary.mean)
            lows.append(summary.ci_low if summary.ci_low is not None else summary.mean)
            highs.append(summary.ci_high if summary.ci_high is not None else summary.mean)
            ns.append(summary.n)
        lines[f"{line.rsplit('.', 1)[-1]}={value}"] = Band(str(value), xs, means, lows, highs, ns)
    base = mean_ci(frame.loc[baseline_mask, metric].tolist())
    baseline = None
    if base.mean is not None:
        baseline = Band(
            "no regularizer",
            [],
            [base.mean],
            [base.ci_low if base.ci_low is not None else base.mean],
            [base.ci_high if base.ci_high is not None else base.mean],
            [base.n],
        )
    return FactorLines(metric, x, line, lines, baseline)


@dataclass
class Heatmap:
    title: str
    row_name: str
    col_name: str
    rows: list[str]
    cols: list[str]
    values: np.ndarray  # mean per cell (NaN where empty)
    counts: np.ndarray


def heatmaps(frame: pd.DataFrame, row: str, col: str, metric: str, facet: str | None = None) -> list[Heatmap]:
    """Mean of ``metric`` on a row x col grid, one grid per value of ``facet``."""
    out = []
    facets = [(None, frame)] if facet is None or facet not in frame else list(frame.groupby(facet, sort=True))
    rows = [str(v) for v in sorted(frame[row].dropna().unique(), key=str)]
    cols = [str(v) for v in sorted(frame[col].dropna().unique(), key=str)]
    for value, part in facets:
        values = np.full((len(rows), len(cols)), np.nan)
        counts = np.zeros((len(rows), len(cols)), dtype=int)
        for (rv, cv), cell in part.groupby([row, col]):
            i, j = rows.index(str(rv)), cols.index(str(cv))
            numbers = cell[metric].dropna()
            if len(numbers):
                values[i, j], counts[i, j] = numbers.mean(), len(numbers)
        title = metric + (f" ({facet.rsplit('.', 1)[-1]}={value})" if facet is not None and value is not None else "")
        out.append(Heatmap(title, row, col, rows, cols, values, counts))
    return out


@dataclass
class Scatter:
    x_name: str
    y_name: str
    groups: dict[str, tuple[list, list, list]]  # label -> (x, y, trial names)


def metric_scatter(frame: pd.DataFrame, x: str, y: str, colour_by: pd.Series) -> Scatter:
    groups: dict[str, tuple[list, list, list]] = {}
    for label in sorted(colour_by.unique()):
        part = frame[(colour_by == label) & frame[x].notna() & frame[y].notna()]
        if len(part):
            groups[label] = (part[x].tolist(), part[y].tolist(), part["trial"].tolist())
    return Scatter(x, y, groups)


def mean_grad_norms(histories: Sequence[list[dict]]) -> GradNormTable | None:
    """Average of several trials' layer x epoch gradient-norm tables (same layers; epochs that all reached)."""
    tables = [grad_norm_table(h) for h in histories if h]
    if not tables:
        return None
    layers = tables[0].layers
    tables = [t for t in tables if t.layers == layers]
    n_epochs = min(len(t.epochs) for t in tables)
    stack = np.stack([t.values[:, :n_epochs] for t in tables])
    return GradNormTable(layers, tables[0].epochs[:n_epochs], np.nanmean(stack, axis=0))


def grad_norm_groups(
    frame: pd.DataFrame,
    histories: dict[str, list[dict]],
    factors: Sequence[str],
    metric: str = "val_accuracy",
    mode: str = "max",
) -> dict[str, GradNormTable]:
    """Mean gradient-norm tables per group: by BatchNorm on/off when the study varies it, else per plot group."""
    if "model.batch_norm" in factors:
        labels = frame["model.batch_norm"].map(lambda v: "with BatchNorm" if v else "without BatchNorm")
    else:
        labels, _ = plot_groups(frame, factors, metric, mode)
    out = {}
    for label in sorted(labels.dropna().unique()):
        table = mean_grad_norms([histories[t] for t in frame.loc[labels == label, "trial"] if t in histories])
        if table is not None:
            out[label] = table
    return out


@dataclass
class Panel:
    title: str
    image: str  # path of a PNG


def _best_of_groups(frame: pd.DataFrame, factors: Sequence[str], metric: str, mode: str) -> list[tuple[str, pd.Series]]:
    """(group label, best trial's row by ``metric``) for each plot group."""
    labels, _ = plot_groups(frame, factors, metric, mode)
    rows = []
    for label in sorted(labels.dropna().unique()):
        part = frame[(labels == label) & frame[metric].notna()]
        if not part.empty:
            rows.append((str(label), part.loc[part[metric].idxmax() if mode == "max" else part[metric].idxmin()]))
    return rows


def best_trial_panels(
    frame: pd.DataFrame, factors: Sequence[str], metric: str, mode: str, image: str = "umap.png"
) -> list[Panel]:
    """The best trial (by ``metric``) of each plot group, with the path of its ``image``."""
    panels = []
    for label, best in _best_of_groups(frame, factors, metric, mode):
        path = Path(str(best["path"])) / image
        if path.is_file():
            panels.append(Panel(f"{label}\n{metric} {best[metric]:.3f} ({best['trial'][:30]})", str(path)))
    return panels


@dataclass
class OutputExamples:
    """The same test images through each group's best trial: raw logits and output probabilities side by side."""

    class_names: list[str]
    images: list[np.ndarray]  # (h, w, C) uint8 thumbnails
    labels: list[int]
    indices: list[int]  # the images' indices in the test split
    groups: list[str]  # one per variant: its label and output layer
    probabilities: np.ndarray  # (groups, images, classes)
    logits: np.ndarray  # (groups, images, classes)


EXAMPLE_IMAGES = 4  # test images the output comparison shows


def output_examples(
    frame: pd.DataFrame, factors: Sequence[str], metric: str, mode: str, file: str
) -> OutputExamples | None:
    """From each group's best trial's ``file`` (test_examples.json), when the study varies the output layer
    (model.output) and at least two groups wrote one; only images every group saw (same test split)."""
    if "model.output" not in factors:
        return None
    found = []
    for label, best in _best_of_groups(frame, factors, metric, mode):
        data = read_json(Path(str(best["path"])) / file) if isinstance(best.get("path"), str) else None
        if isinstance(data, dict) and data.get("examples"):
            found.append((label, data))
    if len(found) < 2:
        return None
    by_index = [{e["index"]: e for e in data["examples"]} for _, data in found]
    common = [i for i in by_index[0] if all(i in other for other in by_index[1:])][:EXAMPLE_IMAGES]
    if not common:
        return None
    first = by_index[0]
    return OutputExamples(
        class_names=list(found[0][1]["class_names"]),
        images=[np.asarray(first[i]["thumbnail"], dtype=np.uint8) for i in common],
        labels=[int(first[i]["label"]) for i in common],
        indices=common,
        groups=[label if "output=" in label else f"{label} ({data['output']})" for label, data in found],
        probabilities=np.array([[table[i]["probabilities"] for i in common] for table in by_index]),
        logits=np.array([[table[i]["logits"] for i in common] for table in by_index]),
    )


@dataclass
class CkaMatrix:
    """Linear CKA between trials' features of the same images, trials ordered by variant, then seed."""

    labels: list[str]  # one per trial: its variant and seed
    values: np.ndarray  # (trials, trials)
    left_out: int  # trials beyond CKA_MATRIX_TRIALS, not drawn


CKA_MATRIX_TRIALS = 40  # more trials stop being readable as a matrix


def cka_matrix_data(frame: pd.DataFrame, factors: Sequence[str], features: dict[str, np.ndarray]) -> CkaMatrix | None:
    """The CKA matrix of the trials that have ``features`` (at least two), by variant then seed."""
    rows = frame[frame["trial"].isin(features)].copy()
    if len(rows) < 2:
        return None
    rows["_variant"] = rows.apply(lambda r: group_label(r, [f for f in factors if f in r]), axis=1)
    rows = rows.sort_values(["_variant"] + (["train.seed"] if "train.seed" in rows else []), kind="stable")
    shown = rows.head(CKA_MATRIX_TRIALS)
    labels = [
        f"{r['_variant']}, seed {r['train.seed']}" if "train.seed" in r else r["_variant"] for _, r in shown.iterrows()
    ]
    return CkaMatrix(labels, cka_matrix([features[t] for t in shown["trial"]]), len(rows) - len(shown))


# ---------------------------------------------------------------------------
# Optuna


@dataclass
class OptunaViews:
    importances: dict[str, float]  # parameter -> importance (sums to 1)
    evaluator: str
    numbers: list[int]  # trial numbers of complete trials
    values: list[float]
    best_so_far: list[float]
    params: dict[str, list[float]]  # parameter -> value per complete trial (NaN where a trial did not sample it)
    log_scale: dict[str, bool]
    direction: str
    # categorical parameters (strings, booleans, any choice list): their values are positions in this list
    categories: dict[str, list[str]] = field(default_factory=dict)


def optuna_views(storage_url: str, study_names: Sequence[str]) -> OptunaViews | None:
    """Importances (fANOVA with a fixed seed), optimisation history and parameter values from Optuna's storage:
    the first of ``study_names`` that it holds."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stored = set(optuna.study.get_all_study_names(storage_url))
    name = next((n for n in study_names if n in stored), None)
    if name is None:
        return None
    study = optuna.load_study(study_name=name, storage=storage_url)
    if len(study.directions) > 1:  # a multi-objective search: the report draws its Pareto front instead
        return None
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not complete:
        return None
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    values = [float(t.value) for t in complete if t.value is not None]
    best = list(np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values))
    importances: dict[str, float] = {}
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
    if len(complete) >= 2:
        try:
            importances = dict(optuna.importance.get_param_importances(study, evaluator=evaluator))
        except (RuntimeError, ValueError):
            importances = {}
    names = sorted({k for t in complete for k in t.params})
    dists = {k: next(t.distributions[k] for t in complete if k in t.distributions) for k in names}
    return OptunaViews(
        importances=importances,
        evaluator="fANOVA (FanovaImportanceEvaluator, seed 0)",
        numbers=[t.number for t in complete],
        values=values,
        best_so_far=[float(v) for v in best],
        params={k: _coded([t.params.get(k) for t in complete], dists[k]) for k in names},
        log_scale={k: bool(getattr(d, "log", False)) for k, d in dists.items()},
        direction="maximize" if maximize else "minimize",
        categories={
            k: [str(c) for c in d.choices]
            for k, d in dists.items()
            if isinstance(d, optuna.distributions.CategoricalDistribution)
        },
    )


def _coded(values: list, distribution) -> list[float]:
    """A parameter's values as numbers: a categorical one's position in its choices, NaN where not sampled."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        choices = list(distribution.choices)
        return [float(choices.index(v)) if v is not None and v in choices else math.nan for v in values]
    return [math.nan if v is None else float(v) for v in values]


@dataclass
class ParetoFront:
    """Finished trials on two objectives, and which of them no other trial beats on both."""

    names: tuple[str, str]  # the objectives' metric names
    modes: tuple[str, str]  # "max" or "min" each
    trials: list[str]
    x: list[float]
    y: list[float]
    on_front: list[bool]


def pareto_front(frame: pd.DataFrame, objectives: Sequence[Sequence[str]]) -> ParetoFront | None:
    """The non-dominated trials of ``frame`` on two (metric, mode) objectives; None without two finished ones.
    A trial is dominated when another is at least as good on both objectives and better on one."""
    (a, mode_a), (b, mode_b) = objectives[0], objectives[1]
    if a not in frame or b not in frame:
        return None
    rows = frame[[a, b, "trial"]].dropna()
    if len(rows) < 2:
        return None
    x, y = rows[a].astype(float).to_numpy(), rows[b].astype(float).to_numpy()
    gx, gy = (x if mode_a == "max" else -x), (y if mode_b == "max" else -y)  # larger is better on both
    on_front = [not bool(np.any((gx >= gx[i]) & (gy >= gy[i]) & ((gx > gx[i]) | (gy > gy[i])))) for i in range(len(x))]
    return ParetoFront((a, b), (mode_a, mode_b), list(rows["trial"]), x.tolist(), y.tolist(), on_front)


@dataclass
class VariantBars:
    """Per variant (rows), per metric (panels): the mean over seeds with its 95% CI (None where one trial)."""

    metrics: list[str]
    labels: dict[str, str]  # metric -> how to read it
    scales: dict[str, float]  # metric -> factor for display
    variants: list[str]
    means: dict[tuple[str, str], float]  # (variant, metric) -> mean
    intervals: dict[tuple[str, str], tuple[float, float]]  # (variant, metric) -> 95% CI, where there is one
    left_out: int = 0  # variants beyond FOREST_MAX_ROWS not drawn (those lowest in the first metric)


def variant_bars(cells: pd.DataFrame, metrics: Sequence[str]) -> VariantBars | None:
    """What the per-variant bar chart draws, from ``stats.group_summary``'s cells; None without two variants.
    Beyond FOREST_MAX_ROWS variants it draws those highest in the first metric (the groups tables list all)."""
    shown = [m for m in metrics if f"{m}_mean" in cells and cells[f"{m}_mean"].notna().any()]
    if len(cells) < 2 or not shown:
        return None
    left_out = max(0, len(cells) - FOREST_MAX_ROWS)
    if left_out:
        cells = cells.sort_values(f"{shown[0]}_mean", ascending=False, na_position="last").head(FOREST_MAX_ROWS)
    means, intervals = {}, {}
    for _, row in cells.iterrows():
        for metric in shown:
            if pd.notna(row[f"{metric}_mean"]):
                means[(row["group"], metric)] = float(row[f"{metric}_mean"])
            if pd.notna(row.get(f"{metric}_ci_low")) and pd.notna(row.get(f"{metric}_ci_high")):
                intervals[(row["group"], metric)] = (float(row[f"{metric}_ci_low"]), float(row[f"{metric}_ci_high"]))
    scales = {m: METRICS[m].scale if m in METRICS else 1.0 for m in shown}
    labels = {m: metric_label(m) + (" (%)" if scales[m] == 100.0 else "") for m in shown}
    return VariantBars(shown, labels, scales, list(cells["group"]), means, intervals, left_out)
