"""`geotune compare`: a regularized config against the same config without regularizer, or (``--vary
KEY=A,B``) the config at two settings of any key, as one small study.

The two runs share seed and data; the comparison is the study's paired effects
(``geotune.analysis.comparison``) with its one pair in full, written to
``OUT_DIR/comparison_report.json`` beside ``training_curves_comparison.png``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from geotune.analysis.comparison import comparison_report, single_pair, write_comparison_report
from geotune.analysis.figures import draw_curves_comparison, save_figure
from geotune.analysis.load import load_study
from geotune.analysis.stats import Pairing, factor_contrasts, pair_with_baselines, paired_effects
from geotune.analysis.tables import text_table
from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.layout import StudyPlan
from geotune.metric_names import SUMMARY
from geotune.search_spaces.space import SearchSpace, parse_sweep
from geotune.study.plan import RunOptions, make_plan

CURVES_FILE = "training_curves_comparison.png"


def compare_plan(
    cfg: TrialConfig, out_dir: str, cpus: float, gpus: float, vary: str | None = None
) -> tuple[StudyPlan, SearchSpace]:
    """The two-trial study: the config's regularizer and 'none', same seed; or, with ``vary`` ('KEY=A,B'),
    the config at KEY = A (the reference) and at KEY = B."""
    if vary is not None:
        return _vary_plan(cfg, out_dir, cpus, gpus, vary)
    if not cfg.regularizer.active:
        raise ConfigError(
            f"config key 'regularizer.name' = {cfg.regularizer.name}"
            + ("" if cfg.regularizer.name == "none" else " (disabled, weight 0, or every lambda_reg 0)")
            + ": nothing to compare against the unregularized run; choose geodesic, geometry or "
            "combined"
        )
    user = cfg.to_dict()
    name = user["regularizer"].pop("name")
    question = f"What does the {name} regularizer change against no regularizer?"
    return _two_run_plan(user, out_dir, question, "regularizer.name", [name, "none"], cpus, gpus)


def _two_run_plan(
    user: dict,
    out_dir: str,
    question: str,
    key: str,
    levels: list,
    cpus: float,
    gpus: float,
    reference: dict | None = None,
) -> tuple[StudyPlan, SearchSpace]:
    """A compare study: ``user``'s config (its seed the one both runs share) at each of ``levels`` of ``key``."""
    space = SearchSpace(
        name="compare",
        question=question,
        base={},
        grid=[{key: list(levels)}],
        seeds=[user["train"].pop("seed")],
        metric="val_accuracy",
        mode="max",
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        module="geotune compare --vary" if reference else "geotune compare",
        reference=reference or {},
    )
    out = Path(out_dir).expanduser().resolve()
    return make_plan(space, user, RunOptions(storage=str(out.parent), name=out.name, max_failures=1)), space


def _vary_plan(cfg: TrialConfig, out_dir: str, cpus: float, gpus: float, vary: str) -> tuple[StudyPlan, SearchSpace]:
    key, values = parse_sweep(vary, "--vary")
    if len(values) != 2 or values[0] == values[1]:
        raise ConfigError(f"--vary {vary!r}: give two different values, KEY=A,B (A is the reference)")
    if key == "train.seed":
        raise ConfigError(f"--vary {vary!r}: the two runs share their seed; vary a config key")
    user = cfg.to_dict()
    section, _, name = key.rpartition(".")
    node = user
    for part in section.split(".") if section else []:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(name, None)  # the space varies it: the config's own value would be refused as overridden
    question = f"What does {key} = {values[1]} change against {key} = {values[0]}?"
    return _two_run_plan(user, out_dir, question, key, values, cpus, gpus, reference={key: values[0]})


def compared_levels(plan: StudyPlan) -> tuple[str, str]:
    """(what was tried, what it is compared with): the regularizer and 'none', or --vary's B and A."""
    if plan.reference:  # --vary: its reference level is the one compared with
        key, level = next(iter(plan.reference.items()))
        other = next(v[key] for v in plan.variants if v[key] != level)
        return f"{key.rsplit('.', 1)[-1]}={other}", f"{key.rsplit('.', 1)[-1]}={level}"
    return plan.variants[0]["regularizer.name"], "none"


def compare_pairing(plan: StudyPlan, study) -> tuple[Pairing, list]:
    """The one pair of a compare study and its effects: the regularizer's, or --vary's contrast."""
    if plan.reference:  # --vary: its reference level is the one compared with
        key = next(iter(plan.reference))
        contrasts = factor_contrasts(study.usable, [key], SUMMARY, plan.reference, with_regularizer=True)
        if not contrasts:
            return Pairing(pd.DataFrame(), []), []
        return contrasts[0].pairing, contrasts[0].effects
    pairing = pair_with_baselines(study.usable)
    return pairing, paired_effects(pairing)


def write_comparison(plan: StudyPlan) -> dict | None:
    """comparison_report.json and the curves of a finished compare study; None where a run has no results."""
    study = load_study(plan.study_dir)
    pairing, effects = compare_pairing(plan, study)
    pair = single_pair(pairing, study.frame)
    if pair is None:
        return None
    report = comparison_report(pairing, effects, pair)
    out = Path(plan.study_dir)
    write_comparison_report(out, report)
    tried, reference = compared_levels(plan)
    changed, kept = pair
    curves = [(tried, changed.history), (reference, kept.history)]
    save_figure(draw_curves_comparison(curves, f"{tried} vs {reference} (seed {plan.seeds[0]})"), out / CURVES_FILE)
    return report


def comparison_text(report: dict, tried: str, reference: str = "none") -> str:
    """The main differences as a table."""
    rows = [
        (key, d["regularized"], d["baseline"], d["absolute"], d["percent"])
        for key, d in report["differences"].items()
        if key in SUMMARY or key == "val_accuracy"
    ]
    return text_table(["metric", tried, reference, "difference", "percent"], rows)
