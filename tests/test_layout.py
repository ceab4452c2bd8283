"""The typed study format: study.json as StudyPlan, statuses and stop reasons, versions, one comparison schema."""

from __future__ import annotations

import json
import re

import pytest

from geotune.errors import ConfigError
from geotune.layout import (
    STUDY_FILE,
    PlanKind,
    StopReason,
    StudyPlan,
    TrialStatus,
    clean_json,
    finished_status,
    stop_of,
)
from geotune.metric_names import COMPARED, HEADLINE, METRICS, SUMMARY
from geotune.provenance import versions
from synthetic import make_study, study_plan


def plan(tmp_path, **changes) -> StudyPlan:
    return study_plan(
        tmp_path, [{"regularizer.name": "none", "train.seed": 0}], base={"train": {"epochs": 3}}, **changes
    )


def test_study_json_round_trips_as_a_typed_plan(tmp_path):
    original = plan(tmp_path, kind=PlanKind.TRAIN, versions={"geotune": "0.2.0", "git_commit": None})
    original.save()
    data = json.loads((tmp_path / STUDY_FILE).read_text())
    assert data["kind"] == "train" and data["versions"] == {"geotune": "0.2.0", "git_commit": None}
    moved = tmp_path / "moved"
    (tmp_path / STUDY_FILE).rename(tmp_path / "x")
    moved.mkdir()
    (tmp_path / "x").rename(moved / STUDY_FILE)
    loaded = StudyPlan.load(str(moved))
    assert loaded.kind is PlanKind.TRAIN and loaded.study_dir == str(moved), "the folder may move"
    assert loaded.epochs == 3 and loaded.variants_by_label() == {"name=none,seed=0": original.variants[0]}


def test_a_plan_from_an_older_geotune_loads_with_defaults_and_unknown_keys_are_ignored(tmp_path):
    data = plan(tmp_path).to_dict()
    for key in ("kind", "versions", "warnings"):
        data.pop(key)
    data["from_the_future"] = 1
    (tmp_path / STUDY_FILE).write_text(json.dumps(data))
    loaded = StudyPlan.load(str(tmp_path))
    assert loaded.kind is PlanKind.STUDY and loaded.versions == {} and loaded.warnings == []


def test_a_damaged_plan_is_one_line_and_find_treats_it_as_absent(tmp_path):
    (tmp_path / STUDY_FILE).write_text("[1, 2]")
    with pytest.raises(ConfigError, match="is damaged or not a geotune plan"):
        StudyPlan.load(str(tmp_path))
    assert StudyPlan.find(tmp_path) is None
    assert StudyPlan.find(tmp_path / "nowhere") is None


@pytest.mark.parametrize(
    ("metrics", "stop", "status"),
    [
        ({"stop": "completed"}, StopReason.COMPLETED, TrialStatus.COMPLETED),
        ({"stop": "patience"}, StopReason.PATIENCE, TrialStatus.EARLY_STOP),
        ({"stop": "scheduler"}, StopReason.SCHEDULER, TrialStatus.STOPPED),
        # metrics.json of geotune 0.1 carries only the sentence
        ({"stop_reason": "completed all epochs"}, StopReason.COMPLETED, TrialStatus.COMPLETED),
        (
            {"stop_reason": "early stop: val_loss did not improve for 5 epochs"},
            StopReason.PATIENCE,
            TrialStatus.EARLY_STOP,
        ),
        ({"stop_reason": "stopped by the scheduler"}, StopReason.SCHEDULER, TrialStatus.STOPPED),
    ],
)
def test_stop_reasons_map_to_statuses(metrics, stop, status):
    assert stop_of(metrics) is stop and finished_status(metrics) is status
    assert status.usable and stop_of({"stop": stop.value, "stop_reason": stop.sentence(5)}) is stop


def test_the_typed_stop_and_its_sentence_agree():
    assert StopReason.PATIENCE.sentence(4) == "early stop: val_loss did not improve for 4 epochs"
    assert {s.value for s in TrialStatus if not s.usable} == {"failed", "interrupted", "pending", "missing"}
    with pytest.raises(ValueError):
        stop_of({"stop": "bored"})


def test_clean_json_makes_numpy_and_non_finite_values_plain():
    np = pytest.importorskip("numpy")
    data = {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan"), 4: [np.bool_(True), StopReason.COMPLETED]}
    assert clean_json(data) == {"a": 1.5, "b": [0, 1, 2], "c": None, "4": [True, "completed"]}


def test_versions_name_the_libraries_and_the_commit():
    found = versions()
    assert set(found) == {"geotune", "torch", "ray", "optuna", "numpy", "git_commit"}
    assert all(found[name] for name in ("geotune", "torch", "ray", "optuna", "numpy"))
    assert found["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", found["git_commit"])


def test_every_listed_metric_is_registered():
    for view in (SUMMARY, HEADLINE, COMPARED):
        assert not set(view) - set(METRICS), view


def test_one_comparison_schema_for_a_study_and_for_one_pair(tmp_path):
    from geotune.analysis.comparison import comparison_report, single_pair
    from geotune.analysis.load import load_study
    from geotune.analysis.stats import pair_with_baselines, paired_effects

    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in (0, 1, 2)]
    for name, trials in (("three", range(6)), ("one", [0, 3])):
        study = load_study(
            make_study(
                tmp_path / name,
                variants,
                [{"variant": i, "metrics": {"test_accuracy": 0.9 + 0.001 * i * i}} for i in trials],
            )
        )
        pairing = pair_with_baselines(study.usable)
        report = comparison_report(pairing, paired_effects(pairing), single_pair(pairing, study.frame))
        assert {"schema_version", "effects", "pairs", "unpaired"} <= set(report)
        if name == "three":
            assert len(report["pairs"]) == 3 and "runs" not in report
        else:  # geotune compare's case: the one pair in full, in the same file
            assert len(report["pairs"]) == 1
            d = report["differences"]["test_accuracy"]
            assert d["absolute"] == pytest.approx(0.009) and d["baseline"] == pytest.approx(0.9)
            assert report["runs"]["regularized"]["trial"].endswith("name=geodesic,seed=0")
            acc = next(e for e in report["effects"] if e["metric"] == "test_accuracy")
            assert acc["n_pairs"] == 1 and acc["test"] is None and acc["mean_diff"] == pytest.approx(0.009)
