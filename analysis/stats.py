"""Statistics of a study: group summaries with confidence intervals, paired regularizer effects, and the
paired contrasts of any varied factor.

Pure functions of DataFrames (as ``analysis.load`` builds them), so they are
tested on synthetic trials. Confidence intervals are two-sided 95% intervals of a
mean from the t distribution with n-1 degrees of freedom; a single value has none.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from geotune.analysis.similarity import linear_cka
from geotune.metric_names import SUMMARY

MIN_PAIRS_FOR_TEST = 3  # below this a paired test says nothing: report the differences only
MIN_PAIRS_FOR_WILCOXON = 10  # below this Wilcoxon's exact p-value cannot reach small values: use the t-test


@dataclass
class MeanCI:
    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None


@functools.lru_cache(maxsize=256)
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile; cached, because scipy's distribution call costs about 5 ms and a report asks
    the same few (level, n) many times."""
    from scipy import stats  # deferred: scipy.stats costs 0.9 s to import; only CIs and tests need it

    return float(stats.t.ppf(q, df))


def mean_ci(values: Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean, sample std (ddof=1) and the t-based confidence interval of the mean; NaNs are dropped."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    n = len(x)
    if n == 0:
        return MeanCI(0, None, None, None, None)
    mean = float(x.mean())
    if n == 1:
        return MeanCI(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def group_label(row: pd.Series, keys: Sequence[str]) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(row[k])}" for k in keys) or "all"


def _short(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "base"  # a key this trial's arm does not vary: the space's base value
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def group_summary(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str] = SUMMARY) -> pd.DataFrame:
    """One row per group of ``by`` values: n and, per metric, mean, std, ci_low, ci_high over the group's trials."""
    rows = []
    if frame.empty:
        return pd.DataFrame(columns=["group", "n", *by])
    for values, part in frame.groupby(list(by), sort=True, dropna=False, observed=True) if by else [((), frame)]:
        values = values if isinstance(values, tuple) else (values,)
        row = {"group": group_label(part.iloc[0], by), "n": len(part)}
        row.update(dict(zip(by, values)))
        for metric in metrics:
            summary = mean_ci(part[metric].tolist() if metric in part else [])
            row.update(
                {
                    f"{metric}_mean": summary.mean,
                    f"{metric}_std": summary.std,
                    f"{metric}_ci_low": summary.ci_low,
                    f"{metric}_ci_high": summary.ci_high,
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def factor_tables(
    frame: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str] = SUMMARY
) -> dict[str, pd.DataFrame]:
    """For each varied factor, its groups averaged over seeds and over the other factors."""
    return {factor: group_summary(frame, [factor], metrics) for factor in factors}


# ---------------------------------------------------------------------------
# pairing regularized trials with their baselines


def is_baseline(frame: pd.DataFrame) -> pd.Series:
    """Trials that trained without a penalty: their ``regularized`` column is false.

    The column is ``RegularizerConfig.active`` (``load_study`` writes it from each trial's config;
    metrics.json carries the same): a regularizer named but at lambda_reg 0, disabled or at weight 0
    is a baseline. A frame without the column has no regularized trial.
    """
    regularized = frame.get("regularized", pd.Series(False, index=frame.index))
    return ~regularized.fillna(False).astype(bool)


def regularizer_label(frame: pd.DataFrame) -> pd.Series:
    """'geodesic' or 'geodesic, lambda_reg=0.2, n_neighbors=5': the name plus the regularizer settings that vary."""
    reg_cols = [c for c in frame.columns if c.startswith("regularizer.") and c != "regularizer.name"]
    active = frame[~is_baseline(frame)]
    groups = [part for _, part in active.groupby("regularizer.name", observed=True)] if reg_cols else []
    varying = [col for col in reg_cols if any(part[col].astype(str).nunique() > 1 for part in groups)]
    labels = []
    for row in _records(frame, ["regularizer.name", *varying]):
        parts = [str(row.get("regularizer.name", "none"))]
        section = f"regularizer.{row.get('regularizer.name')}."
        parts += [
            f"{c.rsplit('.', 1)[-1]}={_short(row[c])}"
            for c in varying
            if c.startswith(section) or not c.startswith(("regularizer.geodesic.", "regularizer.geometry."))
        ]
        labels.append(", ".join(parts))
    return pd.Series(labels, index=frame.index)


def pair_key_columns(frame: pd.DataFrame) -> list[str]:
    """Everything that must be equal for two trials to be a pair: every config key outside regularizer.*"""
    return [c for c in frame.columns if "." in c and not c.startswith("regularizer.")]


@dataclass
class Pairing:
    pairs: pd.DataFrame  # one row per regularized trial with its baseline: trial, baseline, label, key, diffs
    unpaired: list[str]  # regularized trials without exactly one matching baseline


def pair_with_baselines(frame: pd.DataFrame, metrics: Sequence[str] = SUMMARY) -> Pairing:
    """Match each regularized trial with the baseline that equals it in every config key but the regularizer."""
    if frame.empty:  # no finished trial (all failed, or none ran yet): nothing to pair
        return Pairing(pd.DataFrame(), [])
    keys = pair_key_columns(frame)
    frame = frame.copy()
    frame["_key"] = _blocks(frame, keys)
    frame["_baseline"] = is_baseline(frame)
    frame["_label"] = regularizer_label(frame)
    rows, unpaired = [], []
    # rows as dicts, grouped by hand: pandas' per-group frames and iterrows cost most of a report's statistics
    records = _records(frame, ["trial", "_key", "_baseline", "_label", "regularizer.name", "train.seed", *metrics])
    by_key = _grouped((r for r in records if r["_baseline"]), "_key")
    for trial in (r for r in records if not r["_baseline"]):
        match = by_key.get(trial["_key"])
        if match is not None and len(match) > 1 and "regularizer.name" in frame:
            # a 'none' trial and a lambda_reg-0 one trained alike (no penalty): the unregularized config is the twin
            match = [m for m in match if m["regularizer.name"] == "none"]
        if match is None or len(match) != 1:
            unpaired.append(trial["trial"])
            continue
        rows.append(_pair_row(trial, match[0], trial["_label"], metrics))
    return Pairing(pd.DataFrame(rows), unpaired)


def _records(frame: pd.DataFrame, columns: Iterable[str]) -> list[dict]:
    """The rows of ``frame`` as dicts of those of ``columns`` it has (the values iterrows gives): a report's frames
    hold every metric and key, and turning all of them into dicts cost more than the pairing."""
    return frame[[c for c in dict.fromkeys(columns) if c in frame]].to_dict("records")


def _grouped(records: Iterable[dict], *keys: str) -> dict:
    """Rows (dicts) by their value of ``keys`` (one key: the value; more: a tuple of them), each group in the
    rows' order; the groups in order of their keys, as pandas' groupby gives them."""
    groups: dict = {}
    for row in records:
        key = tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]
        groups.setdefault(key, []).append(row)
    return {key: groups[key] for key in sorted(groups)}


def _pair_row(trial: Mapping[str, Any], base: Mapping[str, Any], label: str, metrics: Sequence[str]) -> dict:
    """One pair: both trials, what is compared (``label``), the seed, and each metric's values and difference."""
    row = {"trial": trial["trial"], "baseline": base["trial"], "regularizer": label, "seed": trial.get("train.seed")}
    for metric in metrics:
        a: Any = trial.get(metric)
        b: Any = base.get(metric)
        row[f"{metric}_regularized"], row[f"{metric}_baseline"] = a, b
        row[f"{metric}_diff"] = (a - b) if _finite(a) and _finite(b) else None
    return row


def _finite(value) -> bool:
    return (
        isinstance(value, (int, float, np.floating, np.integer))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass
class PairedEffect:
    regularizer: str
    metric: str
    n_pairs: int
    mean_diff: float | None
    ci_low: float | None
    ci_high: float | None
    test: str | None  # "paired t-test" or "Wilcoxon signed-rank"; None when no test is meaningful
    statistic: float | None
    p_value: float | None
    note: str
    p_holm: float | None = None  # p_value adjusted (Holm) over every test of the report; what verdicts use
    sd_diff: float | None = None  # standard deviation of the paired differences
    detectable: float | None = None  # smallest mean difference detected with 80% power at these pairs and spread

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(diffs: Sequence[float]) -> tuple[str | None, float | None, float | None, str]:
    """(test name, statistic, p-value, note) for paired differences; no test below MIN_PAIRS_FOR_TEST."""
    from scipy import stats  # deferred: scipy.stats costs 0.9 s to import; only CIs and tests need it

    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < MIN_PAIRS_FOR_TEST:
        return None, None, None, f"{n} pair{'s' if n != 1 else ''}: too few for a test (need {MIN_PAIRS_FOR_TEST})"
    if np.allclose(d, 0):
        return None, None, None, "all differences are zero: no test"
    if np.allclose(d, d[0], rtol=1e-9, atol=0):
        return None, None, None, f"all {n} differences are equal: no spread to test against"
    if n < MIN_PAIRS_FOR_WILCOXON:
        result = stats.ttest_1samp(d, 0.0)
        note = f"paired t-test on {n} pairs (Wilcoxon needs >= {MIN_PAIRS_FOR_WILCOXON} to be informative)"
        return "paired t-test", float(result.statistic), float(result.pvalue), note
    result = stats.wilcoxon(d, zero_method="wilcox")
    return "Wilcoxon signed-rank", float(result.statistic), float(result.pvalue), f"Wilcoxon signed-rank on {n} pairs"


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (Holm 1979): the family-wise error stays at alpha over all the tests together.
    Holm rather than Benjamini-Hochberg: the findings name effects one by one, and Holm bounds the chance that any
    named one is a false alarm, not only their expected share. Sorted ascending, the i-th of m p-values is
    multiplied by m - i + 1, capped at 1 and never below the one before it. Written here rather than called from
    statsmodels' ``multipletests`` (the same values: tests/test_analysis.py), which runs a full garbage collection
    on every call: 176 ms a family in a process that has imported torch, Ray and matplotlib (0.01 ms here)."""
    p = np.asarray(p_values, dtype=float)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, p[order] * np.arange(len(p), 0, -1)))
    adjusted = np.empty(len(p))
    adjusted[order] = stepped
    return [float(v) for v in adjusted]


POWER = 0.8  # the chance of detecting an effect of the detectable size, for 'smallest detectable difference'


def detectable_difference(sd: float | None, n: int, alpha: float = 0.05, power: float = POWER) -> float | None:
    """The smallest mean paired difference a two-sided paired t-test at ``alpha`` detects with probability
    ``power`` from ``n`` pairs whose differences have standard deviation ``sd`` (statsmodels' TTestPower, the
    noncentral t); None below MIN_PAIRS_FOR_TEST or without a spread."""
    if sd is None or not sd > 0 or n < MIN_PAIRS_FOR_TEST:
        return None
    return detectable_size(n, alpha, power) * sd


def paired_power(size: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test of ``n`` pairs at standardized effect ``size`` (statsmodels' TTestPower);
    its NaN in the noncentral t's far tail, where the power is about 1, is read as 1."""
    from statsmodels.stats.power import TTestPower  # deferred: statsmodels costs 0.5 s to import

    value = float(np.asarray(TTestPower().power(effect_size=size, nobs=n, alpha=alpha)).ravel()[0])
    return value if math.isfinite(value) else 1.0


@functools.lru_cache(maxsize=1024)
def detectable_size(n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The standardized effect (mean / sd of the differences) a paired t-test of ``n`` pairs detects with
    probability ``power``: the root of TTestPower's power curve, found by bracketing (its own solve_power
    returns a negative root or a 1-element array for some n, e.g. 73 and 87)."""
    from scipy.optimize import brentq  # deferred: scipy.optimize is only needed here

    def shortfall(size: float) -> float:
        return paired_power(size, n, alpha) - power

    # grow the bracket gently, so the power is never evaluated far past the target (where it turns NaN)
    low, high = 0.0, 0.05
    while shortfall(high) < 0:  # the power at 0 is alpha, below any power asked for
        low, high = high, high * 1.5
    return float(brentq(shortfall, low, high, xtol=1e-12))


def seeds_to_detect(difference: float, sd: float | None, alpha: float = 0.05, power: float = POWER) -> int | None:
    """Pairs (seeds) a two-sided paired t-test needs to detect a mean difference ``difference`` with
    probability ``power`` when the differences spread with ``sd``; None without a spread."""
    if sd is None or not sd > 0 or difference == 0:
        return None

    # the power grows with the pairs: the smallest n that reaches it, by doubling then halving the interval
    # (statsmodels' own solver fails to converge where fewer than 3 pairs would do)
    size = abs(difference) / sd

    def reached(n: int) -> bool:
        return paired_power(size, n, alpha) >= power

    low, high = MIN_PAIRS_FOR_TEST - 1, MIN_PAIRS_FOR_TEST
    while not reached(high):
        low, high = high, high * 2
        if high > 10**9:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if reached(middle) else (middle, high)
    return high


def effect_of(label: str, metric: str, diffs: Sequence[float], unit: str = "pair") -> PairedEffect:
    """The effect of ``diffs`` (paired differences, or a statistic per ``unit`` of pairing): mean, 95% CI, test,
    spread and the smallest difference detectable with its pairs."""
    summary = mean_ci(diffs)
    test, statistic, p, note = paired_test(diffs)
    if unit != "pair":
        note = note.replace("pairs", f"{unit}s").replace("pair", unit)
    return PairedEffect(
        label,
        metric,
        summary.n,
        summary.mean,
        summary.ci_low,
        summary.ci_high,
        test,
        statistic,
        p,
        note,
        sd_diff=summary.std,
        detectable=detectable_difference(summary.std, summary.n),
    )


def paired_effects(pairing: Pairing, metrics: Sequence[str] = SUMMARY, adjust: bool = True) -> list[PairedEffect]:
    """Per regularizer variant and metric: mean paired difference, its CI and a paired test.

    The tests together are one family: ``p_holm`` adjusts each p-value for all the others (Holm); ``adjust``
    False leaves that to a caller whose family is larger.
    """
    effects: list[PairedEffect] = []
    if pairing.pairs.empty:
        return effects
    for label, part in pairing.pairs.groupby("regularizer", sort=True):
        for metric in metrics:
            diffs = [v for v in part[f"{metric}_diff"] if _finite(v)]
            effects.append(effect_of(label, metric, diffs))
    if adjust:
        adjust_together(effects)
    return effects


# ---------------------------------------------------------------------------
# contrasts of any factor: each level against a reference level, paired


@dataclass
class FactorContrasts:
    """One varied factor's paired contrasts: each level minus the reference level, and a trend for numbers."""

    factor: str  # the config key, e.g. model.batch_norm
    reference: str  # the level every other level is compared with
    why: str  # how the reference was chosen, for the report
    pairing: Pairing  # one row per trial of a non-reference level with its twin; 'regularizer' holds the contrast
    effects: list[PairedEffect]  # per contrast and metric (``regularizer`` is the contrast's label)
    trend: list[PairedEffect]  # numeric factors with 3+ levels: slope per unit of the factor, over pairing blocks


def reference_candidates(frame: pd.DataFrame, factor: str, references: dict | None = None) -> list[tuple[str, str]]:
    """The levels of ``factor`` that could be its reference, best first, each with why: the space's
    ``reference`` for it; 'none' for a regularizer; then every level in the order the study lists them (its
    trials are in planned order)."""
    levels = list(dict.fromkeys(_short(v) for v in frame[factor]))
    out = []
    wanted = (references or {}).get(factor)
    if wanted is not None and _short(wanted) in levels:
        out.append((_short(wanted), "the space's reference"))
    if factor == "regularizer.name" and "none" in levels:
        out.append(("none", "no regularizer"))
    out.append((levels[0], "the first level the study lists"))
    out += [(level, "the first level the study lists that has twins") for level in levels[1:]]
    first: dict[str, str] = {}
    for level, why in out:
        first.setdefault(level, why)
    return list(first.items())


def reference_level(frame: pd.DataFrame, factor: str, references: dict | None = None) -> tuple[str, str]:
    """(the reference level of ``factor``, why): the first of ``reference_candidates``."""
    return reference_candidates(frame, factor, references)[0]


def factor_contrasts(
    frame: pd.DataFrame,
    factors: Sequence[str],
    metrics: Sequence[str] = SUMMARY,
    references: dict | None = None,
    adjust: bool = True,
    with_regularizer: bool = False,
) -> list[FactorContrasts]:
    """For each factor outside ``regularizer.*`` (the regularizer pairing answers those): every level minus the
    reference level, each trial paired with the trial that agrees on the seed and on every other varied key.

    Numeric factors with 3 or more levels also get a trend: within each block of trials that agree on the seed
    and every other factor, the least-squares slope of the metric over the factor's levels; the slopes' mean
    and 95% CI over blocks, with a one-sample test. All the contrasts' and trends' tests are one family:
    ``p_holm`` adjusts each for all the others (Holm); ``adjust`` False leaves that to ``adjust_together``.
    ``with_regularizer``: regularizer.* keys too (`geotune compare --vary` of a regularizer setting).
    """
    out: list[FactorContrasts] = []
    seen: list[str] = []
    for factor in factors:
        skipped = factor.startswith("regularizer.") and not with_regularizer
        if skipped or factor not in frame or frame[factor].map(_short).nunique() < 2:
            continue
        if any(_aliases(frame, factor, earlier) for earlier in seen):
            continue  # another name for a factor already contrasted (each arm's own value): the same pairs
        seen.append(factor)
        # keys that are settings of the factor's arms (one value per level, e.g. each model.type's own widths)
        # move with it: blocks that held them fixed would never pair two arms
        others = [f for f in factors if f != factor and f in frame and not _set_by(frame, f, factor)]
        others += ["train.seed"] if "train.seed" in frame else []
        part = frame.assign(
            _level=frame[factor].map(_short),
            _block=_blocks(frame, others),
        )
        candidates = reference_candidates(frame, factor, references)
        if candidates[0][1] == "the space's reference":
            candidates = candidates[:1]  # the space chose: no other level stands in for it
        # the first candidate level with twins (levels that only one arm plans pair within that arm)
        tried = ((level, why, _pair_levels(part, level, metrics)) for level, why in candidates)
        found = next((t for t in tried if not t[2].pairs.empty), None)
        reference, why, pairing = found or (*candidates[0], _pair_levels(part, candidates[0][0], metrics))
        effects = paired_effects(pairing, metrics, adjust=False)
        out.append(FactorContrasts(factor, reference, why, pairing, effects, _trend(part, factor, metrics)))
    if adjust:
        adjust_together([e for c in out for e in c.effects + c.trend])
    return out


def _set_by(frame: pd.DataFrame, key: str, factor: str) -> bool:
    """Whether ``key`` is a setting of the arm each level of ``factor`` stands for: every arm sets both, and
    ``key`` takes one value at each level (as model.channels at each model.type of a grid of arms). A key some
    arms leave at the base value marks arms that differ in more than this factor: it keeps its place."""
    key_levels, levels = frame[key].map(_short), frame[factor].map(_short)
    if (key_levels == "base").any() or (levels == "base").any():
        return False
    return bool((key_levels.groupby(levels).nunique() <= 1).all())


def _aliases(frame: pd.DataFrame, a: str, b: str) -> bool:
    """Whether two keys vary as one: each sets the other (one-to-one levels)."""
    return _set_by(frame, a, b) and _set_by(frame, b, a)


def _pair_levels(part: pd.DataFrame, reference: str, metrics: Sequence[str]) -> Pairing:
    """Each trial of another ``_level`` than ``reference`` with the one reference trial of its ``_block``."""
    records = _records(part, ["trial", "_level", "_block", "train.seed", *metrics])
    twins = _grouped((r for r in records if r["_level"] == reference), "_block")
    rows, unpaired = [], []
    for trial in (r for r in records if r["_level"] != reference):
        twin = twins.get(trial["_block"])
        if twin is None or len(twin) != 1:
            unpaired.append(trial["trial"])
            continue
        rows.append(_pair_row(trial, twin[0], f"{trial['_level']} vs {reference}", metrics))
    return Pairing(pd.DataFrame(rows), unpaired)


def adjust_together(effects: Sequence[PairedEffect]) -> None:
    """Holm over the tested ones of ``effects``, as one family: each gets its ``p_holm``."""
    family = [e for e in effects if e.p_value is not None]
    for e, adjusted in zip(family, holm([float(e.p_value or 0.0) for e in family])):
        e.p_holm = adjusted


def _blocks(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Each trial's block: its values of ``keys`` as one comparable text ('' without keys)."""
    columns = [frame[key].map(repr).tolist() for key in keys]  # joined row by row in Python: no per-row Series
    return pd.Series(["|".join(values) for values in zip(*columns)] if keys else "", index=frame.index)


def interaction_factors(factors: Sequence[str]) -> list[str]:
    """Factors that can interact: every varied key outside regularizer.*, and the regularizer's name."""
    return [f for f in factors if not f.startswith("regularizer.") or f == "regularizer.name"]


def factor_interactions(
    frame: pd.DataFrame,
    factors: Sequence[str],
    metrics: Sequence[str] = SUMMARY,
    references: dict | None = None,
) -> tuple[Pairing, list[PairedEffect]]:
    """Two crossed factors A and B: does A's effect depend on B? Within each block of trials that agree on the
    seed and on every other factor, the difference of differences (a, b) - (a0, b) - (a, b0) + (a0, b0) for
    each level a of A and b of B against their reference levels a0, b0; its mean, CI and test over blocks.
    Not adjusted here (``adjust_together`` with the contrasts: one family)."""
    chosen = [f for f in interaction_factors(factors) if f in frame and frame[f].map(_short).nunique() >= 2]
    rows, unpaired = [], []
    seed = ["train.seed"] if "train.seed" in frame else []
    for i, a in enumerate(chosen):
        for b in chosen[i + 1 :]:
            others = [f for f in factors if f not in (a, b) and f in frame] + seed
            part = frame.assign(_a=frame[a].map(_short), _b=frame[b].map(_short), _block=_blocks(frame, others))
            a0, b0 = reference_level(frame, a, references)[0], reference_level(frame, b, references)[0]
            cells = _grouped(
                _records(part, ["trial", "_block", "_a", "_b", "train.seed", *metrics]), "_block", "_a", "_b"
            )
            for (block, la, lb), cell in cells.items():
                if la == a0 or lb == b0:
                    continue
                corners = [cells.get((block, x, y)) for x, y in ((a0, lb), (la, b0), (a0, b0))]
                if len(cell) != 1 or any(c is None or len(c) != 1 for c in corners):
                    unpaired.append(cell[0]["trial"])
                    continue
                trial, (ref_b, ref_a, ref) = cell[0], (c[0] for c in corners)  # type: ignore[index]
                label = f"{_tail(a)}={la} x {_tail(b)}={lb}"  # each against its reference (the table says which)
                row = _pair_row(trial, ref, label, ())
                for metric in metrics:
                    values = [x.get(metric) for x in (trial, ref_b, ref_a, ref)]
                    finite = all(_finite(v) for v in values)
                    row[f"{metric}_diff"] = (values[0] - values[1] - values[2] + values[3]) if finite else None
                rows.append(row)
    pairing = Pairing(pd.DataFrame(rows), unpaired)
    return pairing, paired_effects(pairing, metrics, adjust=False)


def _tail(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _trend(part: pd.DataFrame, factor: str, metrics: Sequence[str]) -> list[PairedEffect]:
    values = pd.to_numeric(part[factor], errors="coerce")
    if values.isna().any() or part[factor].map(lambda v: isinstance(v, bool)).any() or values.nunique() < 3:
        return []
    x = values.to_numpy(float)
    blocks = part.groupby("_block").indices  # each block's row positions, in the frame's order
    trend = []
    for metric in (m for m in metrics if m in part):
        y = pd.to_numeric(part[metric], errors="coerce").to_numpy(float)
        slopes = []
        for block in sorted(blocks):  # groupby's order of blocks
            rows = blocks[block][~np.isnan(y[blocks[block]])]  # x has no NaN (checked above)
            if len(np.unique(x[rows])) >= 2:
                slopes.append(float(np.polyfit(x[rows], y[rows], 1)[0]))
        trend.append(effect_of("trend (per unit)", metric, slopes, unit="block"))
    return trend


# ---------------------------------------------------------------------------
# how a regularizer moved the within-class geometry


@dataclass
class GeometryChange:
    """How a regularizer moved the geometry within classes, read from its paired effects.

    A change counts only when the 95% CI of the paired difference excludes 0 and, where a test
    was possible (3 pairs or more), its Holm-adjusted p-value is below ``ALPHA``. Collapse also
    needs the participation ratio within classes to fall by at least ``COLLAPSE_DROP`` of its
    baseline: a few percent of spread is not a collapse.
    """

    verdict: str  # see VERDICTS
    flatter: bool | None  # within-class flatness fell; None: no interval (fewer than 2 pairs)
    curvier: bool | None  # within-class flatness rose
    thinner: bool | None  # collapse: the participation ratio within classes fell by COLLAPSE_DROP or more
    spread_fell: bool | None = None  # the participation ratio within classes fell (detectably, any amount)
    dimension_fell: bool | None = None  # the intrinsic dimension within classes (TwoNN) fell
    dimension_rose: bool | None = None  # ... rose
    flatness: PairedEffect | None = None
    spread: PairedEffect | None = None  # participation ratio within classes
    dimension: PairedEffect | None = None  # intrinsic dimension within classes (TwoNN)
    spread_change: float | None = None  # the participation ratio's mean difference relative to its baselines
    resolved: bool | None = None  # could every measured class show a bend? None: not recorded


ALPHA = 0.05  # significance of a Holm-adjusted paired test
COLLAPSE_DROP = 0.10  # collapse: the participation ratio within classes falls by at least 10% of its baseline
VERDICTS = (
    "flatter by collapse",
    "flatter without collapse",
    "thickened",
    "collapse without flattening",
    "more curved",
    "no detectable change",
    "flatness not resolved",
    "not testable",
)


def detected(effect: PairedEffect | None, sign: int) -> bool | None:
    """The CI lies on the ``sign`` side of 0 and, where tested, the Holm-adjusted p-value is below ALPHA."""
    if effect is None or effect.ci_low is None or effect.ci_high is None:
        return None
    side = effect.ci_low > 0 if sign > 0 else effect.ci_high < 0
    return bool(side and (effect.p_holm is None or effect.p_holm < ALPHA))


def geometry_change(
    effects: dict[str, PairedEffect], spread_baseline: float | None = None, resolved: bool | None = None
) -> GeometryChange:
    """Verdict from one regularizer's effects (by metric): did the classes get flatter, and how?

    ``spread_baseline``: the baselines' mean participation ratio within classes (collapse is
    relative to it); ``resolved``: whether every class of every compared trial could show a
    bend (``flatness_resolved_per_class`` = 1). Without resolution no verdict about flatness
    is given; the spread is still judged.
    """
    flatness = effects.get("flatness_calibrated_per_class")
    spread, dimension = effects.get("participation_ratio_per_class"), effects.get("intrinsic_dim_twonn_per_class")
    flatter, curvier = detected(flatness, -1), detected(flatness, +1)
    spread_fell = detected(spread, -1)
    dimension_fell, dimension_rose = detected(dimension, -1), detected(dimension, +1)
    change = (
        spread.mean_diff / spread_baseline
        if spread is not None and spread.mean_diff is not None and spread_baseline
        else None
    )
    thinner = None if spread_fell is None else bool(spread_fell and change is not None and change <= -COLLAPSE_DROP)
    if flatter is None:
        verdict = "not testable"
    elif resolved is False:
        verdict = "flatness not resolved"
    elif flatter:
        verdict = "thickened" if dimension_rose else ("flatter by collapse" if thinner else "flatter without collapse")
    elif curvier:
        verdict = "more curved"
    elif thinner:
        verdict = "collapse without flattening"
    else:
        verdict = "no detectable change"
    return GeometryChange(
        verdict,
        flatter,
        curvier,
        thinner,
        spread_fell,
        dimension_fell,
        dimension_rose,
        flatness,
        spread,
        dimension,
        change,
        resolved,
    )


# ---------------------------------------------------------------------------
# representation similarity across trials (linear CKA, analysis.similarity)


@dataclass
class RepresentationShift:
    """How far a factor moved the representation, against how far a new seed moves it (linear CKA)."""

    factor: str
    between: MeanCI  # CKA of two trials that differ in this factor alone (same seed, same other factors)
    within: MeanCI  # CKA of two seeds of one variant: the representation's own seed-to-seed change

    @property
    def beyond_seed_noise(self) -> bool | None:
        """True when the factor's CKA interval lies wholly below the seeds'; None when either has no interval."""
        if self.between.ci_high is None or self.within.ci_low is None:
            return None
        return self.between.ci_high < self.within.ci_low


def representation_shifts(
    frame: pd.DataFrame, factors: Sequence[str], features: dict[str, np.ndarray]
) -> list[RepresentationShift]:
    """Per factor, linear CKA of the pairs of trials that differ in it alone, beside the CKA of pairs of seeds of
    one variant; ``features`` the trials' features of the same images (latents.npz's test_embeddings)."""
    within, between = _cka_pairs(frame, factors, features)
    noise = mean_ci(within)
    return [RepresentationShift(f, mean_ci(between[f]), noise) for f in factors if between[f]]


def seed_similarity(frame: pd.DataFrame, factors: Sequence[str], features: dict[str, np.ndarray]) -> MeanCI:
    """Linear CKA of two seeds of one variant, over every such pair: how far a new seed alone moves the
    representation (the yardstick of ``twin_similarity`` and ``representation_shifts``)."""
    return mean_ci(_cka_pairs(frame, factors, features, between=False)[0])


def _cka_pairs(
    frame: pd.DataFrame, factors: Sequence[str], features: dict[str, np.ndarray], between: bool = True
) -> tuple[list[float], dict[str, list[float]]]:
    """CKA of the pairs of two seeds of one variant, and (``between``) per factor of the pairs of one seed that
    differ in that factor alone."""
    rows = frame[frame["trial"].isin(features)]
    found: dict[str, list[float]] = {f: [] for f in factors}
    within: list[float] = []
    if rows.empty or "train.seed" not in rows:
        return within, found
    levels = {r["trial"]: tuple(_short(r[f]) if f in r else "base" for f in factors) for _, r in rows.iterrows()}
    seeds = dict(zip(rows["trial"], rows["train.seed"]))
    trials = list(levels)
    for a_i, a in enumerate(trials):
        for b in trials[a_i + 1 :]:
            differ = [i for i, (x, y) in enumerate(zip(levels[a], levels[b])) if x != y]
            same_variant = not differ and seeds[a] != seeds[b]
            if not (same_variant or (between and len(differ) == 1 and seeds[a] == seeds[b])):
                continue
            value = linear_cka(features[a], features[b])
            if value is not None:  # a trial without variance in its features has no CKA
                (within if same_variant else found[factors[differ[0]]]).append(value)
    return within, found


def twin_similarity(pairing: Pairing, features: dict[str, np.ndarray]) -> dict[str, MeanCI]:
    """Per label of ``pairing`` (a regularizer, or a factor's level), the linear CKA of each of its trials with its
    twin (the baseline or reference-level trial of the same seed and other keys) on the same images."""
    values: dict[str, list[float]] = {}
    if pairing.pairs.empty:
        return {}
    for _, pair in pairing.pairs.iterrows():
        a, b = features.get(pair["trial"]), features.get(pair["baseline"])
        value = linear_cka(a, b) if a is not None and b is not None else None
        if value is not None:
            values.setdefault(pair["regularizer"], []).append(value)
    return {label: mean_ci(found) for label, found in values.items()}
