"""Analysis on synthetic studies: loading, group statistics, pairing, paired tests, the report."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from geotune.analysis.load import load_study
from geotune.analysis.report import build_report, write_report
from geotune.analysis.stats import (
    PairedEffect,
    geometry_change,
    group_summary,
    mean_ci,
    pair_with_baselines,
    paired_effects,
    paired_test,
)
from synthetic import make_study

REG_GRID = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in (0, 1, 2)]


def reg_study(tmp_path: Path, **extra) -> Path:
    accs = {
        ("none", 0): 0.90,
        ("none", 1): 0.92,
        ("none", 2): 0.94,
        ("geodesic", 0): 0.91,
        ("geodesic", 1): 0.94,
        ("geodesic", 2): 0.97,
    }
    flat = {
        ("none", 0): 1.30,
        ("none", 1): 1.32,
        ("none", 2): 1.28,
        ("geodesic", 0): 1.10,
        ("geodesic", 1): 1.15,
        ("geodesic", 2): 1.12,
    }
    trials = [
        {
            "variant": i,
            "metrics": {
                "test_accuracy": accs[(v["regularizer.name"], v["train.seed"])],
                "val_accuracy": accs[(v["regularizer.name"], v["train.seed"])],
                "flatness_calibrated": flat[(v["regularizer.name"], v["train.seed"])],
            },
        }
        for i, v in enumerate(REG_GRID)
    ]
    return make_study(tmp_path / "study", REG_GRID, trials, **extra)


def test_mean_ci_matches_hand_computation():
    s = mean_ci([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * std / sqrt(n)
    assert s.n == 3 and s.mean == pytest.approx(0.92) and s.std == pytest.approx(0.02)
    assert s.ci_low == pytest.approx(0.92 - half) and s.ci_high == pytest.approx(0.92 + half)
    one = mean_ci([0.5])
    assert one.mean == 0.5 and one.std is None and one.ci_low is None
    assert mean_ci([float("nan"), 1.0, 3.0]).mean == pytest.approx(2.0)


def test_load_group_means_and_cis(tmp_path):
    study = load_study(reg_study(tmp_path))
    assert len(study.frame) == 6 and set(study.frame["status"]) == {"completed"}
    assert study.factors == ["regularizer.name"]
    assert study.frame["model.pooling"].iloc[0] == "max", "config columns carry resolved defaults"
    table = group_summary(study.usable, study.factors).set_index("group")
    geo = table.loc["name=geodesic"]
    assert geo["n"] == 3 and geo["test_accuracy_mean"] == pytest.approx((0.91 + 0.94 + 0.97) / 3)
    assert geo["test_accuracy_std"] == pytest.approx(0.03)
    half = 4.302652729911275 * 0.03 / math.sqrt(3)
    assert geo["test_accuracy_ci_low"] == pytest.approx(0.94 - half)
    assert table.loc["name=none", "flatness_calibrated_mean"] == pytest.approx(1.30)


def test_pairing_and_paired_t_test(tmp_path):
    study = load_study(reg_study(tmp_path))
    pairing = pair_with_baselines(study.usable)
    assert len(pairing.pairs) == 3 and not pairing.unpaired
    for _, pair in pairing.pairs.iterrows():  # same seed on both sides
        assert pair["trial"].split("seed=")[1] == pair["baseline"].split("seed=")[1]
    effects = {e.metric: e for e in paired_effects(pairing)}
    acc = effects["test_accuracy"]
    diffs = [0.01, 0.02, 0.03]  # regularized minus baseline test accuracy, per seed
    t = sps.tmean(diffs) / (sps.tstd(diffs) / math.sqrt(len(diffs)))
    assert acc.n_pairs == 3 and acc.mean_diff == pytest.approx(0.02) and acc.test == "paired t-test"
    assert acc.statistic == pytest.approx(t)
    assert acc.p_value == pytest.approx(2 * sps.t.sf(t, df=2))
    flat = effects["flatness_calibrated"]
    assert flat.mean_diff == pytest.approx(((1.10 - 1.30) + (1.15 - 1.32) + (1.12 - 1.28)) / 3)
    assert flat.ci_high < 0


def test_pairing_refuses_trials_that_differ_in_more_than_the_regularizer(tmp_path):
    variants = [
        {"regularizer.name": "none", "train.lr": 0.001, "train.seed": 0},
        {"regularizer.name": "geodesic", "train.lr": 0.002, "train.seed": 0},  # other lr: no pair
        {"regularizer.name": "geodesic", "train.lr": 0.001, "train.seed": 1},  # other seed: no pair
        {"regularizer.name": "geometry", "train.lr": 0.001, "train.seed": 0},
    ]  # a real pair
    folder = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(4)])
    pairing = pair_with_baselines(load_study(folder).usable)
    assert pairing.pairs["trial"].tolist() == ["00003_name=geometry,lr=0.001,seed=0"]
    assert sorted(pairing.unpaired) == ["00001_name=geodesic,lr=0.002,seed=0", "00002_name=geodesic,lr=0.001,seed=1"]


def test_geodesic_settings_pair_with_the_plain_baseline(tmp_path):
    variants = [{"regularizer.name": "none", "train.seed": 0}] + [
        {"regularizer.name": "geodesic", "regularizer.geodesic.lambda_reg": lam, "train.seed": 0} for lam in (0.1, 1.0)
    ]
    folder = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(3)])
    pairing = pair_with_baselines(load_study(folder).usable)
    assert sorted(pairing.pairs["regularizer"]) == ["geodesic, lambda_reg=0.1", "geodesic, lambda_reg=1"]
    assert set(pairing.pairs["baseline"]) == {"00000_name=none,seed=0"}


def test_a_regularizer_at_lambda_0_is_reported_as_a_baseline(tmp_path):
    """A lambda sweep that starts at 0: the lambda-0 trials train without a penalty, so they are the baselines
    (one answer, RegularizerConfig.active), and each non-zero lambda pairs with the lambda-0 trial of its seed."""
    variants = [
        {"regularizer.name": "geodesic", "regularizer.geodesic.lambda_reg": lam, "train.seed": s}
        for lam in (0.0, 0.5)
        for s in (0, 1, 2)
    ]
    folder = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(6)])
    study = load_study(folder)
    assert study.frame.set_index("variant")["regularized"].tolist() == [False] * 3 + [True] * 3
    pairing = pair_with_baselines(study.usable)
    assert sorted(pairing.pairs["baseline"]) == sorted(study.frame["trial"][:3])
    assert set(pairing.pairs["trial"]) == set(study.frame["trial"][3:]) and not pairing.unpaired
    # with a 'none' trial of the same seeds too, the 'none' ones are the twins (both trained without a penalty)
    both = variants + [{"regularizer.name": "none", "train.seed": s} for s in (0, 1, 2)]
    study = load_study(make_study(tmp_path / "both", both, [{"variant": i} for i in range(9)]))
    pairing = pair_with_baselines(study.usable)
    assert sorted(pairing.pairs["baseline"]) == sorted(study.frame["trial"][6:]) and not pairing.unpaired
    # combined with one term at 0 trains with the other: regularized
    from geotune.config import TrialConfig

    combined = {"regularizer": {"name": "combined", "geodesic": {"lambda_reg": 0.0}}}
    assert TrialConfig.from_dict(combined).regularizer.terms == ("geometry",)
    combined["regularizer"]["geometry"] = {"lambda_reg": 0.0}
    assert not TrialConfig.from_dict(combined).regularizer.active
    from geotune.trainables.trial import check_config

    assert any("reported as a baseline" in w for w in check_config(TrialConfig.from_dict(combined)))


def test_paired_test_choice():
    assert paired_test([0.1, 0.2])[0] is None and "too few" in paired_test([0.1, 0.2])[3]
    assert paired_test([0.0, 0.0, 0.0])[0] is None
    name, statistic, p, _ = paired_test([0.1, 0.2, 0.15, 0.05])
    assert name == "paired t-test" and p == pytest.approx(sps.ttest_1samp([0.1, 0.2, 0.15, 0.05], 0).pvalue)
    diffs = [0.01 * i for i in range(1, 13)]
    name, statistic, p, note = paired_test(diffs)
    assert name == "Wilcoxon signed-rank" and p == pytest.approx(sps.wilcoxon(diffs).pvalue)


def test_partial_study_with_failed_interrupted_asha_and_missing_trials(tmp_path):
    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in (0, 1, 2)]
    trials = [
        {"variant": 0},
        {"variant": 1, "status": "asha", "epochs": 2},
        {"variant": 2, "status": "failed"},
        {"variant": 3},
        {"variant": 4, "status": "interrupted", "epochs": 4},
    ]  # variant 5 never started
    study = load_study(make_study(tmp_path / "s", variants, trials))
    status = dict(zip(study.frame["variant"], study.frame["status"]))
    assert list(study.frame["status"].astype(str)) == [
        "completed",
        "stopped by ASHA",
        "failed",
        "completed",
        "interrupted",
        "missing",
    ]
    failed = study.frame[study.frame["status"] == "failed"].iloc[0]
    assert "became nan in epoch 2" in failed["error"]
    assert study.frame.loc[study.frame["status"] == "interrupted", "epochs"].iloc[0] == 2
    assert len(study.usable) == 3 and status["name=geodesic,seed=2"] == "missing"
    report = build_report(study)
    assert report.status == {"completed": 2, "stopped by ASHA": 1, "failed": 1, "interrupted": 1, "missing": 1}
    assert {row[1] for row in report.problems.rows} == {"failed", "interrupted", "missing"}
    assert any("became nan" in str(row[3]) for row in report.problems.rows)
    # only the completed pair (seed 0) is paired; the interrupted/missing trials are not
    assert len(pair_with_baselines(study.usable).pairs) == 1


def test_group_geometry_table_shows_the_resolved_share(tmp_path):
    """Every column of the per-variant geometry table has its numbers (the resolved share was once blank)."""
    trials = [
        {"variant": i, "metrics": {"test_accuracy": 0.9, "flatness_resolved_per_class": 0.5 + 0.25 * (i % 3 == 0)}}
        for i in range(len(REG_GRID))
    ]
    report = build_report(load_study(make_study(tmp_path / "s", REG_GRID, trials)))
    table = next(t for t in report.tables if t.key == "groups_geometry")
    column = table.headers.index("share of classes whose flatness can see a bend")
    assert [row[column].split(" ")[0] for row in table.rows] == ["0.583", "0.583"]


@pytest.mark.slow
def test_report_files_and_content(tmp_path):
    folder = reg_study(tmp_path)
    index = write_report(folder)
    out = folder / "report"
    for name in ("summary.csv", "tables.md", "comparison_report.json", "REPORT.md", "index.html"):
        assert (out / name).is_file(), name
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 and {"trial", "status", "test_accuracy", "regularizer.name"} <= set(summary.columns)
    paired = json.loads((out / "comparison_report.json").read_text())
    acc = next(e for e in paired["effects"] if e["metric"] == "test_accuracy")
    assert acc["mean_diff"] == pytest.approx(0.02) and acc["test"] == "paired t-test" and len(paired["pairs"]) == 3
    md = (out / "REPORT.md").read_text()
    assert "Does it work?" in md and "**geodesic** vs no regularizer (3 pairs; paired t-test)" in md
    assert "test accuracy +2.00 points" in md
    for image in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (out / image).is_file()
    assert "Best configuration" in md and "name=geodesic,seed=2" in md.split("Best configuration")[1][:200]
    page = index.read_text()
    assert "http://" not in page and "https://" not in page, "no network resources"
    assert page.count("<img") == len(list((out / "figures").glob("*.png"))) >= 4
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']+)'", page))
    links = re.findall(r"<a href='(figures/[^']+)' target='_blank'", page)  # a click opens each at full size
    assert len(links) == page.count("<img") and all((out / link).is_file() for link in links)


def test_report_with_fewer_than_three_seeds_gives_no_p_value(tmp_path):
    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in (0, 1)]
    folder = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(4)])
    paired = build_report(load_study(folder)).paired
    assert all(e["p_value"] is None and "too few for a test" in e["note"] for e in paired["effects"])


@pytest.mark.slow
def test_pooling_bn_and_lambda_figures(tmp_path):
    pooling = [
        {"model.pooling": p, "model.batch_norm": bn, "regularizer.name": r, "train.seed": 0}
        for p in ("max", "avg")
        for bn in (True, False)
        for r in ("none", "geodesic")
    ]
    report = build_report(load_study(make_study(tmp_path / "p", pooling, [{"variant": i} for i in range(8)])))
    keys = [f.key for f in report.figures]
    assert "pooling_bn_heatmaps" in keys and "grad_norms" in keys
    heat = next(f for f in report.figures if f.key == "pooling_bn_heatmaps").data
    assert len(heat) == 4 and heat[0].values.shape == (2, 2)
    grads = next(f for f in report.figures if f.key == "grad_norms").data
    assert set(grads) == {"with BatchNorm", "without BatchNorm"}

    grid = [{"regularizer.name": "none", "train.seed": 0}] + [
        {
            "regularizer.name": "geodesic",
            "regularizer.geodesic.lambda_reg": lam,
            "regularizer.geodesic.n_neighbors": k,
            "train.seed": 0,
        }
        for lam in (0.1, 1.0)
        for k in (3, 5)
    ]
    trials = [{"variant": i, "metrics": {"test_accuracy": 0.8 + 0.01 * i}} for i in range(5)]
    report = build_report(load_study(make_study(tmp_path / "g", grid, trials)))
    lines = next(f for f in report.figures if f.key == "metric_vs_lambda").data
    acc = lines[0]
    assert set(acc.lines) == {"n_neighbors=3", "n_neighbors=5"} and acc.baseline.centre == [0.8]
    assert acc.lines["n_neighbors=5"].x == [0.1, 1.0] and acc.lines["n_neighbors=5"].centre == pytest.approx(
        [0.82, 0.84]
    )


def test_gradient_norm_panels_name_their_layers_once_per_row_and_network():
    """Each heatmap writes its layer names unless the panel to its left has the same layers (text is most of
    the figure's time; a network's names are the same in each of its groups); three columns from five groups."""
    from geotune.analysis.figures import GradNormTable, draw_grad_norm_groups

    def table(net: str, n: int) -> GradNormTable:
        return GradNormTable([f"{net}.layer{i}" for i in range(n)], [1, 2], np.full((n, 2), 0.1))

    groups = {f"{net} {reg}": table(net, n) for net, n in (("a", 3), ("b", 5), ("c", 4)) for reg in ("none", "flat")}
    fig = draw_grad_norm_groups(groups)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    named = [[t.get_text() for t in ax.get_yticklabels()] for ax in panels]
    # rows of three: (a none, a flat, b none), (b flat, c none, c flat)
    assert [bool(n and n[0]) for n in named] == [True, False, True, True, True, False]
    assert named[2] == named[3] == [f"b.layer{i}" for i in range(5)] and named[4][0] == "c.layer0"
    assert all(len(ax.get_yticks()) == len(t.layers) for ax, t in zip(panels, groups.values())), "a row per layer"


def test_report_cli_on_a_study_and_errors(tmp_path, cli):
    folder = reg_study(tmp_path)
    proc = cli("report", folder)
    assert proc.returncode == 0 and "report:" in proc.stdout and (folder / "report" / "index.html").is_file()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = cli("report", empty)
    assert proc.returncode == 2 and "holds no trials" in proc.stderr


def test_a_report_without_figures_has_the_same_findings_and_tables_and_says_so(tmp_path, cli):
    """--no-figures: the findings, tables, summary and paired effects of the full report, no PNG anywhere and
    no link to one; the page says how to draw them. Figures of an earlier report go with it (figures/ holds
    only what the REPORT.md beside it shows), and a later full report draws them again."""
    folder = reg_study(tmp_path)
    out = folder / "report"
    assert cli("report", folder).returncode == 0
    full = {name: (out / name).read_text() for name in ("summary.csv", "tables.md", "comparison_report.json")}
    full_md = (out / "REPORT.md").read_text()
    assert list((out / "figures").glob("*.png"))

    proc = cli("report", folder, "--no-figures")
    assert proc.returncode == 0 and "report:" in proc.stdout
    assert {name: (out / name).read_text() for name in full} == full
    md, page = (out / "REPORT.md").read_text(), (out / "index.html").read_text()
    assert not list(out.rglob("*.png")) and "figures/" not in md and "<img" not in page and "figures/" not in page
    assert "Figures not drawn (--no-figures)" in md and "Figures not drawn (--no-figures)" in page
    sections = [line for line in full_md.splitlines() if line.startswith("## ")]
    drawn = {line for line in sections if f"![{line[3:]}]" in full_md}  # a section that is only a figure
    assert drawn and [line for line in md.splitlines() if line.startswith("## ")] == [
        line for line in sections if line not in drawn
    ]

    def findings(text: str) -> str:
        return text.split("## Findings")[1].split("\n## ")[0]

    assert findings(md) == findings(full_md) and "**geodesic** vs no regularizer" in findings(md)

    assert cli("report", folder).returncode == 0
    assert (out / "REPORT.md").read_text() == full_md and list((out / "figures").glob("*.png"))


@pytest.mark.slow
def test_loading_500_trials_is_fast_enough_to_use(tmp_path):
    """Functional check on a large study (timing goals live in benchmarks/)."""
    variants = [{"regularizer.geodesic.lambda_reg": 0.001 * (i + 1), "train.seed": 0} for i in range(500)]
    folder = make_study(
        tmp_path / "big", variants, [{"variant": i} for i in range(500)], base={"regularizer": {"name": "geodesic"}}
    )
    study = load_study(folder)
    assert len(study.frame) == 500 and study.frame["test_accuracy"].notna().all()


# ---------------------------------------------------------------------------
# the answer: forest plot, and findings that name collapse


def effect(metric, mean, low, high, n=3, p_holm=None):
    return PairedEffect("geodesic", metric, n, mean, low, high, "paired t-test", 0.0, 0.01, "", p_holm)


@pytest.mark.parametrize(
    "flat, spread, dim, verdict",
    [
        ((-0.05, -0.08, -0.02), (-2.0, -3.0, -1.0), (0.1, -0.5, 0.7), "flatter by collapse"),  # spread -40%
        ((-0.05, -0.08, -0.02), (-0.2, -0.3, -0.1), (0.1, -0.5, 0.7), "flatter without collapse"),  # -4%: no collapse
        ((-0.05, -0.08, -0.02), (0.1, -0.5, 0.7), (-1.0, -1.5, -0.5), "flatter without collapse"),  # TwoNN fell
        ((-0.05, -0.08, -0.02), (0.1, -0.5, 0.7), (0.8, 0.3, 1.3), "thickened"),  # TwoNN rose
        ((0.01, -0.02, 0.04), (-2.0, -3.0, -1.0), (0.1, -0.5, 0.7), "collapse without flattening"),
        ((0.05, 0.02, 0.08), (0.1, -0.5, 0.7), (0.1, -0.5, 0.7), "more curved"),
        ((0.01, -0.02, 0.04), (0.1, -0.5, 0.7), (0.1, -0.5, 0.7), "no detectable change"),
        ((0.01, -0.02, 0.04), (-0.2, -0.3, -0.1), (0.1, -0.5, 0.7), "no detectable change"),  # -4% is not collapse
        ((-0.05, None, None), (-2.0, None, None), (0.1, None, None), "not testable"),  # one pair: no CI
    ],
)
def test_geometry_verdict(flat, spread, dim, verdict):
    change = geometry_change(
        {
            "flatness_calibrated_per_class": effect("flatness_calibrated_per_class", *flat),
            "participation_ratio_per_class": effect("participation_ratio_per_class", *spread),
            "intrinsic_dim_twonn_per_class": effect("intrinsic_dim_twonn_per_class", *dim),
        },
        spread_baseline=5.0,
    )
    assert change.verdict == verdict


def test_no_flatness_verdict_without_resolution_and_holm_decides_what_counts():
    effects = {
        "flatness_calibrated_per_class": effect("flatness_calibrated_per_class", -0.05, -0.08, -0.02),
        "participation_ratio_per_class": effect("participation_ratio_per_class", -2.0, -3.0, -1.0),
        "intrinsic_dim_twonn_per_class": effect("intrinsic_dim_twonn_per_class", 0.1, -0.5, 0.7),
    }
    unresolved = geometry_change(effects, 5.0, resolved=False)
    assert unresolved.verdict == "flatness not resolved" and unresolved.thinner  # the spread is still judged
    assert geometry_change(effects, 5.0, resolved=True).verdict == "flatter by collapse"
    # the same intervals, but the collapse's test does not survive Holm's adjustment: no collapse
    effects["participation_ratio_per_class"] = effect("participation_ratio_per_class", -2.0, -3.0, -1.0, p_holm=0.2)
    assert geometry_change(effects, 5.0).verdict == "flatter without collapse"


def test_holm_adjusts_for_the_whole_family(monkeypatch):
    import gc

    from geotune.analysis.stats import holm

    # sorted 0.01, 0.02, 0.04 of 4 tests: x4, x3, x2 = 0.04, 0.06, 0.08; the largest x1 = 0.5; never decreasing
    assert holm([0.04, 0.01, 0.5, 0.02]) == pytest.approx([0.08, 0.04, 0.5, 0.06])
    assert holm([0.03, 0.03]) == pytest.approx([0.06, 0.06])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 x 2 caps at 1; 0.9 may not fall below it
    assert holm([]) == [] and holm([0.3]) == [0.3]
    # the reference implementation on families of every size, with ties, zeros and ones; without the full garbage
    # collection it runs on every call (0.6 s each in a test worker's heap: 120 calls took 81 s)
    from statsmodels.stats.multitest import multipletests

    monkeypatch.setattr(gc, "collect", lambda *args: 0)
    rng = np.random.default_rng(0)
    for size in (2, 3, 5, 8, 20, 60):
        for _ in range(20):
            p = rng.choice([rng.uniform(0, 1), rng.uniform(0, 0.01), 0.0, 1.0, 0.03], size=size)
            assert holm(list(p)) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-15), p


def collapse_study(tmp_path: Path, spread_drop: float) -> Path:
    """Regularized classes 0.06 flatter than their baselines; their participation ratio lower by ``spread_drop``."""
    trials = []
    for i, v in enumerate(REG_GRID):
        reg, seed = v["regularizer.name"] != "none", v["train.seed"]
        trials.append(
            {
                "variant": i,
                "metrics": {
                    "test_accuracy": 0.9 + 0.01 * seed,
                    "val_accuracy": 0.9,
                    "flatness_calibrated_per_class": 1.10 + 0.01 * seed - (0.06 + 0.005 * seed if reg else 0.0),
                    "participation_ratio_per_class": 5.0 + 0.1 * seed - ((spread_drop + 0.2 * seed) if reg else 0.0),
                    "intrinsic_dim_twonn_per_class": 7.0 + 0.1 * seed + (0.05 * (seed - 1) if reg else 0.0),
                },
            }
        )
    return make_study(tmp_path / f"collapse{spread_drop}", REG_GRID, trials)


@pytest.mark.slow
def test_findings_say_flatter_by_collapse_and_the_report_opens_with_the_forest_plot(tmp_path):
    study = load_study(collapse_study(tmp_path, spread_drop=2.0))
    report = build_report(study)
    finding = next(f for f in report.findings if f.startswith("**geodesic**"))
    assert "**Flatter by collapse**" in finding and "participation ratio -4" in finding  # -2.2 of 5.1 = -43%
    forest = report.forest.data
    assert forest.metrics[:3] == ["test_accuracy", "flatness_calibrated_per_class", "participation_ratio_per_class"]
    cell = forest.cells[("geodesic", "flatness_calibrated_per_class")]
    assert sorted(cell.diffs) == pytest.approx([-0.07, -0.065, -0.06])
    assert cell.mean == pytest.approx(-0.065) and cell.high < 0
    index = write_report(study.study_dir)
    page = index.read_text()
    assert page.index("<h2 id='forest'>") < page.index("<h2 id='findings'>") < page.index("<h2 id='plan'>")
    assert "Flatter by collapse" in (Path(study.study_dir) / "report" / "REPORT.md").read_text()


def test_findings_say_flatter_without_collapse_when_the_spread_holds(tmp_path):
    report = build_report(load_study(collapse_study(tmp_path, spread_drop=-0.2)))  # spread: -0.2, 0, +0.2 per seed
    finding = next(f for f in report.findings if f.startswith("**geodesic**"))
    assert "**Flatter without collapse**" in finding and "collapse:" not in finding.lower()


def test_a_key_an_arm_does_not_vary_is_labelled_as_the_base_value():
    from geotune.analysis.stats import group_label

    keys = ["model.kernel_size", "model.param_budget"]
    rows = pd.DataFrame({"model.kernel_size": [3, 3], "model.param_budget": [60000.0, float("nan")]})
    assert [group_label(row, keys) for _, row in rows.iterrows()] == [
        "kernel_size=3, param_budget=60000",
        "kernel_size=3, param_budget=base",
    ]


# ---------------------------------------------------------------------------
# contrasts of any factor (issue 30)


def planted_study(tmp_path, seeds=5):
    """BatchNorm x pooling x kernel size x seed, with planted effects: BatchNorm +0.03 accuracy (+0.02 more with
    avg pooling: an interaction), kernel size +0.005 accuracy per unit, pooling nothing beyond the interaction;
    silhouette is noise only. Each seed adds its own offset (what pairing removes) and a little noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    variants, trials = [], []
    for bn in (False, True):
        for pool in ("max", "avg"):
            for kernel in (3, 5, 7):
                for seed in range(seeds):
                    variants.append(
                        {"model.batch_norm": bn, "model.pooling": pool, "model.kernel_size": kernel, "train.seed": seed}
                    )
                    accuracy = 0.8 + 0.01 * seed + 0.03 * bn + 0.02 * (bn and pool == "avg") + 0.005 * kernel
                    metrics = {
                        "test_accuracy": accuracy + rng.normal(0, 0.002),
                        "silhouette": 0.3 + 0.02 * seed + rng.normal(0, 0.01),
                    }
                    trials.append({"variant": len(variants) - 1, "metrics": metrics})
    return load_study(make_study(tmp_path / "planted", variants, trials))


