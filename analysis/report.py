"""A study's report: what each regularizer did to accuracy and latent geometry, and how sure we are.

``build_report`` turns a loaded study into a plain ``Report`` (tables, findings,
figure data); ``write_report`` renders it into ``STUDY_DIR/report/``:
``summary.csv`` (one row per trial), ``tables.md``, ``comparison_report.json``
(paired effects), ``figures/*.png``, ``REPORT.md`` and a self-contained
``index.html`` (figures embedded, no network access needed).
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geotune.analysis import figure_data as fd
from geotune.analysis import figures
from geotune.analysis.comparison import comparison_report, single_pair, write_comparison_report
from geotune.analysis.flatness import MIN_RESOLVED_POINTS
from geotune.analysis.load import StudyData, load_histories, load_studies
from geotune.analysis.stats import (
    ALPHA,
    COLLAPSE_DROP,
    MeanCI,
    Pairing,
    adjust_together,
    detected,
    factor_contrasts,
    factor_interactions,
    factor_tables,
    geometry_change,
    group_summary,
    is_baseline,
    pair_with_baselines,
    paired_effects,
    regularizer_label,
    representation_shifts,
    seed_similarity,
    seeds_to_detect,
    twin_similarity,
)
from geotune.analysis.tables import fmt, markdown_table
from geotune.latents_file import read_test_embeddings
from geotune.layout import (
    CHECKPOINT_PREFIX,
    CLASSIFICATION_FILE,
    CONFIG_FILE,
    DATASET_EDA_FILE,
    GEOMETRY_FILE,
    LATENTS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    OPTUNA_FILE,
    REPORT_DIR,
    TEST_EXAMPLES_FILE,
    TrialStatus,
    optuna_url,
    read_json,
)
from geotune.metric_names import (
    AGAINST_LAMBDA,
    BY_FACTOR,
    COST,
    EPOCH,
    GEOMETRY,
    HEADLINE,
    HEATMAPS,
    METRICS,
    NEURAL_COLLAPSE,
    NEURAL_COLLAPSE_EPOCH,
    PERFORMANCE,
    STRUCTURE,
    SUMMARY,
    for_task,
    metric_label,
    score_of,
)


@dataclass
class Table:
    key: str
    title: str
    headers: list[str]
    rows: list[list]
    caption: str = ""


@dataclass
class FigureSpec:
    key: str
    title: str
    caption: str
    draw: Callable[[Any], Any]
    data: Any


@dataclass(frozen=True)
class FactorView:
    """A figure the report draws when a study varies the factors it names (declared here, not in the code).

    ``kind`` lines: each metric against ``x``, one line per value of ``group`` (or of ``x`` alone), the
    baselines dashed; heatmaps: each metric over ``x`` x ``group``, one map per value of ``facet``.
    """

    key: str
    kind: str
    x: str
    group: str | None
    facet: str | None
    metrics: tuple[str, ...]
    title: str
    caption: str


FACTOR_VIEWS = (
    FactorView(
        "metric_vs_lambda",
        "lines",
        "regularizer.geodesic.lambda_reg",
        "regularizer.geodesic.n_neighbors",
        None,
        AGAINST_LAMBDA,
        "Accuracy, flatness and spread within classes against lambda",
        "one line per n_neighbors, 95% CI over seeds; dashed: no regularizer",
    ),
    FactorView(
        "pooling_bn_heatmaps",
        "heatmaps",
        "model.pooling",
        "model.batch_norm",
        "regularizer.name",
        HEATMAPS,
        "Pooling x BatchNorm",
        "mean over seeds per cell",
    ),
)


def factor_view(view: FactorView, usable: pd.DataFrame, factors: list[str], task: str) -> FigureSpec | None:
    """The view's figure for this study, or None where the study does not vary what the view needs."""
    metrics = [m for m in for_task(view.metrics, task) if m in usable]
    if view.x not in factors or not metrics:
        return None
    if view.kind == "lines":
        line = view.group if view.group in factors else view.x
        base = is_baseline(usable)
        panels = [fd.factor_lines(usable, view.x, line, m, base) for m in metrics]
        return FigureSpec(view.key, view.title, view.caption, figures.draw_factor_lines, panels)
    if view.group not in factors:
        return None
    facet = view.facet if view.facet in factors else None
    maps = [hm for metric in metrics for hm in fd.heatmaps(usable, view.x, view.group, metric, facet)]
    return FigureSpec(view.key, view.title, view.caption, figures.draw_heatmaps, maps)


