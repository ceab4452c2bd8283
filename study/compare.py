"""`geotune compare`: a regularized config against the same config without regularizer, as one small study.

The two runs share seed and data; the comparison is the study's paired effects
(``geotune.analysis.comparison``) with its one pair in full, written to
``OUT_DIR/comparison_report.json`` beside ``training_curves_comparison.png``.
"""

from __future__ import annotations

from pathlib import Path

from geotune.analysis.comparison import comparison_report, single_pair, write_comparison_report
from geotune.analysis.figures import draw_curves_comparison, save_figure
from geotune.analysis.load import load_study
from geotune.analysis.stats import pair_with_baselines, paired_effects
from geotune.analysis.tables import text_table
from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.layout import StudyPlan
from geotune.metric_names import SUMMARY
from geotune.search_spaces.space import SearchSpace
from geotune.study.plan import RunOptions, make_plan

CURVES_FILE = "training_curves_comparison.png"


def compare_plan(cfg: TrialConfig, out_dir: str, cpus: float, gpus: float) -> tuple[StudyPlan, SearchSpace]:
    """The two-trial study: the config's regularizer and 'none', same seed."""
    if not cfg.regularizer.active:
        raise ConfigError(
            f"config key 'regularizer.name' = {cfg.regularizer.name}"
            + ("" if cfg.regularizer.name == "none" else " (disabled, weight 0, or every lambda_reg 0)")
            + ": nothing to compare against the unregularized run; choose geodesic, geometry or "
            "combined"
        )
    user = cfg.to_dict()
    name = user["regularizer"].pop("name")
    space = SearchSpace(
        name="compare",
        question=f"What does the {name} regularizer change against no regularizer?",
        base={},
        grid=[{"regularizer.name": [name, "none"]}],
        seeds=[user["train"].pop("seed")],
        metric="val_accuracy",
        mode="max",
        cpus_per_trial=cpus,
        gpus_per_trial=gpus,
        module="geotune compare",
    )
    out = Path(out_dir).expanduser().resolve()
    return make_plan(space, user, RunOptions(storage=str(out.parent), name=out.name, max_failures=1)), space


def write_comparison(plan: StudyPlan) -> dict | None:
    """comparison_report.json and the curves of a finished compare study; None where a run has no results."""
    study = load_study(plan.study_dir)
    pairing = pair_with_baselines(study.usable)
    pair = single_pair(pairing, study.frame)
    if pair is None:
        return None
    report = comparison_report(pairing, paired_effects(pairing), pair)
    out = Path(plan.study_dir)
    write_comparison_report(out, report)
    name = plan.variants[0]["regularizer.name"]
    regularized, baseline = pair
    curves = [(name, regularized.history), ("none", baseline.history)]
    save_figure(draw_curves_comparison(curves, f"{name} vs no regularizer (seed {plan.seeds[0]})"), out / CURVES_FILE)
    return report


def comparison_text(report: dict, name: str) -> str:
    """The main differences as a table."""
    rows = [
        (key, d["regularized"], d["baseline"], d["absolute"], d["percent"])
        for key, d in report["differences"].items()
        if key in SUMMARY or key == "val_accuracy"
    ]
    return text_table(["metric", name, "none", "difference", "percent"], rows)