def test_each_factor_is_contrasted_with_its_reference_level_pair_by_pair(tmp_path):
    from geotune.analysis.stats import factor_contrasts

    study = planted_study(tmp_path)
    assert set(study.factors) == {"model.batch_norm", "model.pooling", "model.kernel_size"}
    contrasts = {c.factor: c for c in factor_contrasts(study.usable, study.factors, ("test_accuracy", "silhouette"))}
    bn = contrasts["model.batch_norm"]
    assert (bn.reference, bn.why) == ("false", "the first level the study lists")
    assert len(bn.pairing.pairs) == 30 and not bn.pairing.unpaired  # 2 poolings x 3 kernels x 5 seeds
    frame = study.usable.set_index("trial")
    # against scipy on the same pairs, found independently: agree on pooling, kernel and seed
    on = frame[frame["model.batch_norm"]].reset_index()
    off = frame[~frame["model.batch_norm"].astype(bool)].reset_index()
    keys = ["model.pooling", "model.kernel_size", "train.seed"]
    joined = on.merge(off, on=keys, suffixes=("_on", "_off"))
    diffs = joined["test_accuracy_on"] - joined["test_accuracy_off"]
    accuracy = next(e for e in bn.effects if e.metric == "test_accuracy")
    assert accuracy.regularizer == "true vs false" and accuracy.n_pairs == 30
    assert accuracy.mean_diff == pytest.approx(diffs.mean(), abs=1e-12)
    assert accuracy.mean_diff == pytest.approx(0.04, abs=0.002)  # 0.03 + half of the interaction's 0.02
    low, high = sps.t.interval(0.95, 29, loc=diffs.mean(), scale=sps.sem(diffs))
    assert (accuracy.ci_low, accuracy.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert accuracy.test == "Wilcoxon signed-rank"
    assert accuracy.p_value == pytest.approx(sps.wilcoxon(diffs).pvalue, rel=1e-9)
    # the null metric: its interval holds 0
    silhouette = next(e for e in bn.effects if e.metric == "silhouette")
    assert silhouette.ci_low < 0 < silhouette.ci_high
    # Holm over every contrast and trend of the study together: never below the raw p, and the one family's size
    family = [e for c in contrasts.values() for e in c.effects + c.trend if e.p_value is not None]
    assert all(e.p_holm >= e.p_value for e in family)
    smallest = min(family, key=lambda e: e.p_value)
    assert smallest.p_holm == pytest.approx(min(1.0, len(family) * smallest.p_value))
    # kernel size: two contrasts against 3, and a trend of +0.005 per unit (silhouette: none)
    kernel = contrasts["model.kernel_size"]
    assert kernel.reference == "3" and {e.regularizer for e in kernel.effects} == {"5 vs 3", "7 vs 3"}
    slope = next(e for e in kernel.trend if e.metric == "test_accuracy")
    assert slope.n_pairs == 20 and slope.ci_low < 0.005 < slope.ci_high and slope.ci_low > 0
    flat = next(e for e in kernel.trend if e.metric == "silhouette")
    assert flat.ci_low < 0 < flat.ci_high
    # pooling: no trend (not numeric); avg vs max moves accuracy by the interaction's half, 0.01
    pooling = contrasts["model.pooling"]
    assert pooling.reference == "max" and pooling.trend == []
    avg = next(e for e in pooling.effects if e.metric == "test_accuracy")
    assert avg.mean_diff == pytest.approx(0.01, abs=0.002)


def test_the_reference_level_is_the_spaces_own_then_none_then_the_first(tmp_path):
    from geotune.analysis.stats import reference_level

    frame = pd.DataFrame({"model.batch_norm": [True, False, True], "regularizer.name": ["geodesic", "none", "none"]})
    assert reference_level(frame, "model.batch_norm") == ("true", "the first level the study lists")
    assert reference_level(frame, "model.batch_norm", {"model.batch_norm": False}) == ("false", "the space's reference")
    assert reference_level(frame, "regularizer.name") == ("none", "no regularizer")
    # a reference the study does not hold falls back
    assert reference_level(frame, "model.batch_norm", {"model.batch_norm": "x"})[0] == "true"


def test_the_report_gives_each_factor_its_forest_its_table_and_its_finding(tmp_path):
    study = planted_study(tmp_path)
    report = build_report(study)
    forests = {spec.key: spec for spec in report.figures if spec.key.startswith("forest_")}
    assert set(forests) == {
        "forest_model.batch_norm",
        "forest_model.pooling",
        "forest_model.kernel_size",
        "forest_interactions",
    }
    assert forests["forest_model.batch_norm"].data.regularizers == ["true vs false"]
    tables = {t.key: t for t in report.tables}
    bn = tables["contrast_model.batch_norm"]
    assert "each level minus false (the first level the study lists)" in bn.title
    assert any(row[0] == "trend (per unit)" for row in tables["contrast_model.kernel_size"].rows)
    finding = next(f for f in report.findings if f.startswith("**model.batch_norm**"))
    assert "true vs false: test accuracy +4.0" in finding and "Holm" in finding
    written = write_report(study.study_dir).parent
    assert (written / "figures" / "forest_model.batch_norm.png").is_file()
    assert "Paired effect of model.pooling" in (written / "REPORT.md").read_text()


def test_arms_with_their_own_settings_are_contrasted_across_arms(tmp_path):
    """Grids of arms (each model.type with its own widths, as the original architecture experiment): the widths
    move with the arm, so the arms still pair by seed and dropout, and the widths get no second, identical
    contrast."""
    from geotune.analysis.stats import factor_contrasts

    arms = {"fc": [256, 128], "simple_cnn": [32, 64], "resnet_basic": [16, 32]}
    planted = {"fc": 0.0, "simple_cnn": 0.05, "resnet_basic": 0.07}
    variants, trials = [], []
    for arm, widths in arms.items():
        for dropout in (0.0, 0.5):
            for seed in range(3):
                variants.append(
                    {"model.type": arm, "model.channels": widths, "model.dropout": dropout, "train.seed": seed}
                )
                accuracy = 0.8 + 0.01 * seed + planted[arm] - 0.02 * dropout
                trials.append({"variant": len(variants) - 1, "metrics": {"test_accuracy": accuracy}})
    study = load_study(make_study(tmp_path / "arms", variants, trials))
    assert {"model.type", "model.channels", "model.dropout"} <= set(study.factors)
    contrasts = {c.factor: c for c in factor_contrasts(study.usable, study.factors, ("test_accuracy",))}
    assert "model.channels" not in contrasts  # one-to-one with model.type: the same pairs
    kind = contrasts["model.type"]
    by = {e.regularizer: e for e in kind.effects}
    assert kind.reference == "fc" and set(by) == {"simple_cnn vs fc", "resnet_basic vs fc"}
    assert by["simple_cnn vs fc"].n_pairs == 6 and by["simple_cnn vs fc"].mean_diff == pytest.approx(0.05)
    assert by["resnet_basic vs fc"].mean_diff == pytest.approx(0.07)
    (dropout,) = contrasts["model.dropout"].effects
    assert dropout.n_pairs == 9 and dropout.mean_diff == pytest.approx(-0.01)  # paired within each arm and seed


def test_a_key_only_one_arm_sets_is_contrasted_within_that_arm(tmp_path):
    """cifar100_pooling's shape: arm 1 varies pooling; arm 2 fixes pooling at stride and varies global pooling,
    which arm 1 leaves at its base value. Global max vs avg pair within arm 2; pooling pairs within arm 1."""
    from geotune.analysis.stats import factor_contrasts

    variants, trials = [], []
    for seed in range(3):
        for pool in ("stride", "max"):
            variants.append({"model.pooling": pool, "train.seed": seed})
            trials.append(
                {"variant": len(variants) - 1, "metrics": {"test_accuracy": 0.8 + 0.01 * seed + 0.02 * (pool == "max")}}
            )
        for glob in ("max", "avg"):
            variants.append(
                {"model.pooling": "stride", "model.strides": [4, 2], "model.global_pool": glob, "train.seed": seed}
            )
            trials.append(
                {"variant": len(variants) - 1, "metrics": {"test_accuracy": 0.7 + 0.01 * seed - 0.03 * (glob == "avg")}}
            )
    study = load_study(make_study(tmp_path / "two_arms", variants, trials))
    contrasts = {c.factor: c for c in factor_contrasts(study.usable, study.factors, ("test_accuracy",))}
    (glob,) = contrasts["model.global_pool"].effects
    assert glob.regularizer == "avg vs max" and glob.n_pairs == 3 and glob.mean_diff == pytest.approx(-0.03)
    (pool,) = contrasts["model.pooling"].effects
    assert pool.regularizer == "max vs stride" and pool.n_pairs == 3 and pool.mean_diff == pytest.approx(0.02)


def test_an_interaction_is_the_difference_of_differences_within_each_block(tmp_path):
    from geotune.analysis.stats import factor_interactions

    study = planted_study(tmp_path)
    pairing, effects = factor_interactions(study.usable, study.factors, ("test_accuracy", "silhouette"))
    by = {(e.regularizer, e.metric): e for e in effects}
    planted = by[("batch_norm=true x pooling=avg", "test_accuracy")]
    assert planted.n_pairs == 15  # 3 kernel sizes x 5 seeds
    # against the four cells of each block, joined independently
    frame = study.usable
    cell = {
        (bool(r["model.batch_norm"]), r["model.pooling"], r["model.kernel_size"], r["train.seed"]): r["test_accuracy"]
        for _, r in frame.iterrows()
    }
    dd = [
        cell[(True, "avg", k, s)] - cell[(False, "avg", k, s)] - cell[(True, "max", k, s)] + cell[(False, "max", k, s)]
        for k in (3, 5, 7)
        for s in range(5)
    ]
    assert planted.mean_diff == pytest.approx(sum(dd) / 15, abs=1e-12)
    assert planted.ci_low < 0.02 < planted.ci_high and planted.ci_low > 0  # planted: +0.02
    low, high = sps.t.interval(0.95, 14, loc=sum(dd) / 15, scale=sps.sem(dd))
    assert (planted.ci_low, planted.ci_high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert planted.p_value == pytest.approx(sps.wilcoxon(dd).pvalue, rel=1e-9)
    # BatchNorm and kernel size add up: no interaction planted, none found
    null = by[("batch_norm=true x kernel_size=7", "test_accuracy")]
    assert null.ci_low < 0 < null.ci_high
    # the report: a finding for the planted one only, a table and a forest
    report = build_report(study)
    found = [f for f in report.findings if f.startswith("**Interaction**")]
    assert len(found) == 1 and "batch_norm=true x pooling=avg: test accuracy +" in found[0]
    assert "interactions" in {t.key for t in report.tables}
    assert "forest_interactions" in {f.key for f in report.figures}


def paired_t_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """The power of a two-sided paired t-test in closed form: the noncentral t beyond both critical values."""
    df, nc = n - 1, difference / sd * math.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)
    return float(sps.nct.sf(crit, df, nc) + sps.nct.cdf(-crit, df, nc))


@pytest.mark.parametrize("n, sd", [(3, 0.01), (5, 1.0), (12, 0.3), (40, 2.0), (73, 1.0), (87, 0.5)])  # 73, 87:
# statsmodels' own solve_power returns a negative root or an array there
def test_the_detectable_difference_has_80_percent_power_in_closed_form(n, sd):
    from geotune.analysis.stats import detectable_difference, seeds_to_detect

    smallest = detectable_difference(sd, n)
    assert paired_t_power(smallest, sd, n) == pytest.approx(0.8, abs=1e-4)
    assert paired_t_power(0.9 * smallest, sd, n) < 0.8
    # and back: the seeds that detect that size are these n (the next fewer fall short of 80%)
    needed = seeds_to_detect(smallest * 1.0001, sd)
    assert needed == max(3, n) and (needed == 3 or paired_t_power(smallest, sd, needed - 1) < 0.8)
    assert detectable_difference(sd, 2) is None and detectable_difference(0.0, n) is None


def test_report_detect_prints_the_seeds_each_effect_needs(tmp_path, cli):
    study = planted_study(tmp_path, seeds=3)
    done = cli("report", study.study_dir, "--detect", "test_accuracy=0.001")
    assert done.returncode == 0, done.stderr
    assert "Seeds needed to detect a change of the size you named" in done.stdout
    line = next(row for row in done.stdout.splitlines() if row.startswith("true vs false"))
    assert "test accuracy" in line and line.split()[-1].isdigit() and int(line.split()[-1]) > 3
    assert "Seeds needed" in (Path(study.study_dir) / "report" / "REPORT.md").read_text()
    for bad, why in (("accuracy=0.01", "unknown metric 'accuracy'"), ("test_accuracy=abc", "CHANGE must be")):
        done = cli("report", study.study_dir, "--detect", bad)
        assert done.returncode == 2 and why in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_spaces_reference_level_is_what_the_report_compares_with(tmp_path):
    study = planted_study(tmp_path, seeds=3)
    study.plan.reference = {"model.batch_norm": True}
    report = build_report(study)
    table = next(t for t in report.tables if t.key == "contrast_model.batch_norm")
    assert "each level minus true (the space's reference)" in table.title
    assert {row[0] for row in table.rows} == {"false vs true"}


def test_a_reference_the_space_does_not_plan_is_refused_when_planning(tmp_path):
    from geotune.errors import ConfigError
    from geotune.search_spaces.space import load_space
    from geotune.study.plan import RunOptions, make_plan

    space = load_space("bn_gradients")
    assert make_plan(space, {}, RunOptions(storage=str(tmp_path))).reference == {
        "model.batch_norm": False,
        "model.output": "softmax",
    }
    for reference, why in (
        ({"model.pooling": "max"}, "reference 'model.pooling' is not a key the space varies"),
        ({"model.output": "entmax"}, "reference model.output = 'entmax' is not one of its levels (softmax, sparsemax)"),
    ):
        space.reference = reference
        with pytest.raises(ConfigError, match=re.escape(why)):
            make_plan(space, {}, RunOptions(storage=str(tmp_path)))


def test_a_key_only_one_arm_varies_is_compared_within_that_arm(tmp_path):
    from geotune.analysis.stats import factor_contrasts

    variants = [{"model.pooling": p, "train.seed": s} for p in ("avg", "l2") for s in range(3)]
    variants += [{"model.global_pool": g, "train.seed": s} for g in ("avg", "max") for s in range(3)]
    trials = [{"variant": i, "metrics": {"test_accuracy": 0.9 + 0.01 * (i // 3)}} for i in range(len(variants))]
    study = load_study(make_study(tmp_path / "arms", variants, trials))
    contrasts = {c.factor: c for c in factor_contrasts(study.usable, study.factors, ("test_accuracy",))}
    # the first level listed (the first arm's, which leaves global_pool at its default) has no twin in the
    # second arm, whose trials keep the default pooling: the second arm's own first level is the reference
    pool = contrasts["model.global_pool"]
    assert (pool.reference, pool.why) == ("avg", "the first level the study lists that has twins")
    assert len(pool.pairing.pairs) == 3
    assert pool.effects[0].mean_diff == pytest.approx(0.01)
    assert pool.effects[0].p_value is None and "differences are equal" in pool.effects[0].note  # no spread, no p
    assert contrasts["model.pooling"].reference == "avg" and len(contrasts["model.pooling"].pairing.pairs) == 3


@pytest.mark.parametrize("resolved", [0.0, 1.0])
def test_a_factors_flatness_difference_is_a_finding_only_where_classes_can_show_a_bend(tmp_path, resolved):
    variants = [{"model.batch_norm": bn, "train.seed": s} for bn in (False, True) for s in range(4)]
    trials = [
        {
            "variant": i,
            "metrics": {
                "flatness_calibrated_per_class": 1.05 + 0.02 * v["model.batch_norm"] + 0.001 * (i % 3),
                "flatness_resolved_per_class": resolved,
            },
        }
        for i, v in enumerate(variants)
    ]
    report = build_report(load_study(make_study(tmp_path / "flat", variants, trials)))
    finding = next(f for f in report.findings if f.startswith("**model.batch_norm**"))
    if resolved:
        assert "flatness within classes +0.02" in finding and "left out" not in finding
    else:
        assert "flatness within classes" not in finding and "Flatness is left out" in finding


def test_the_report_lists_the_best_trials_classes_worst_first(tmp_path):
    study = planted_study(tmp_path, seeds=2)
    scores = {
        "test": {
            "0": {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 20.0},
            "1": {"precision": 1.0, "recall": 1.0, "f1-score": 1.0, "support": 21.0},
            "2": {"precision": 0.5, "recall": 0.7, "f1-score": 0.58, "support": 19.0},
            "accuracy": 0.86,
            "macro avg": {"precision": 0.8, "recall": 0.83, "f1-score": 0.81, "support": 60.0},
        }
    }
    latent = {"per_class": {"2": {"linear_separability": 0.75, "intrinsic_dim_twonn": 4.25}}}
    for path in study.frame["path"]:
        (Path(path) / "classification_report.json").write_text(json.dumps(scores))
        (Path(path) / "geometry_summary.json").write_text(json.dumps(latent))
    report = build_report(study)
    table = next(t for t in report.tables if t.key == "best_per_class")
    assert report.best["trial"] in table.title
    assert [row[0] for row in table.rows] == ["2", "0", "1"]  # worst F1 first; averages left out
    # the latent columns come from the geometry summary's per-class entries; a class without one shows "-"
    assert table.rows[0] == ["2", "0.500", "0.700", "0.580", 19, "0.750", "4.25"]
    assert table.rows[1][5:] == ["-", "-"]


@pytest.mark.parametrize("penalty", [0.0, 0.02])
def test_a_penalty_that_never_acted_is_reported_as_such_not_as_an_effect(tmp_path, penalty):
    """A GPU's nondeterministic kernels make twins differ a little even when the penalty was 0 on every step:
    reg_loss_max (the largest epoch mean of the penalty) says so, and the finding does not read the noise."""
    trials = [
        {
            "variant": i,
            "metrics": {
                "test_accuracy": 0.9 + 0.01 * v["train.seed"] + (0.0005 if v["regularizer.name"] == "geodesic" else 0),
                "reg_loss_max": penalty if v["regularizer.name"] == "geodesic" else 0.0,
            },
        }
        for i, v in enumerate(REG_GRID)
    ]
    report = build_report(load_study(make_study(tmp_path / "s", REG_GRID, trials)))
    finding = next(f for f in report.findings if f.startswith("**geodesic**"))
    if penalty == 0:
        assert "trained like its baselines (3 pairs; its penalty was 0 on every step" in finding
        assert "says nothing about what it does" in finding and "test accuracy" not in finding
    else:
        assert "vs no regularizer" in finding and "test accuracy +0.05" in finding


def test_the_performance_table_shows_every_column_it_names(tmp_path):
    variants = [{"model.batch_norm": bn, "train.seed": s} for bn in (False, True) for s in (0, 1, 2)]
    trials = [{"variant": i, "metrics": {"train_test_gap": 0.01 * i}} for i in range(6)]
    report = build_report(load_study(make_study(tmp_path / "gap", variants, trials)))
    table = next(t for t in report.tables if t.key == "groups_performance")
    gap = table.headers.index("train minus test accuracy (kept model, eval mode)")
    assert [row[gap].split(" ")[0] for row in table.rows] == ["0.010", "0.040"]  # means of 0, 1, 2 and 3, 4, 5


def test_training_curves_are_the_median_and_interquartile_range_over_seeds(tmp_path):
    from geotune.analysis import figure_data as fd

    study = planted_study(tmp_path, seeds=3)
    frame = study.usable.iloc[:3].copy()
    frame["group"] = "a"
    # three trials of one group; epoch 2 holds one diverging seed, which a mean +/- std band would follow
    values = {
        frame["trial"].iloc[0]: [0.1, 0.2],
        frame["trial"].iloc[1]: [0.3, 0.4],
        frame["trial"].iloc[2]: [0.5, 4.0],
    }
    histories = {
        t: [
            {"epoch": e + 1, "val_loss": v, "flatness_calibrated_per_class": 1 + v if e else None}
            for e, v in enumerate(vs)
        ]
        for t, vs in values.items()
    }
    curves = fd.curve_bands(frame, histories, ["group"], ("val_loss", "flatness_calibrated_per_class", "absent"))
    assert curves.keys == ["val_loss", "flatness_calibrated_per_class"]  # keys no history holds are left out
    (band,) = curves.groups["val_loss"]
    assert band.x == [1, 2] and band.n == [3, 3]
    assert band.centre == pytest.approx([0.3, 0.4])
    assert band.low == pytest.approx([0.2, 0.3]) and band.high == pytest.approx([0.4, 2.2])  # numpy's linear quartiles
    (geometry,) = curves.groups["flatness_calibrated_per_class"]
    assert geometry.x == [2] and geometry.centre == pytest.approx([1.4])  # measured on epoch 2 only


def test_the_output_comparison_holds_the_same_test_images_of_each_groups_best_trial(tmp_path):
    from geotune.analysis import figure_data as fd
    from geotune.analysis.figures import draw_output_examples

    variants = [{"model.output": o, "train.seed": s} for o in ("softmax", "sparsemax") for s in (0, 1)]
    trials = [{"variant": v, "metrics": {"val_accuracy": 0.8 + 0.05 * v}} for v in range(4)]
    study = load_study(make_study(tmp_path / "s", variants, trials))
    rng = np.random.default_rng(0)
    for _, row in study.usable.iterrows():
        output = row["model.output"]
        examples = [
            {
                "index": i,
                "label": c,
                "logits": rng.standard_normal(3).tolist(),
                "thumbnail": np.full((4, 5, 1), i).tolist(),
            }
            for c, i in enumerate([7, 3, 9] if output == "softmax" else [3, 9, 11])
        ]
        for e in examples:
            e["probabilities"] = (np.exp(e["logits"]) / np.exp(e["logits"]).sum()).tolist()
        (Path(row["path"]) / "test_examples.json").write_text(
            json.dumps({"output": output, "class_names": ["a", "b", "c"], "examples": examples})
        )
    data = fd.output_examples(study.usable, study.factors, "val_accuracy", "max", "test_examples.json")
    assert data.indices == [3, 9]  # only the images every group saw, in the first group's order
    assert len(data.groups) == 2 and "output=sparsemax" in data.groups[1]
    usable = study.usable
    best = [usable[usable["model.output"] == o].sort_values("val_accuracy").iloc[-1] for o in variants_of(data)]
    for g, row in enumerate(best):
        stored = json.loads((Path(row["path"]) / "test_examples.json").read_text())["examples"]
        by_index = {e["index"]: e for e in stored}
        assert data.logits[g].tolist() == [by_index[i]["logits"] for i in (3, 9)]
        assert data.probabilities[g].tolist() == [by_index[i]["probabilities"] for i in (3, 9)]
    assert data.images[0].shape == (4, 5, 1) and int(data.images[0].max()) == 3
    assert draw_output_examples(data).axes  # draws
    keys = {spec.key for spec in build_report(study).figures}
    assert {"output_examples", "activations", "confusion_matrices", "data_samples"} <= keys
    assert (
        fd.output_examples(study.usable, [], "val_accuracy", "max", "test_examples.json") is None
    )  # output not varied


def variants_of(data) -> list[str]:
    return [label.split("output=")[1].split(",")[0].split(" ")[0] for label in data.groups]


def test_the_per_variant_bars_hold_each_variants_mean_and_interval(tmp_path):
    from geotune.analysis import figure_data as fd
    from geotune.analysis.stats import group_summary

    study = planted_study(tmp_path, seeds=3)
    cells = group_summary(study.usable, study.factors, ("test_accuracy", "num_parameters"))
    bars = fd.variant_bars(cells, ("test_accuracy", "num_parameters", "not_a_metric"))
    assert bars.metrics == ["test_accuracy"]  # synthetic trials record no size; unknown metrics are left out
    assert len(bars.variants) == 12  # 2 BatchNorm x 2 pooling x 3 kernels
    frame = study.usable
    label = bars.variants[0]
    first = cells.iloc[0]
    members = frame[
        (frame["model.batch_norm"] == first["model.batch_norm"])
        & (frame["model.pooling"] == first["model.pooling"])
        & (frame["model.kernel_size"] == first["model.kernel_size"])
    ]
    assert bars.means[(label, "test_accuracy")] == pytest.approx(members["test_accuracy"].mean())
    low, high = bars.intervals[(label, "test_accuracy")]
    assert low < bars.means[(label, "test_accuracy")] < high
    assert "variant_bars" in {spec.key for spec in build_report(study).figures}
    assert fd.variant_bars(cells.iloc[:1], ("test_accuracy",)) is None  # one variant: nothing to compare


# ---------------------------------------------------------------------------
# a report for every study (issue 35 item 1)


def test_an_optuna_study_of_every_parameter_type_gets_its_report(tmp_path):
    """Categorical (strings and booleans), log-uniform, integer and conditional (not sampled by every trial)
    parameters: the Optuna figure codes a choice by its position and leaves a gap where a trial did not sample."""
    import optuna

    from geotune.analysis import figure_data as fd
    from geotune.analysis.figures import draw_optuna
    from geotune.layout import optuna_url

    sampled = [
        {"regularizer.geodesic.target": "flat", "regularizer.geodesic.lambda_reg": 0.01, "model.batch_norm": True},
        {"regularizer.geodesic.target": "fixed", "regularizer.geodesic.lambda_reg": 0.3, "model.batch_norm": False},
        {"regularizer.geodesic.target": "fixed", "regularizer.geodesic.lambda_reg": 0.1, "model.batch_norm": True},
    ]
    variants = [{**v, "train.seed": 0} for v in sampled]
    trials = [{"variant": i, "metrics": {"val_accuracy": 0.8 + 0.05 * i}} for i in range(3)]
    root = make_study(tmp_path / "o", variants, trials, optuna=True)
    distributions = {
        "regularizer.geodesic.target": optuna.distributions.CategoricalDistribution(["flat", "fixed"]),
        "regularizer.geodesic.lambda_reg": optuna.distributions.FloatDistribution(1e-3, 1.0, log=True),
        "model.batch_norm": optuna.distributions.CategoricalDistribution([True, False]),
        "regularizer.geodesic.n_neighbors": optuna.distributions.IntDistribution(3, 8),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="synthetic", storage=optuna_url(root), direction="maximize")
    for i, params in enumerate(sampled):
        params = dict(params, **({"regularizer.geodesic.n_neighbors": 5} if i != 1 else {}))  # trial 1: not sampled
        used = {k: distributions[k] for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=used, value=0.8 + 0.05 * i))
    report = build_report(load_study(root))
    views = next(spec for spec in report.figures if spec.key == "optuna").data
    assert views.categories == {
        "model.batch_norm": ["True", "False"],
        "regularizer.geodesic.target": ["flat", "fixed"],
    }
    assert views.params["regularizer.geodesic.target"] == [0.0, 1.0, 1.0]
    assert views.params["model.batch_norm"] == [0.0, 1.0, 0.0]
    assert views.params["regularizer.geodesic.lambda_reg"] == pytest.approx([0.01, 0.3, 0.1])
    assert views.params["regularizer.geodesic.n_neighbors"][0] == 5 and math.isnan(
        views.params["regularizer.geodesic.n_neighbors"][1]
    )
    assert draw_optuna(views).axes
    written = write_report(root)
    assert (written.parent / "figures" / "optuna.png").is_file() and (written.parent / "summary.csv").is_file()
    assert fd.optuna_views(optuna_url(root), "no such study") is None


def test_a_study_whose_trials_all_failed_gets_a_report_that_says_why(tmp_path, cli):
    variants = [
        {"regularizer.name": "geodesic", "regularizer.geodesic.lambda_reg": v, "train.seed": 0} for v in (0.1, 1.0)
    ]
    variants.append({"regularizer.name": "none", "regularizer.geodesic.lambda_reg": 0.1, "train.seed": 0})
    trials = [
        {"variant": 0, "status": "failed"},
        {"variant": 1, "status": "failed"},
        {"variant": 2, "status": "interrupted"},
    ]
    root = make_study(tmp_path / "all_failed", variants, trials)
    proc = cli("report", root)
    assert proc.returncode == 0, proc.stderr
    page = (root / "report" / "REPORT.md").read_text()
    findings = page.split("## Findings")[1].split("## Plan")[0]
    assert "**No trial finished** (2 failed, 1 interrupted)" in findings
    assert (
        "The commonest reason (2 of 2): geotune.trainables.loop.NonFiniteLossError: the task loss became nan"
        in findings
    )
    assert f"`geotune resume {root}`" in findings
    assert "Trials without final results" in page and "Paired effect" not in page
    assert (root / "report" / "summary.csv").is_file() and (root / "report" / "index.html").is_file()


def _synthetic_of(space, root: Path) -> Path:
    """A finished study of ``space``'s own planned trials (an Optuna space: six of its samples, kept in its
    optuna.db), with seeded random metrics: what the report of each built-in space must digest."""
    import optuna

    from geotune.layout import optuna_url

    rng = np.random.default_rng(7)
    metric = lambda: {  # noqa: E731 (one line per trial)
        "val_accuracy": float(rng.uniform(0.6, 0.99)),
        "test_accuracy": float(rng.uniform(0.6, 0.99)),
        "test_miou": float(rng.uniform(0.3, 0.9)),
        "val_miou": float(rng.uniform(0.3, 0.9)),
        "test_dice": float(rng.uniform(0.3, 0.9)),
        "flatness_calibrated_per_class": float(rng.uniform(1.0, 1.1)),
        "participation_ratio_per_class": float(rng.uniform(2, 6)),
        "num_parameters": int(rng.integers(10_000, 90_000)),
    }
    if not space.is_optuna:
        variants = space.variants()
        trials = [{"variant": i, "metrics": metric()} for i in range(len(variants))]
        return make_study(root, variants, trials, base=space.base, space=space.name)
    variants = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searched = root.with_name(root.name + "-search")  # make_study writes a new folder: the search goes in after
    searched.mkdir(parents=True)
    study = optuna.create_study(study_name=space.name, storage=optuna_url(searched), direction="maximize")
    for _ in range(6):
        trial = study.ask()
        space.optuna(trial)
        study.tell(trial, float(rng.uniform(0.6, 0.99)))
        variants.append({**trial.params, "train.seed": 0})
    trials = [{"variant": i, "metrics": metric()} for i in range(len(variants))]
    made = make_study(root, variants, trials, base=space.base, space=space.name, optuna=True)
    (searched / "optuna.db").rename(made / "optuna.db")
    return made


@pytest.mark.parametrize("name", __import__("geotune.search_spaces.space", fromlist=["x"]).builtin_space_names())
def test_every_built_in_space_gets_its_report(name, tmp_path):
    """Every parameter type a built-in space plans or samples (lists, tuples, booleans, strings, log-uniform
    floats, conditional Optuna parameters) goes through the report's tables and figures without an error."""
    from geotune.search_spaces.space import load_space

    space = load_space(name)
    root = _synthetic_of(space, tmp_path / name)
    report = build_report(load_study(root))  # every table and every figure's data
    assert report.best is not None and report.findings
    keys = {spec.key for spec in report.figures}
    crossed = {k for arm in space.grid for k, v in arm.items() if len(v) > 1 and not k.startswith("regularizer.")}
    assert {f"forest_{factor}" for factor in crossed} <= keys  # each factor an arm varies: its paired forest
    if space.is_optuna:  # drawn too: the parallel coordinates of strings, booleans and gaps
        assert "optuna" in {spec.key for spec in report.figures}
        written = write_report(root)
        assert (written.parent / "figures" / "optuna.png").is_file() and (written.parent / "summary.csv").is_file()


def test_cka_tells_a_factor_that_changes_the_representation_from_one_that_does_not(tmp_path):
    """BatchNorm maps the features through another representation (tanh of a random mixing); pooling changes
    nothing; every trial adds its own small noise (a seed's own change). Only BatchNorm is read as a change
    beyond seed noise."""
    from geotune.analysis.stats import representation_shifts
    from geotune.latents_file import write_latents

    rng = np.random.default_rng(0)
    base = rng.standard_normal((300, 8))
    mixing = rng.standard_normal((8, 8))
    variants = [
        {"model.batch_norm": bn, "model.pooling": pool, "train.seed": s}
        for bn in (False, True)
        for pool in ("max", "avg")
        for s in range(4)
    ]
    trials = [{"variant": i} for i in range(len(variants))]
    study = load_study(make_study(tmp_path / "cka", variants, trials))
    for _, row in study.usable.iterrows():
        features = np.tanh(base @ mixing) if row["model.batch_norm"] else base
        features = features + 0.1 * rng.standard_normal(features.shape)
        labels = np.zeros(300, dtype=int)
        write_latents(Path(row["path"]) / "latents.npz", features, labels, None, ["a"], "train", features)
    features = {
        t: np.load(Path(p) / "latents.npz")["test_embeddings"]
        for t, p in zip(study.usable["trial"], study.usable["path"])
    }
    shifts = {s.factor: s for s in representation_shifts(study.usable, study.factors, features)}
    bn, pool = shifts["model.batch_norm"], shifts["model.pooling"]
    assert bn.between.n == 8 and pool.between.n == 8  # 2 levels of the other factor x 4 seeds
    assert bn.within.n == 4 * 6  # 4 variants x (4 choose 2) seed pairs
    assert bn.beyond_seed_noise is True and bn.between.mean < 0.9 < bn.within.mean
    assert pool.beyond_seed_noise is False
    report = build_report(study)
    matrix = next(spec for spec in report.figures if spec.key == "cka_matrix").data
    assert matrix.labels[:2] == ["batch_norm=false, pooling=avg, seed 0", "batch_norm=false, pooling=avg, seed 1"]
    assert matrix.values.shape == (16, 16) and np.allclose(np.diag(matrix.values), 1.0) and matrix.left_out == 0
    table = next(t for t in report.tables if t.key == "representation")
    assert "on the first 300 test images" in table.title
    assert {row[0]: row[3] for row in table.rows} == {
        "model.batch_norm": "changed beyond seed noise",
        "model.pooling": "within seed noise",
    }
    # the findings say it per factor's level, against its reference twins and a new seed
    said = {line.split("**")[1]: line for line in report.findings if line.startswith("**model.")}
    batch_norm = said["model.batch_norm"]
    assert "Representation (true vs false): linear CKA with its twin at false" in batch_norm
    assert "changed beyond seed noise" in batch_norm
    assert "within seed noise" in said["model.pooling"] and "beyond" not in said["model.pooling"]


def test_each_regularizers_finding_holds_its_representation_against_a_new_seed(tmp_path):
    """The geodesic trials' features are a nonlinear remix of their baselines' (CKA 0.565); a new seed adds
    only small noise (about 0.98): the finding says the representation changed beyond seed noise."""
    from geotune.latents_file import write_latents

    rng = np.random.default_rng(2)
    base, mixing = rng.standard_normal((300, 8)), rng.standard_normal((8, 8))
    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in range(4)]
    trials = [
        {"variant": i, "metrics": {"test_accuracy": 0.9 + rng.normal(0, 0.01), "reg_loss_max": 0.1}}
        for i in range(len(variants))
    ]
    study = load_study(make_study(tmp_path / "cka", variants, trials))
    for _, row in study.usable.iterrows():
        features = np.tanh(base @ mixing) if row["regularizer.name"] == "geodesic" else base
        features = features + 0.1 * rng.standard_normal(features.shape)
        write_latents(Path(row["path"]) / "latents.npz", features, np.zeros(300, int), None, ["a"], "train", features)
    finding = next(line for line in build_report(study).findings if line.startswith("**geodesic"))
    assert "Representation: linear CKA with its baseline 0.565 [0.561, 0.568] (4 pairs) against 0.98" in finding
    assert "between two seeds of one variant: changed beyond seed noise." in finding


@pytest.mark.parametrize("drop", [0.2, 0.0])
def test_the_findings_name_neural_collapse_apart_from_dimensional_collapse(tmp_path, drop):
    """NC1 planted down by 0.2 over 12 seeds (the participation ratio unchanged): the finding says neural collapse,
    and no dimensional collapse; with no change, that NC1 did not change detectably."""
    rng = np.random.default_rng(1)
    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in range(12)]
    trials = [
        {
            "variant": i,
            "metrics": {
                "nc1": 0.5
                + 0.01 * v["train.seed"]
                - (drop if v["regularizer.name"] == "geodesic" else 0.0)
                + rng.normal(0, 0.002),
                "reg_loss_max": 0.1 if v["regularizer.name"] == "geodesic" else 0.0,
            },
        }
        for i, v in enumerate(variants)
    ]
    report = build_report(load_study(make_study(tmp_path / "nc", variants, trials)))
    finding = next(f for f in report.findings if f.startswith("**geodesic**"))
    if drop:
        assert "**Neural collapse**: NC1 -0.200 [" in finding and "drew towards its mean" in finding
        assert "lost spread over dimensions" not in finding
    else:
        assert "NC1 did not change detectably" in finding and "**Neural collapse**" not in finding