@dataclass
class Report:
    title: str
    question: str
    plan_rows: list[tuple[str, str]]  # the plan as (what, value) rows
    status: dict[str, int]
    problems: Table
    best: dict | None
    findings: list[str]
    tables: list[Table] = field(default_factory=list)
    figures: list[FigureSpec] = field(default_factory=list)
    forest: FigureSpec | None = None  # the report opens with it: paired effects at a glance
    paired: dict = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per trial (summary.csv)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _ci_cell(mean, std, low, high, digits: int = 3) -> str:
    if _missing(mean):
        return "-"
    text = f"{mean:.{digits}f}"
    if not _missing(std):
        text += f" ± {std:.{digits}f}"
    if not _missing(low):
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def summary_table(key: str, title: str, summary: pd.DataFrame, metrics: Sequence[str], caption: str) -> Table:
    rows = []
    for _, r in summary.iterrows():
        rows.append(
            [r["group"], int(r["n"])]
            + [
                _ci_cell(r.get(f"{m}_mean"), r.get(f"{m}_std"), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high"))
                for m in metrics
            ]
        )
    return Table(key, title, ["group", "n"] + [metric_label(m) for m in metrics], rows, caption)


CI_CAPTION = "mean ± std over the group's trials [95% confidence interval of the mean, t distribution]"


def cost_table(summary: pd.DataFrame) -> Table:
    """Model size and time per group: parameters as a count (a range where a group's models differ)."""
    rows = []
    for _, r in summary.iterrows():
        mean, std = r.get("num_parameters_mean"), r.get("num_parameters_std")
        if _missing(mean):
            size = "-"
        elif _missing(std) or std == 0:
            size = f"{mean:,.0f}"
        else:
            size = f"{mean:,.0f} ± {std:,.0f}"
        times = [
            _ci_cell(r.get(f"{m}_mean"), r.get(f"{m}_std"), r.get(f"{m}_ci_low"), r.get(f"{m}_ci_high"), digits=1)
            for m in ("train_time_s", "wall_time_s")
        ]
        rows.append([r["group"], int(r["n"]), size, *times])
    return Table(
        "groups_cost",
        "Model size and time per variant",
        ["group", "n", metric_label("num_parameters"), metric_label("train_time_s"), metric_label("wall_time_s")],
        rows,
        "parameters of the network (the same for every seed); times: " + CI_CAPTION + "; wall time runs from the "
        "trial's start (data and model set-up included) to the end of its last epoch; trials that share a "
        "machine slow each other down",
    )


def _plan_rows(study: StudyData) -> list[tuple[str, str]]:
    p = study.plan
    if study.sources:
        return [
            ("studies", ", ".join(study.sources)),
            ("trials", str(len(study.frame))),
            ("varied", ", ".join(study.factors) or "-"),
            ("ranked by", f"{study.metric} ({study.mode}, the first study's)"),
        ]
    if p is None:
        return [("study directory", study.study_dir), ("trials", str(len(study.frame)))]
    epochs = p.base.get("train", {}).get("epochs", "default")
    versions = ", ".join(f"{k} {v}" for k, v in p.versions.items() if v) or "not recorded"
    return [
        ("space", f"{p.space} ({p.module})"),
        ("trials planned", f"{p.trial_count} ({'Optuna TPE' if p.optuna else 'grid'}), seeds {p.seeds}"),
        ("varied", ", ".join(study.factors) or "-"),
        ("ranked by", f"{p.metric} ({p.mode})"),
        (
            "early stopping",
            f"ASHA, grace period {p.asha['grace_period']}, reduction factor {p.asha['reduction_factor']}"
            if p.asha
            else "none (every trial to the end)",
        ),
        ("epochs", str(epochs)),
        ("resources per trial", f"{p.cpus_per_trial:g} CPU, {p.gpus_per_trial:g} GPU"),
        ("started", f"{p.created}: geotune {' '.join(p.command)}"),
        ("versions", versions),
        ("study directory", study.study_dir),
    ]


def _best(study: StudyData) -> dict | None:
    usable = study.usable
    if usable.empty or study.metric not in usable or usable[study.metric].isna().all():
        return None
    row = usable.loc[usable[study.metric].idxmax() if study.mode == "max" else usable[study.metric].idxmin()]
    folder = Path(row["path"])
    checkpoints = sorted(folder.glob(f"{CHECKPOINT_PREFIX}*"))
    return {
        "trial": row["trial"],
        "metric": study.metric,
        "value": float(row[study.metric]),
        "test_metric": score_of("test_accuracy", study.task),
        "test_value": row.get(score_of("test_accuracy", study.task)),
        "config": {k: row[k] for k in study.factors + ["train.seed"] if k in row},
        "checkpoint": str(checkpoints[-1]) if checkpoints else None,
        "weights": str(folder / MODEL_FILE) if (folder / MODEL_FILE).is_file() else None,
        "config_file": str(folder / CONFIG_FILE),
    }


def best_per_class_table(best: dict | None) -> Table | None:
    """The best trial's scores per class on the test split (its classification_report.json), worst F1 first:
    which classes the study's best network still confuses."""
    if best is None:
        return None
    folder = Path(best["config_file"]).parent
    scores = (read_json(folder / CLASSIFICATION_FILE) or {}).get("test")
    if not isinstance(scores, dict):
        return None
    classes = {k: v for k, v in scores.items() if isinstance(v, dict) and k not in ("macro avg", "weighted avg")}
    latent = (read_json(folder / GEOMETRY_FILE) or {}).get("per_class") or {}
    measured = (read_json(folder / METRICS_FILE) or {}).get("geometry_split", "measured")
    rows = [
        [
            name,
            fmt(v.get("precision"), 3),
            fmt(v.get("recall"), 3),
            fmt(v.get("f1-score"), 3),
            int(v.get("support", 0)),
            fmt((latent.get(name) or {}).get("linear_separability"), 3),
            fmt((latent.get(name) or {}).get("intrinsic_dim_twonn"), 2),
        ]
        for name, v in sorted(classes.items(), key=lambda item: item[1].get("f1-score", 0.0))
    ]
    return Table(
        "best_per_class",
        f"Per-class scores of the best trial on the test split ({best['trial']})",
        ["class", "precision", "recall", "F1", "images", "linear probe F1", "TwoNN"],
        rows,
        "worst F1 first; the confusion matrices above show which classes it takes them for. Linear probe F1: a "
        f"one-vs-rest perceptron on the {measured} embeddings, trained and scored on the same points (how linearly "
        "the class stands apart in the latent space, not a held-out score); TwoNN: the class's intrinsic dimension "
        "there",
    )


def _effect_text(metric: str, e, percent: float | None) -> str:
    """One effect in words; ``percent``: the difference relative to the baselines' mean, where it helps."""
    m = METRICS[metric]
    scale, unit, digits = m.scale, m.unit, m.digits
    text = f"{m.label} {e.mean_diff * scale:+.{digits}f}{unit}"
    if percent is not None:
        text += f" ({percent:+.0f}%)"
    if e.ci_low is not None:
        text += f" [{e.ci_low * scale:+.{digits}f}, {e.ci_high * scale:+.{digits}f}]"
        text += ", excludes 0" if (e.ci_low > 0 or e.ci_high < 0) else ""
    if e.p_value is not None:
        text += f", p = {e.p_value:.3g}" + (f" (Holm {e.p_holm:.3g})" if e.p_holm is not None else "")
    return text


def _verdict_text(change) -> str:
    """The geometry verdict in words: what the numbers mean, and what they cannot tell."""
    spread = (
        f"participation ratio {change.spread_change * 100:+.0f}%"
        if change.spread_change is not None
        else "participation ratio"
    )
    known = change.dimension is not None and change.dimension.mean_diff is not None
    twonn = f"intrinsic dimension within classes {change.dimension.mean_diff:+.2f}" if known else ""
    lost = ", ".join(([spread] if change.thinner else []) + ([twonn] if change.dimension_fell else []))
    collapse = f"a fall of the participation ratio within classes by at least {COLLAPSE_DROP:.0%}"
    return {
        "flatter by collapse": f"**Flatter by collapse**: within-class flatness fell together with the classes' "
        f"spread over dimensions ({lost}); thinner classes read flatter without being less curved, so this is "
        "not evidence of unbending.",
        "flatter without collapse": "**Flatter without collapse**: within-class flatness fell while the "
        f"participation ratio did not fall by {COLLAPSE_DROP:.0%} or more and the intrinsic dimension within "
        "classes did not rise.",
        "thickened": f"**Thickened**: within-class flatness fell while the classes' intrinsic dimension rose "
        f"({twonn}): classes that thicken hide their bends from the reading, so this is not evidence of "
        "unbending either.",
        "collapse without flattening": f"**Collapse without flattening**: the classes lost spread over dimensions "
        f"({lost}) while their flatness did not change detectably.",
        "more curved": "**More curved**: within-class flatness rose"
        + (f", and the classes got thinner ({lost})" if change.thinner else "")
        + ".",
        "no detectable change": "No detectable change of within-class flatness, and no collapse (" + collapse + ") "
        "at this number of seeds; that is not evidence of no effect.",
        "flatness not resolved": "**Flatness not resolved**: some measured classes could not show a bend of "
        "their own size (flatness_resolved_per_class below 1), so no verdict about flatness is given; "
        + (
            f"the classes collapsed ({lost})."
            if change.thinner
            else f"there was no collapse ({collapse})."
            if change.thinner is False
            else "the spread could not be tested."
        ),
        "not testable": "With fewer than 2 pairs no interval can be given: these are single differences, not "
        "estimated effects.",
    }[change.verdict]


def _collapse_kind_text(nc1, change) -> str:
    """Which collapse, if any: neural collapse (NC1 down: classes drew towards their means against the means'
    spread) is read apart from the participation ratio's dimensional collapse within classes."""
    if nc1 is None or nc1.mean_diff is None:
        return ""
    fell, rose = detected(nc1, -1), detected(nc1, +1)
    if fell is None:
        return ""
    dimensional = " while the classes also lost spread over dimensions" if change.thinner else ""
    if fell:
        return (
            f" **Neural collapse**: NC1 {nc1.mean_diff:+.3f} [{nc1.ci_low:+.3f}, {nc1.ci_high:+.3f}]: each class "
            f"drew towards its mean against the spread of the means (Papyan et al.){dimensional}."
        )
    if rose:
        return f" NC1 rose {nc1.mean_diff:+.3f} [{nc1.ci_low:+.3f}, {nc1.ci_high:+.3f}]: the classes spread out " + (
            "around their means (away from neural collapse)."
        )
    return " NC1 did not change detectably (no sign of neural collapse, nor of its undoing)."


def _resolved(part: pd.DataFrame) -> bool | None:
    """Whether every class of every compared trial could show a bend; None where the trials did not record it."""
    columns = [f"flatness_resolved_per_class_{side}" for side in ("regularized", "baseline")]
    if not all(c in part for c in columns):
        return None
    values = pd.concat([part[c] for c in columns]).dropna()
    return bool((values >= 1.0).all()) if len(values) else None


def _resolution_note(frame: pd.DataFrame) -> str | None:
    """Say so when within-class flatness could not see a bend: measured per class (or, for trials of geotune 0.2,
    estimated from the class size)."""
    if "flatness_resolved_per_class" in frame and frame["flatness_resolved_per_class"].notna().any():
        share = float(frame["flatness_resolved_per_class"].mean())
        if share >= 1.0:
            return None
        return (
            f"Within-class flatness is not resolved everywhere: on average {share:.0%} of the measured classes "
            "could show a bend (a copy of each class with its top principal axes wrapped onto a hemisphere must "
            "read within 0.03 of its exact value). Where a class cannot, its flatness reads near 1 whatever its "
            "shape, so its differences say nothing about curvature; the participation ratio and the intrinsic "
            "dimension are still measured. More points per class (logging.geometry_split, "
            "logging.geometry_points_per_class) resolve more."
        )
    if "class_size_median" not in frame or frame["class_size_median"].isna().all():
        return None
    size = float(frame["class_size_median"].median())
    if size >= MIN_RESOLVED_POINTS:
        return None
    return (
        f"Within-class flatness is not resolved here: the classes hold a median of {size:.0f} measured points, "
        f"and below about {MIN_RESOLVED_POINTS} a class reads flat whatever its shape (a sphere of 27 points "
        "reads 1.00, of 54 points 1.04, of 100 points 1.08). Its differences say nothing about curvature; the "
        "participation ratio and the intrinsic dimension are still measured."
    )


CKA_TRIALS = 200  # the representation table compares at most this many trials (pairs grow with the square)


def trial_features(usable: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each finished trial's features of the same test images (latents.npz's test_embeddings), for those that
    hold the study's most common number of them (a trial on another split is left out)."""
    found = {}
    for _, row in usable.head(CKA_TRIALS).iterrows():
        x = read_test_embeddings(Path(str(row["path"])) / LATENTS_FILE) if isinstance(row.get("path"), str) else None
        if x is not None:
            found[row["trial"]] = x
    if not found:
        return {}
    common = pd.Series([len(x) for x in found.values()]).mode().iloc[0]
    return {t: x for t, x in found.items() if len(x) == common}


def representation_table(usable: pd.DataFrame, factors: Sequence[str], features: dict[str, np.ndarray]) -> Table | None:
    """Linear CKA of trials that differ in one factor alone against two seeds of one variant: did the factor
    change the representation beyond what a new seed does? ``features``: ``trial_features(usable)``."""
    shifts = representation_shifts(usable, factors, features) if features else []
    if not shifts:
        return None
    n = len(next(iter(features.values())))

    def cell(ci) -> str:
        return f"{_ci_cell(ci.mean, ci.std, ci.ci_low, ci.ci_high)} ({ci.n} pairs)" if ci.n else "-"

    def reading(shift) -> str:
        beyond = shift.beyond_seed_noise
        if beyond is None:
            return "too few pairs for intervals"
        return "changed beyond seed noise" if beyond else "within seed noise"

    return Table(
        "representation",
        f"Representation similarity: linear CKA on the first {n} test images"
        + (f" (the first {CKA_TRIALS} trials)" if len(usable) > CKA_TRIALS else ""),
        ["factor", "trials differing in it alone (same seed)", "two seeds of one variant", "reading"],
        [[s.factor, cell(s.between), cell(s.within), reading(s)] for s in shifts],
        "linear CKA (Kornblith et al. 2019; 1 = the same representation up to rotation and scale) of the trials' "
        "embeddings of the same test images; a factor changed the representation beyond seed noise when its "
        "interval lies wholly below that of two seeds of one variant; the intervals are over pairs, which share "
        "trials, so they are narrower than independent ones would be",
    )


def _recovery_note(frame: pd.DataFrame) -> str:
    """Trials that crashed and were retried (a lost node, a killed worker): how many, and what it means."""
    if "failures" not in frame or not (frame["failures"].fillna(0) > 0).any():
        return ""
    hit = frame[frame["failures"].fillna(0) > 0]
    finished = hit[hit["status"].isin([s.value for s in TrialStatus if s.usable])]
    failures, retrained = int(hit["failures"].sum()), int(hit["epochs_retrained"].fillna(0).sum())
    names = ", ".join(f"`{t}`" for t in hit["trial"].head(5)) + (" ..." if len(hit) > 5 else "")
    return (
        f"**Recovered after failures**: {len(hit)} of {len(frame)} trials crashed and were retried ({failures} "
        f"failure{'s' * (failures != 1)} in all; {retrained} epoch{'s' * (retrained != 1)} trained again); "
        f"{len(finished)} of them finished: {names}. A retried trial continues from its last checkpoint (weights, "
        "optimiser, random generators), so its results are those it would have had without the crash; each "
        "trial's failures.json says on which node, after which epoch and why."
    )


def _nothing_finished(problems: pd.DataFrame, study_dir: str | None) -> str:
    """The one finding of a study without a finished trial: what happened to its trials, the commonest reason,
    and how to go on."""
    counts = problems["status"].astype(str).value_counts()
    counts = counts[counts > 0]
    states = ", ".join(f"{n} {state}" for state, n in counts.items()) or "no trial has started"
    reasons = problems["error"].dropna() if "error" in problems else pd.Series(dtype=str)
    reasons = reasons[reasons.astype(str).str.len() > 0]
    common = ""
    if not reasons.empty:
        top = reasons.astype(str).value_counts()
        common = f" The commonest reason ({top.iloc[0]} of {len(reasons)}): {top.index[0].splitlines()[-1][:300]}."
    folder = study_dir or "STUDY_DIR"
    return (
        f"**No trial finished** ({states}), so there is nothing to compare yet: no table or figure of results "
        f"below.{common} The table *Trials without final results* gives each trial's reason; once the cause is "
        f"fixed, `geotune resume {folder}` retries the failed trials from their last checkpoints and finishes the "
        "interrupted and missing ones."
    )


def _similarity_text(
    twin: MeanCI | None, seeds: MeanCI | None, other: str = "its baseline", subject: str = "Representation"
) -> str:
    """The representation's change in words: linear CKA with the twin trials against two seeds of one variant."""
    if twin is None or twin.mean is None:
        return ""
    value = f"{twin.mean:.3f}" + (f" [{twin.ci_low:.3f}, {twin.ci_high:.3f}]" if twin.ci_low is not None else "")
    text = f" {subject}: linear CKA with {other} {value} ({twin.n} pair{'s' if twin.n != 1 else ''})"
    if seeds is None or seeds.mean is None:
        return text + "; no two seeds of one variant to hold it against."
    noise = f"{seeds.mean:.3f}" + (f" [{seeds.ci_low:.3f}, {seeds.ci_high:.3f}]" if seeds.ci_low is not None else "")
    if twin.ci_high is None or seeds.ci_low is None:
        return text + f" against {noise} between two seeds of one variant (too few pairs for a verdict)."
    beyond = twin.ci_high < seeds.ci_low
    reading = "changed beyond seed noise" if beyond else "within seed noise"
    return text + f" against {noise} between two seeds of one variant: {reading}."


def _findings(
    effects: list,
    pairing,
    task: str = "classification",
    similarity: dict[str, MeanCI] | None = None,
    seeds: MeanCI | None = None,
) -> list[str]:
    """Per regularizer: its paired effect on accuracy and on each class's geometry, with its uncertainty, whether a
    flatter latent space came from collapse and of which kind, and how far the representation moved against a
    new seed (``similarity``: ``twin_similarity`` per regularizer; ``seeds``: ``seed_similarity``)."""
    headline = for_task(HEADLINE, task)
    out = []
    by_label: dict[str, dict] = {}
    for e in effects:
        by_label.setdefault(e.regularizer, {})[e.metric] = e
    tests = sum(1 for e in effects if e.p_value is not None)
    for label, metrics in by_label.items():
        n = max((m.n_pairs for m in metrics.values()), default=0)
        tested = next((m for m in metrics.values() if m.test), None)
        first = next(iter(metrics.values()))
        how = tested.test if tested else (first.note.split(": ", 1)[-1] + ", 95% CIs only")
        part = pairing.pairs[pairing.pairs["regularizer"] == label]
        baseline = part.get("participation_ratio_per_class_baseline")
        spread_base = float(baseline.dropna().mean()) if baseline is not None and baseline.notna().any() else None
        change = geometry_change(metrics, spread_base, _resolved(part))
        percent = change.spread_change * 100 if change.spread_change is not None else None
        parts = [
            _effect_text(m, metrics[m], percent if m == "participation_ratio_per_class" else None)
            for m in headline
            if m in metrics and metrics[m].mean_diff is not None
        ]
        diffs = part[[c for c in part.columns if c.endswith("_diff")]].to_numpy(dtype=float)
        identical = bool(diffs.size) and np.all(np.nan_to_num(diffs) == 0.0)
        penalty = part.get("reg_loss_max_regularized")
        never = penalty is not None and penalty.notna().all() and bool((penalty == 0).all())
        if identical or never:
            how_known = (
                "every difference is 0"
                if identical
                else "its penalty was 0 on every step of every trial "
                "(reg_loss_max 0); the differences left are the nondeterminism of the device's kernels"
            )
            out.append(
                f"**{label}** trained like its baselines ({n} pair{'s' if n != 1 else ''}; {how_known}): the "
                "penalty never changed a gradient, so this study says nothing about what it does. A flat-target "
                "geodesic penalty is exactly 0 while no pair of a class in a batch has to bend (see "
                "reg_geodesic_bent_fraction in the trials' histories): a batch holds too few points of a class "
                "for a bend to show; target fixed acts."
            )
            continue
        out.append(
            f"**{label}** vs no regularizer ({n} pair{'s' if n != 1 else ''}; {how}): "
            + "; ".join(parts)
            + ". "
            + _verdict_text(change)
            + _collapse_kind_text(metrics.get("nc1"), change)
            + _similarity_text((similarity or {}).get(label), seeds)
        )
    if by_label:
        out.append(
            "Differences are regularized minus baseline (same seed and data); brackets are 95% confidence "
            "intervals of the mean difference. An interval that includes 0 means no effect is detectable at "
            "this number of seeds. "
            + (
                f"The {tests} paired tests of this report are one family: each p-value is also given Holm-adjusted "
                f"for the others, and a verdict counts a change only where its interval excludes 0 and its "
                f"Holm-adjusted p is below {ALPHA}; collapse also needs the participation ratio within classes "
                f"to fall by at least {COLLAPSE_DROP:.0%} of its baseline. "
                if tests
                else ""
            )
            + "Flatness within classes is the mean geodesic / chord ratio (1 = flat); the participation ratio "
            "measures over how many dimensions each class spreads; the intrinsic dimension within classes is "
            "TwoNN's, averaged over classes."
        )
    if pairing.unpaired:
        out.append(
            f"{len(pairing.unpaired)} regularized trial(s) had no baseline with an identical config "
            "(apart from the regularizer) and are left out of the paired comparison."
        )
    if not out:
        out.append(
            "This study has no regularized trials paired with unregularized ones, so it measures no "
            "regularizer effect; see the group tables."
        )
    return out


# the power column of every effect table; POWER_NOTE says how it is computed in each caption
DETECTABLE = "detectable (80% power)"
POWER_NOTE = (
    "detectable: the smallest mean difference a paired t-test at 0.05 would find 4 times in 5 with these pairs "
    "and their spread (statsmodels' TTestPower); an effect below it may exist unseen"
)


CONTRAST_CAPTION = (
    "each trial is matched with the trial of the reference level that agrees on the seed and on every other "
    "varied key; trend: the least-squares slope over the factor's levels within each such block, per unit of "
    "the factor; tests: paired t-test below 10 pairs, Wilcoxon signed-rank from 10, none below 3; Holm p: "
    "adjusted over every contrast, trend and interaction of this report's factors together; " + POWER_NOTE
)


def _effect_rows(effects) -> list[list]:
    """A table row per paired effect (a regularizer's, or a factor level's against its reference)."""
    return [
        [
            e.regularizer,
            metric_label(e.metric),
            e.n_pairs,
            fmt(e.mean_diff, 4),
            f"[{e.ci_low:.4f}, {e.ci_high:.4f}]" if e.ci_low is not None else "-",
            e.test or e.note,
            f"{e.p_value:.3g}" if e.p_value is not None else "-",
            f"{e.p_holm:.3g}" if e.p_holm is not None else "-",
            fmt(e.detectable, 4) if e.detectable is not None else "-",
        ]
        for e in effects
    ]


def _contrast_table(c) -> Table:
    return Table(
        f"contrast_{c.factor}",
        f"Paired effect of {c.factor}: each level minus {c.reference} ({c.why})",
        ["contrast", "metric", "pairs", "mean difference", "95% CI", "test", "p-value", "Holm p", DETECTABLE],
        _effect_rows(c.effects + c.trend),
        CONTRAST_CAPTION
        + (f"; {len(c.pairing.unpaired)} trial(s) without a twin left out" if c.pairing.unpaired else ""),
    )


def _contrast_forest(c, task: str) -> FigureSpec | None:
    difference = f"each level minus {c.factor} = {c.reference} (same seed and other factors)"
    data = fd.forest(c.pairing, c.effects, for_task(HEADLINE, task), difference)
    if data is None:
        return None
    return FigureSpec(
        f"forest_{c.factor}",
        f"What {c.factor} did, against {c.reference}",
        f"each level minus the trial at {c.factor} = {c.reference} with the same seed and the same other factors: "
        "diamond = mean, bar = 95% confidence interval (dark where it excludes 0), dots = single pairs",
        figures.draw_forest,
        data,
    )


FLATNESS_READINGS = ("flatness_calibrated_per_class", "flatness_calibrated")


def _flatness_readable(usable: pd.DataFrame, pairing: Pairing | None) -> bool | None:
    """Whether every class of every trial in ``pairing`` could show a bend (None: not recorded)."""
    if pairing is None or pairing.pairs.empty or "flatness_resolved_per_class" not in usable:
        return None
    names = set(pairing.pairs["trial"]) | set(pairing.pairs["baseline"])
    values = usable.loc[usable["trial"].isin(names), "flatness_resolved_per_class"].dropna()
    return bool((values >= 1.0).all()) if len(values) else None


def _contrast_findings(
    c,
    task: str,
    readable: bool | None = None,
    features: dict[str, np.ndarray] | None = None,
    seeds: MeanCI | None = None,
) -> list[str]:
    """A factor's contrasts in words: the headline effects whose interval excludes 0 and whose Holm p is below
    ALPHA; else that none was detected, and how many pairs that rests on. Where the classes could not show a
    bend (``readable`` False), a flatness difference is no finding: it is left out, and the sentence says so.
    With ``features`` each level's representation is held against its reference twins' and a new seed's."""
    headline = for_task(HEADLINE, task)
    unread = " Flatness is left out: these trials' classes could not show a bend." if readable is False else ""
    similarity = twin_similarity(c.pairing, features) if features else {}
    moved = "".join(
        _similarity_text(ci, seeds, f"its twin at {c.reference}", f"Representation ({label})")
        for label, ci in similarity.items()
    )
    unread += moved
    if readable is False:
        headline = tuple(m for m in headline if m not in FLATNESS_READINGS)
    shown = [e for e in c.effects + c.trend if e.metric in headline and e.mean_diff is not None]
    if not shown:
        return [f"**{c.factor}** (against {c.reference}):{moved}"] if moved else []
    detected = [
        e
        for e in shown
        if e.ci_low is not None and (e.ci_low > 0 or e.ci_high < 0) and e.p_holm is not None and e.p_holm < ALPHA
    ]
    n = max(e.n_pairs for e in shown)
    if not detected:
        first = next((e for e in shown if e.detectable is not None), None)
        unseen = (
            f" (with this spread, a {METRICS[first.metric].label} change below "
            f"{first.detectable * METRICS[first.metric].scale:.{METRICS[first.metric].digits}f}"
            f"{METRICS[first.metric].unit} is found less than 4 times in 5)"
            if first is not None and first.metric in METRICS
            else ""
        )
        return [
            f"**{c.factor}** (against {c.reference}, {n} pairs): no headline effect detected after Holm's "
            "adjustment; an interval that holds 0 does not show that the factor does nothing, only that "
            f"this many seeds cannot tell{unseen}.{unread}"
        ]
    parts = "; ".join(f"{e.regularizer}: {_effect_text(e.metric, e, None)}" for e in detected)
    return [f"**{c.factor}** (against {c.reference}, {n} pairs): {parts}.{unread}"]


def _interaction_findings(interactions, task: str, readable: bool | None = None) -> list[str]:
    """Interactions on a headline metric whose interval excludes 0 and whose Holm p is below ALPHA (flatness
    only where the classes could show a bend)."""
    headline = for_task(HEADLINE, task)
    if readable is False:
        headline = tuple(m for m in headline if m not in FLATNESS_READINGS)
    found = [
        e
        for e in interactions
        if e.metric in headline
        and e.ci_low is not None
        and (e.ci_low > 0 or e.ci_high < 0)
        and e.p_holm is not None
        and e.p_holm < ALPHA
    ]
    return [f"**Interaction** {e.regularizer}: {_effect_text(e.metric, e, None)}." for e in found]


@dataclass
class StudyEffects:
    """Every paired answer a study gives: the regularizers' (Holm within their table), and each factor's
    contrasts and trends with the interactions (Holm over those together)."""

    pairing: Pairing
    effects: list  # PairedEffect per regularizer variant and metric
    contrasts: list = field(default_factory=list)  # FactorContrasts per varied factor outside regularizer.*
    crossed: Pairing | None = None  # the blocks of the interactions
    interactions: list = field(default_factory=list)  # PairedEffect per pair of factors' levels and metric

    def every_effect(self) -> list:
        return self.effects + [e for c in self.contrasts for e in c.effects + c.trend] + self.interactions


def study_effects(study: StudyData) -> StudyEffects:
    usable, task, plan = study.usable, study.task, study.plan
    # the pairs also carry whether the classes were resolved; that share is no effect to test
    pairing = pair_with_baselines(usable, for_task(SUMMARY, task) + ("flatness_resolved_per_class", "reg_loss_max"))
    out = StudyEffects(pairing, paired_effects(pairing, for_task(SUMMARY, task)))
    if study.factors and not (plan and plan.optuna):
        references = plan.reference if plan else {}
        out.contrasts = factor_contrasts(usable, study.factors, for_task(SUMMARY, task), references, adjust=False)
        out.crossed, out.interactions = factor_interactions(usable, study.factors, for_task(SUMMARY, task), references)
        adjust_together([e for c in out.contrasts for e in c.effects + c.trend] + out.interactions)
    return out


def detect_table(answers: StudyEffects, detect: dict[str, float], seeds: int) -> Table:
    """For each effect on a metric the user named: the pairs a paired t-test needs to find a change of the named
    size 4 times in 5, from the spread of that effect's differences, and the seeds that makes (an effect with
    more pairs than the study has seeds pairs each seed once per setting of the other factors)."""
    rows = []
    for metric, size in detect.items():
        for e in answers.every_effect():
            if e.metric != metric or e.sd_diff is None:
                continue
            pairs = seeds_to_detect(size, e.sd_diff)
            per_seed = max(1.0, e.n_pairs / max(1, seeds))
            row = [e.regularizer, metric_label(metric), fmt(size, 4), fmt(e.sd_diff, 4), e.n_pairs, seeds]
            rows.append(row + [pairs, math.ceil(pairs / per_seed) if pairs is not None else "-"])
    return Table(
        "detect",
        "Seeds needed to detect a change of the size you named",
        ["effect", "metric", "change", "SD of differences", "pairs now", "seeds now", "pairs needed", "seeds needed"],
        rows,
        "two-sided paired t-test at 0.05 with 80% power (statsmodels' TTestPower), from the SD of each effect's "
        "paired differences in this study; seeds needed: the pairs needed over the pairs each seed gives now; "
        "an effect without a spread (fewer than 2 pairs) is left out",
    )


def build_report(study: StudyData, detect: dict[str, float] | None = None) -> Report:
    """Everything the report shows, computed (no drawing, no files written)."""
    frame, usable = study.frame, study.usable
    plan = study.plan
    status = {s: int(n) for s, n in frame["status"].value_counts(sort=False).items() if n}
    problems = frame[frame["status"].isin([s.value for s in TrialStatus if not s.usable])]
    problem_table = Table(
        "problems",
        "Trials without final results",
        ["trial", "status", "epochs", "reason"],
        [[r["trial"], r["status"], r.get("epochs"), r.get("error") or ""] for _, r in problems.iterrows()],
        "failed trials keep their reason; interrupted and missing ones can be finished with `geotune resume STUDY_DIR`",
    )
    answers = study_effects(study)
    pairing, effects = answers.pairing, answers.effects
    report = Report(
        title=(
            "geotune studies: " + " + ".join(Path(d).name for d in study.sources)
            if study.sources
            else f"geotune study: {plan.space if plan else Path(study.study_dir).name}"
        ),
        question=plan.question if plan else "",
        plan_rows=_plan_rows(study),
        status=status,
        problems=problem_table,
        best=_best(study),
        findings=[],
        summary=frame,
    )
    factors, task = study.factors, study.task
    # each trial's latents.npz read once, for the findings' CKA, the CKA table and its matrix (none in segmentation)
    features = trial_features(usable) if factors and task != "segmentation" and not usable.empty else {}
    seed_cka = seed_similarity(usable, factors, features) if features else None
    report.findings = _findings(effects, pairing, task, twin_similarity(pairing, features), seed_cka)
    report.findings[:0] = [f"**Part of the study could not be read**: {problem}." for problem in study.problems]
    recovered = _recovery_note(frame)
    if recovered:
        report.findings.insert(len(study.problems), recovered)
    note = _resolution_note(usable)
    if note:
        report.findings.insert(len(report.findings) - (1 if pairing.unpaired else 0), note)
    if usable.empty:
        report.findings = [_nothing_finished(problems, study.study_dir)]

    variant_bars: FigureSpec | None = None
    if factors and not (plan and plan.optuna) and not usable.empty:
        every = SUMMARY + PERFORMANCE + GEOMETRY + STRUCTURE + NEURAL_COLLAPSE
        cells = group_summary(usable, factors, for_task(tuple(dict.fromkeys(every)), task))
        title = "mIoU, Dice and loss per variant" if task == "segmentation" else "Accuracy and loss per variant"
        report.tables.append(summary_table("groups_performance", title, cells, for_task(PERFORMANCE, task), CI_CAPTION))
        report.tables.append(
            summary_table("groups_geometry", "Latent geometry within classes per variant", cells, GEOMETRY, CI_CAPTION)
        )
        report.tables.append(
            summary_table(
                "groups_structure",
                "Class structure and whole-set geometry per variant",
                cells,
                STRUCTURE,
                CI_CAPTION + "; the whole-set flatness mixes how class clusters connect with curvature",
            )
        )
        if any(name in usable and usable[name].notna().any() for name in NEURAL_COLLAPSE):
            report.tables.append(
                summary_table(
                    "groups_collapse",
                    "Neural collapse per variant",
                    cells,
                    NEURAL_COLLAPSE,
                    CI_CAPTION + "; on the measured embeddings (logging.geometry_split) with the network's own "
                    "predictions; 0 is complete collapse (Papyan, Han & Donoho 2020): NC1 within-class spread "
                    "against the class means' spread, NC2 the means' norms and angles against a simplex, NC3 a "
                    "linear head's rows against the means (- for an mlp head), NC4 the share of points the network "
                    "decides unlike the nearest class mean",
                )
            )
        shifts = representation_table(usable, factors, features)
        if shifts is not None:
            report.tables.append(shifts)
        costs = group_summary(usable, factors, COST)
        report.tables.append(cost_table(costs))
        bars = fd.variant_bars(
            cells.merge(costs[["group", "num_parameters_mean", "num_parameters_ci_low", "num_parameters_ci_high"]]),
            (score_of("test_accuracy", task), "num_parameters"),
        )
        if bars is not None:
            shown = (
                f"the {len(bars.variants)} variants highest in the first panel ({bars.left_out} more in the tables); "
            )
            variant_bars = FigureSpec(
                "variant_bars",
                "Accuracy and size of each variant",
                (shown if bars.left_out else "")
                + "mean over the variant's seeds; whisker: 95% confidence interval of the mean (none for one trial); "
                "overlapping whiskers are no test of a difference (the paired tables are)",
                figures.draw_variant_bars,
                bars,
            )
        if len(factors) > 1:
            for factor, table in factor_tables(usable, factors).items():
                report.tables.append(
                    summary_table(
                        f"factor_{factor}",
                        f"By {factor} (averaged over the other factors)",
                        table,
                        list(for_task(BY_FACTOR, task)),
                        CI_CAPTION,
                    )
                )
    if effects:
        report.tables.append(
            Table(
                "paired",
                "Paired effect of regularization (regularized minus its baseline)",
                [
                    "regularizer",
                    "metric",
                    "pairs",
                    "mean difference",
                    "95% CI",
                    "test",
                    "p-value",
                    "Holm p",
                    DETECTABLE,
                ],
                _effect_rows(effects),
                "each regularized trial is matched with the unregularized trial that equals it in every other "
                "config key (seed and data included); tests: paired t-test below 10 pairs, Wilcoxon signed-rank "
                "from 10, none below 3; Holm p: adjusted for all the tests of this table together; " + POWER_NOTE,
            )
        )
    report.paired = comparison_report(pairing, effects, single_pair(pairing, frame))
    report.figures = _figure_specs(study, usable, features) + ([variant_bars] if variant_bars is not None else [])
    contrasts, crossed, interactions = answers.contrasts, answers.crossed, answers.interactions
    if contrasts or interactions:
        report.findings += [
            line
            for c in contrasts
            for line in _contrast_findings(c, task, _flatness_readable(usable, c.pairing), features, seed_cka)
        ]
        report.findings += _interaction_findings(interactions, task, _flatness_readable(usable, crossed))
        report.tables += [_contrast_table(c) for c in contrasts if c.effects]
        forests = [spec for c in contrasts if (spec := _contrast_forest(c, task))]
        if interactions:
            report.tables.append(
                Table(
                    "interactions",
                    "Interactions: does one factor's effect depend on another's level?",
                    [
                        "interaction",
                        "metric",
                        "blocks",
                        "mean difference of differences",
                        "95% CI",
                        "test",
                        "p-value",
                        "Holm p",
                        DETECTABLE,
                    ],
                    _effect_rows(interactions),
                    "A=a x B=b: within each block of trials that agree on the seed and every other factor, "
                    "(a, b) - (a0, b) - (a, b0) + (a0, b0), a0 and b0 the reference levels of the factor tables; "
                    "0 means the factors add up; Holm p: adjusted with every contrast and trend of this report; "
                    + POWER_NOTE,
                )
            )
            data = (
                fd.forest(crossed, interactions, for_task(HEADLINE, task), "difference of differences (same seed)")
                if crossed is not None
                else None
            )
            if data is not None:
                forests.append(
                    FigureSpec(
                        "forest_interactions",
                        "Interactions: where one factor's effect depends on another",
                        "each row: how much more (or less) the first factor changed the metric at the second "
                        "factor's level than at its reference; diamond = mean, bar = 95% CI, dots = single blocks",
                        figures.draw_forest,
                        data,
                    )
                )
        report.figures = forests + report.figures
    forest = fd.forest(pairing, effects, for_task(HEADLINE, task))
    if forest is not None:
        report.forest = FigureSpec(
            "forest",
            "What each regularizer did, and how sure we are",
            "paired difference to the baseline with the same seed and data: diamond = mean, bar = 95% confidence "
            "interval (dark where it excludes 0), dots = single pairs; dashed line = no effect",
            figures.draw_forest,
            forest,
        )
    per_class = best_per_class_table(report.best) if task == "classification" else None
    if per_class is not None and per_class.rows:
        report.tables.append(per_class)
    if detect:
        seeds = int(usable["train.seed"].nunique()) if "train.seed" in usable else 1
        report.tables.append(detect_table(answers, detect, seeds))
    return report


def _figure_specs(study: StudyData, usable: pd.DataFrame, features: dict[str, np.ndarray]) -> list[FigureSpec]:
    """``features``: the trials' embeddings of the same test images (``trial_features``), for the CKA matrix."""
    specs: list[FigureSpec] = []
    if usable.empty:
        return specs
    factors, task = study.factors, study.task
    eda = read_json(Path(study.study_dir) / DATASET_EDA_FILE) if study.study_dir else None
    if isinstance(eda, dict) and "variants" in eda:
        specs.append(
            FigureSpec(
                "dataset_eda",
                "The data set",
                f"computed once for the study's base config ({eda['configured'].replace('_', ' ')}) and with "
                "dataset.shapes_seg.fully_inside flipped, same seed: class areas (the background's share sets "
                "how much a loss must re-weight), overlaps and hidden parts",
                figures.draw_dataset_eda,
                eda,
            )
        )
    samples = fd.best_trial_panels(usable, [], study.metric, study.mode, "data_samples.png")
    if samples:
        specs.append(
            FigureSpec(
                "data_samples",
                "The training images",
                "the best trial's training images as its model received them (one per class), and copies through "
                "its augmentation; each trial folder's data_samples.png shows its own",
                lambda d: figures.draw_image_grid(d, columns=1),
                samples,
            )
        )
    histories = load_histories(usable)
    if histories:
        score = score_of("val_accuracy", task)
        curves = fd.curve_bands(usable, histories, factors, (score, "val_loss"), metric=study.metric, mode=study.mode)
        specs.append(
            FigureSpec(
                "training_curves",
                "Training curves",
                f"{metric_label(score)} and validation loss per epoch, "
                f"grouped by {curves.grouped_by}; line = median over the group's trials (seeds), "
                "band = interquartile range",
                figures.draw_curve_bands,
                curves,
            )
        )
        per_epoch = (
            (
                "collapse_curves",
                "Neural collapse per epoch",
                NEURAL_COLLAPSE_EPOCH,
                "the validation features after each epoch: NC1 (within-class over between-class spread), NC2 (the "
                "class means' angles against a simplex) and NC4 (share decided unlike the nearest class mean), each "
                "0 at complete collapse",
            ),
            (
                "geometry_curves",
                "Latent geometry per epoch",
                EPOCH,
                "the validation embeddings measured every logging.embedding_metrics_every epochs (a cheaper subset: "
                "no resolution check, and the last epoch is left to the final measurement in the tables)",
            ),
        )
        for key, title, names, what in per_epoch:
            bands = fd.curve_bands(usable, histories, factors, names, metric=study.metric, mode=study.mode)
            if bands.keys:
                caption = f"{what}; grouped by {bands.grouped_by}; line = median over the group's trials, band = IQR"
                draw = functools.partial(figures.draw_curve_bands, title=f"{title.lower()} by {bands.grouped_by}")
                specs.append(FigureSpec(key, title, caption, draw, bands))
    for view in FACTOR_VIEWS:
        spec = factor_view(view, usable, factors, task)
        if spec is not None:
            specs.append(spec)
    flat_key = "flatness_calibrated_per_class"
    if flat_key in usable and usable[flat_key].notna().any():
        colour = regularizer_label(usable) if "regularizer.name" in usable else pd.Series("all", index=usable.index)
        if colour.nunique() > SCATTER_MAX_COLOURS:  # a legend of hundreds of settings reads as none
            colour = (
                usable["regularizer.name"].astype(str) if "regularizer.name" in usable else colour.map(lambda _: "all")
            )
        score = score_of("test_accuracy", task)
        specs.append(
            FigureSpec(
                "accuracy_vs_flatness",
                ("Test mIoU" if task == "segmentation" else "Accuracy") + " against flatness within classes",
                "one point per trial, coloured by regularizer; flatness 1 = every class is flat "
                "(straight segments between its points stay on it)",
                lambda d: figures.draw_scatter(d, f"{metric_label(score)} vs flatness within classes"),
                fd.metric_scatter(usable, flat_key, score, colour),
            )
        )
    if histories:
        groups = fd.grad_norm_groups(usable, histories, factors, study.metric, study.mode)
        if groups:
            specs.append(
                FigureSpec(
                    "grad_norms",
                    "Gradient norms per layer",
                    "log10 of the mean per-layer gradient L2 norm, layers x epochs, shared scale",
                    figures.draw_grad_norm_groups,
                    groups,
                )
            )
    layers = fd.layer_curves(usable, factors, study.metric, study.mode)
    if layers is not None:
        left_out = f"; measured at other layers, left out: {', '.join(layers.left_out)}" if layers.left_out else ""
        specs.append(
            FigureSpec(
                "layer_geometry",
                "Geometry layer by layer",
                "outputs of the input and each layer in logging.geometry_layers on the measured images "
                "(logging.geometry_split; one vector per image as logging.layer_features says, flattened by "
                "default, wide ones randomly projected) against relative depth (share of the weight layers "
                f"applied); dashed: the input's dimension; grouped by {layers.grouped_by}; line = mean over the "
                f"group's trials, band = 95% CI{left_out}",
                lambda d: figures.draw_layer_curves(d.layers, d.panels, d.depths),
                layers,
            )
        )
    best_images = (  # (key, file in each group's best trial, title, caption, panels needed)
        (
            "latent_projections",
            "umap.png",
            "Latent space of each group's best trial",
            f"2-D projection of the measured embeddings of the best trial (by {study.metric}) per group",
            1,
        ),
        (
            "confusion_matrices",
            "confusion_matrix.png",
            "Confusion matrix of each group's best trial",
            f"on the test split, best trial by {study.metric} per group (rows: true class, columns: predicted); "
            "the per-class table below gives the best trial's scores",
            1 if task != "segmentation" else math.inf,
        ),
        (
            "activations",
            "activations.png",
            "First-layer activations across variants",
            "each group's best trial: the same validation images (the first of each class) and the first "
            "channels of logging.activation_layer (the first convolution unless set), scaled per channel",
            2,
        ),
    )
    for key, image, title, caption, needed in best_images:
        panels = fd.best_trial_panels(usable, factors, study.metric, study.mode, image)
        if len(panels) >= needed:
            specs.append(FigureSpec(key, title, caption, figures.draw_image_grid, panels))
    similarity = fd.cka_matrix_data(usable, factors, features) if features else None
    if similarity is not None:
        left_out = f"; {similarity.left_out} more trials not drawn" if similarity.left_out else ""
        specs.append(
            FigureSpec(
                "cka_matrix",
                "Representation similarity between trials (linear CKA)",
                "the trials' embeddings of the same first test images, ordered by variant and seed: blocks along "
                "the diagonal are one variant's seeds; the table *Representation similarity* reads them per "
                f"factor{left_out}",
                figures.draw_cka_matrix,
                similarity,
            )
        )
    outputs = fd.output_examples(usable, factors, study.metric, study.mode, TEST_EXAMPLES_FILE)
    if outputs is not None:
        specs.append(
            FigureSpec(
                "output_examples",
                "Output probabilities and raw logits across variants",
                "the same test images through each group's best trial (by "
                f"{study.metric}): softmax gives every class some probability, sparsemax sets most to exactly 0; "
                "the logits show whether a variant's margin or only its output layer differs",
                figures.draw_output_examples,
                outputs,
            )
        )
    if study.plan is not None and len(study.plan.objectives) == 2:
        front = fd.pareto_front(usable, study.plan.objectives)
        if front is not None:
            specs.append(
                FigureSpec(
                    "pareto",
                    "Pareto front",
                    f"finished trials on {front.names[0]} and {front.names[1]}; on the front (red, named by "
                    "index), no other trial is at least as good on both and better on one; a single study's "
                    "front: another seed can move it",
                    figures.draw_pareto,
                    front,
                )
            )
    if study.plan is not None and study.plan.optuna:
        db = Path(study.study_dir) / OPTUNA_FILE
        views = (
            fd.optuna_views(optuna_url(study.study_dir), (study.plan.name, study.plan.space)) if db.is_file() else None
        )
        if views is not None:
            specs.append(
                FigureSpec(
                    "optuna",
                    "Optuna search",
                    f"importances by {views.evaluator}; history; parallel coordinates of the sampled parameters",
                    figures.draw_optuna,
                    views,
                )
            )
    return specs


# ---------------------------------------------------------------------------
# rendering


NO_FIGURES_NOTE = "Figures not drawn (--no-figures): `geotune report` on the study draws them."


def _markdown(report: Report, figure_files: dict[str, str] | None) -> str:
    """REPORT.md; ``figure_files`` (key -> path relative to it) is None where the figures were not drawn."""
    lines = [f"# {report.title}", ""]
    if report.question:
        lines += [f"**Question:** {report.question}", ""]
    if figure_files is None:
        lines += [f"_{NO_FIGURES_NOTE}_", ""]
    if report.forest is not None and figure_files is not None:
        f = report.forest
        lines += [f"## {f.title}", "", f"![{f.title}]({figure_files[f.key]})", "", f"_{f.caption}_", ""]
    lines += ["## Findings", ""] + [f"- {f}" for f in report.findings] + [""]
    lines += ["## Plan", "", markdown_table(["", ""], report.plan_rows), ""]
    lines += ["## Trials", "", ", ".join(f"{n} {s}" for s, n in report.status.items()), ""]
    if report.problems.rows:
        lines += [
            f"### {report.problems.title}",
            "",
            markdown_table(report.problems.headers, report.problems.rows),
            "",
            f"_{report.problems.caption}_",
            "",
        ]
    if report.best:
        b = report.best
        lines += [
            "## Best configuration",
            "",
            f"`{b['trial']}`: {b['metric']} {b['value']:.4f}, {metric_label(b['test_metric'])} "
            f"{fmt(b['test_value'], 4)}; " + ", ".join(f"`{k}` = {v}" for k, v in b["config"].items()),
            "",
            f"- checkpoint: `{b['checkpoint']}`",
            f"- weights: `{b['weights']}`",
            f"- config: `{b['config_file']}`",
            "",
        ]
    for table in report.tables:
        lines += [f"## {table.title}", "", markdown_table(table.headers, table.rows), "", f"_{table.caption}_", ""]
    drawn = [] if figure_files is None else [(spec, figure_files[spec.key]) for spec in report.figures]
    for spec, file in drawn:
        lines += [f"## {spec.title}", "", f"![{spec.title}]({file})", "", f"_{spec.caption}_", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.85em}th,td{border:1px solid #ccc;padding:.3em .6em;
text-align:left}th{background:#f0f3f7}img{max-width:100%;border:1px solid #eee}.caption{color:#555;font-size:.85em}
nav a{margin-right:1em}code{background:#f4f4f4;padding:0 .2em}"""


def _html_table(table_headers, rows) -> str:
    """A table of the page: its first HTML_TABLE_MAX_ROWS rows, and where the rest are (tables.md has all)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in table_headers)
    shown = rows[:HTML_TABLE_MAX_ROWS]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in shown)
    rest = (
        f"<p class='caption'>the first {len(shown)} of {len(rows)} rows; every row is in tables.md</p>"
        if len(rows) > len(shown)
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{rest}"


def _inline(text: str) -> str:
    """Markdown **bold** and `code` of the findings, escaped."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


HTML_TABLE_MAX_ROWS = 150  # index.html shows at most this many rows of a table (tables.md, REPORT.md: all)
HTML_FINDINGS_MAX = 40  # and at most this many findings (REPORT.md: all), the last two always among them
SCATTER_MAX_COLOURS = 12  # beyond this many regularizer settings a scatter is coloured by regularizer alone
THUMBNAIL_BOX = (1250, 5000)  # index.html embeds figures at most this size (the page's width); a click: full size


def thumbnail_png(file: Path) -> bytes:
    """The figure as index.html embeds it: within THUMBNAIL_BOX and on a 256-colour palette (a study with many
    trials or wide mosaics stays a page of a few MB; figures/ keeps every figure at full size)."""
    from PIL import Image  # deferred: Pillow (matplotlib's own dependency) for the page's thumbnails only

    with Image.open(file) as image:
        image = image.convert("RGB")
        image.thumbnail(THUMBNAIL_BOX, Image.Resampling.LANCZOS)
        # the fast octree: half the time of median cut with zlib's extra pass, and smaller files (plots are few
        # colours and their anti-aliasing)
        small = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        out = io.BytesIO()
        small.save(out, format="PNG")
    return out.getvalue()


def _html_figure(spec: FigureSpec, file: Path) -> str:
    data = base64.b64encode(thumbnail_png(file)).decode()
    return (
        f"<h2 id='{spec.key}'>{html.escape(spec.title)}</h2>"
        # a click opens the figure at full size (figures/ beside index.html): a wide one is shrunk to the page
        f"<a href='figures/{html.escape(file.name)}' target='_blank' title='full size'>"
        f"<img alt='{html.escape(spec.title)}' src='data:image/png;base64,{data}'></a>"
        f"<p class='caption'>{html.escape(spec.caption)} (click the figure for full size)</p>"
    )


def _html(report: Report, figure_files: dict[str, Path] | None) -> str:
    """index.html; ``figure_files`` (key -> PNG) is None where the figures were not drawn."""
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
        f"<style>{CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"
    ]
    if report.question:
        parts.append(f"<p><strong>Question:</strong> {html.escape(report.question)}</p>")
    if figure_files is None:
        parts.append(f"<p class='caption'>{_inline(NO_FIGURES_NOTE)}</p>")
    drawn = [] if figure_files is None else [(spec, figure_files[spec.key]) for spec in report.figures]
    nav = (
        (["forest"] if report.forest and figure_files is not None else [])
        + ["findings", "plan", "trials"]
        + (["best"] if report.best else [])
        + [t.key for t in report.tables]
        + [spec.key for spec, _ in drawn]
    )
    parts.append("<nav>" + "".join(f"<a href='#{k}'>{k.replace('_', ' ')}</a>" for k in nav) + "</nav>")
    if report.forest is not None and figure_files is not None:
        parts.append(_html_figure(report.forest, figure_files[report.forest.key]))
    findings = [_inline(f) for f in report.findings]
    if len(findings) > HTML_FINDINGS_MAX:  # hundreds of settings: the page keeps the general ones, REPORT.md all
        more = len(findings) - HTML_FINDINGS_MAX
        findings = (
            findings[: HTML_FINDINGS_MAX - 2] + [f"<em>... {more} more findings in REPORT.md</em>"] + findings[-2:]
        )
    parts.append("<h2 id='findings'>Findings</h2><ul>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>")
    parts.append("<h2 id='plan'>Plan</h2>" + _html_table(["", ""], report.plan_rows))
    parts.append(
        "<h2 id='trials'>Trials</h2><p>" + html.escape(", ".join(f"{n} {s}" for s, n in report.status.items())) + "</p>"
    )
    if report.problems.rows:
        parts.append(
            f"<h3>{html.escape(report.problems.title)}</h3>"
            + _html_table(report.problems.headers, report.problems.rows)
            + f"<p class='caption'>{_inline(report.problems.caption)}</p>"
        )
    if report.best:
        b = report.best
        config = ", ".join(f"<code>{html.escape(k)}</code> = {html.escape(str(v))}" for k, v in b["config"].items())
        parts.append(
            f"<h2 id='best'>Best configuration</h2><p><code>{html.escape(b['trial'])}</code>: "
            f"{html.escape(b['metric'])} {b['value']:.4f}, {metric_label(b['test_metric'])} "
            f"{fmt(b['test_value'], 4)}; "
            f"{config}</p><ul><li>checkpoint: <code>{html.escape(str(b['checkpoint']))}</code></li>"
            f"<li>weights: <code>{html.escape(str(b['weights']))}</code></li>"
            f"<li>config: <code>{html.escape(b['config_file'])}</code></li></ul>"
        )
    for table in report.tables:
        parts.append(
            f"<h2 id='{table.key}'>{html.escape(table.title)}</h2>"
            + _html_table(table.headers, table.rows)
            + f"<p class='caption'>{html.escape(table.caption)}</p>"
        )
    for spec, file in drawn:
        parts.append(_html_figure(spec, file))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    study_dir: str | Path | list, out_dir: str | Path | None = None, detect: dict[str, float] | None = None
) -> Path:
    """Load a study (or several, reported as one), build its report and write it; returns index.html's path.
    Several studies write into the first one's ``report_combined/`` unless ``out_dir`` says otherwise;
    ``detect`` (metric -> change) adds the seeds each effect would need to detect that change."""
    dirs = list(study_dir) if isinstance(study_dir, list) else [study_dir]
    return save_report(build_report(load_studies(dirs), detect), report_folder(dirs, out_dir))


def report_folder(dirs: list, out_dir: str | Path | None = None) -> Path:
    """Where a report goes: ``out_dir``, else STUDY_DIR/report (several studies: the first's report_combined)."""
    return Path(out_dir) if out_dir else Path(dirs[0]) / (REPORT_DIR if len(dirs) == 1 else f"{REPORT_DIR}_combined")


def save_report(report: Report, out: Path, draw_figures: bool = True) -> Path:
    """Write a built report into ``out``: summary.csv, tables.md, comparison_report.json, the figures, REPORT.md
    and index.html (returned). Without ``draw_figures`` (--no-figures: the figures are most of a small study's
    report, 7-11 of them in 1.7-4.6 CPU-s) the rest is written and says so; figures/ goes, so that what is in it
    always belongs to the REPORT.md beside it."""
    if not draw_figures:
        shutil.rmtree(out / "figures", ignore_errors=True)
    (out / "figures" if draw_figures else out).mkdir(parents=True, exist_ok=True)
    report.summary.to_csv(out / "summary.csv", index=False)
    (out / "tables.md").write_text(
        "\n\n".join([f"## {t.title}\n\n{markdown_table(t.headers, t.rows)}\n\n_{t.caption}_" for t in report.tables])
        + "\n"
    )
    write_comparison_report(out, report.paired)
    files: dict[str, Path] | None = None
    if draw_figures:
        files = {
            spec.key: figures.save_figure(spec.draw(spec.data), out / "figures" / f"{spec.key}.png")
            for spec in ([report.forest] if report.forest is not None else []) + report.figures
        }
    linked = None if files is None else {k: f"figures/{p.name}" for k, p in files.items()}
    (out / "REPORT.md").write_text(_markdown(report, linked))
    index = out / "index.html"
    index.write_text(_html(report, files))
    return index
