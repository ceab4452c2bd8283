"""Faults that show (issue 35 item 2): a retried trial says so, is counted pending until it runs again, and its
crashes reach metrics.json, the closing summary and the report; a study whose trials cannot be placed stops
after --pending-timeout with what was missing. The end-to-end cases: a crash retried by Tune in
tests/test_trial.py, a lost node in tests/test_cluster.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from geotune.layout import TrialStatus, failure_record, failures_text, recovery_of
from geotune.study.placement import PendingWatch, stuck_message
from geotune.study.progress import StudyProgress, TrialRetries, TrialSummary, summary_text
from synthetic import make_study


def test_recovery_counts_failures_and_the_epochs_trained_again():
    failures = [
        {"attempt": 1, "node": "127.0.0.3", "epoch_reached": 5, "checkpoint_epoch": 3, "error": "x"},
        {"attempt": 2, "node": "127.0.0.2", "epoch_reached": 4, "checkpoint_epoch": 4, "error": "y"},
        {"attempt": 3, "node": None, "epoch_reached": 2, "checkpoint_epoch": None, "error": "z"},  # no checkpoint
    ]
    assert failure_record(failures_text(failures)) == failures
    assert recovery_of(failures) == {"failures": 3, "epochs_retrained": 2 + 0 + 2}
    assert recovery_of([]) == {"failures": 0, "epochs_retrained": 0}
    assert failure_record(None) == [] and failure_record("not json") == [] and failure_record('{"failures": 3}') == []


def _trial(path: Path, status: str = "RUNNING", **extra):
    saved = SimpleNamespace(metrics={"epoch": 3})
    return SimpleNamespace(
        trial_id="t1",
        status=status,
        path=str(path),
        last_result={"epoch": 4, "node_ip": "127.0.0.3"},
        latest_checkpoint_result=saved,
        run_metadata=SimpleNamespace(num_failures=1),
        max_failures=2,
        error_file=None,
        get_error=lambda: "Traceback...\nray.exceptions.ActorDiedError: The actor died unexpectedly",
        **extra,
    )


def test_a_retried_trial_gets_one_line_and_its_crash_is_recorded(tmp_path, capsys):
    folder = tmp_path / "00001_lr=0.1"
    folder.mkdir()
    trial = _trial(folder)
    TrialRetries().on_trial_recover(0, [trial], trial)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "geotune: trial 00001_lr=0.1 failed on node 127.0.0.3 after epoch 4 (ray.exceptions.ActorDiedError: The "
        "actor died unexpectedly); retrying from its checkpoint of epoch 3, attempt 1 of 2"
    ]
    trial.run_metadata.num_failures = 2
    trial.latest_checkpoint_result = None
    TrialRetries().on_trial_recover(0, [trial], trial)
    assert "retrying from the start (no checkpoint yet), attempt 2 of 2" in capsys.readouterr().err
    failures = failure_record((folder / "failures.json").read_text())
    assert [f["attempt"] for f in failures] == [1, 2] and failures[0]["checkpoint_epoch"] == 3
    assert recovery_of(failures) == {"failures": 2, "epochs_retrained": 1 + 4}


def test_the_progress_line_counts_a_retried_trial_pending_until_it_runs_again(tmp_path):
    progress = StudyProgress(total=2)
    progress.setup()
    trial = _trial(tmp_path)
    progress.on_trial_start(0, [trial], trial)
    assert "1 running, 1 pending" in progress.bar.postfix
    progress.on_trial_recover(0, [trial], trial)
    assert "0 running, 2 pending" in progress.bar.postfix
    progress.on_trial_start(0, [trial], trial)  # placed again
    assert "1 running, 1 pending" in progress.bar.postfix
    progress.on_experiment_end([trial])


def test_a_resume_counts_each_trial_once(tmp_path, monkeypatch, capsys):
    """A trial that finished (its metrics.json written) just before Ctrl-C, before Tune saw its end, is ended again
    by the resume: the progress lines count it once (the bar once read "4/? done" for a study of 3)."""
    from geotune.study.progress import TrialLines, finished_trials

    folders = [tmp_path / name for name in ("00000_a", "00001_b", "00002_c")]
    for folder in folders:
        folder.mkdir()
    (folders[0] / "metrics.json").write_text("{}")
    (folders[2] / "metrics.json").write_text("{}")  # finished, but Tune had not seen it end
    monkeypatch.setattr(StudyProgress, "already_done", finished_trials(str(tmp_path)))
    assert StudyProgress.already_done == {"00000_a", "00002_c"}
    progress, lines = StudyProgress(total=3), TrialLines(3, "val_accuracy")
    progress.setup()
    lines.setup()
    assert progress.bar.n == 2
    for i, folder in enumerate(folders[1:]):
        trial = _trial(folder, "TERMINATED")
        trial.trial_id = f"t{i}"
        trial.last_result = {"epoch": 3, "val_accuracy": 0.9, "test_accuracy": 0.9, "epochs_run": 3}
        progress.on_trial_start(0, [trial], trial)
        progress.on_trial_complete(0, [trial], trial)
        lines.on_trial_complete(0, [trial], trial)
    assert progress.bar.n == 3 and "0 running, 0 pending" in progress.bar.postfix
    out = capsys.readouterr().out
    assert "[3/3] 00001_b:" in out and "[3/3] 00002_c:" in out, out
    progress.on_experiment_end([])


def test_the_closing_summary_names_the_recovered_trials():
    rows = [
        TrialSummary("00000_a", TrialStatus.COMPLETED, 4, 0.9, 0.9, None, "p", failures=1, epochs_retrained=1),
        TrialSummary("00001_b", TrialStatus.COMPLETED, 4, 0.8, 0.8, None, "p"),
    ]
    text = summary_text(rows, "val_accuracy", "max")
    assert "recovered after failures, from their checkpoints: 00000_a (1 failure, 1 epochs retrained)" in text
    assert "00001_b (" not in text
    assert "recovered" not in summary_text(rows[1:], "val_accuracy", "max")


def test_the_report_and_summary_csv_carry_failures(tmp_path):
    from geotune.analysis.load import load_study
    from geotune.analysis.report import build_report

    variants = [{"regularizer.name": "none", "train.seed": s} for s in range(3)]
    root = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(3)])
    lost = sorted(p for p in root.iterdir() if p.is_dir())[1]
    crash = {"attempt": 1, "node": "127.0.0.3", "epoch_reached": 3, "checkpoint_epoch": 2, "error": "node lost"}
    (lost / "failures.json").write_text(failures_text([crash]))
    study = load_study(root)
    frame = study.frame.set_index("trial")
    assert frame.loc[lost.name, "failures"] == 1 and frame.loc[lost.name, "epochs_retrained"] == 1
    assert frame["failures"].sum() == 1
    findings = " ".join(build_report(study).findings)
    assert "**Recovered after failures**: 1 of 3 trials crashed and were retried (1 failure in all; 1 epoch" in findings
    assert lost.name in findings


def test_a_study_without_failures_says_nothing_of_them(tmp_path):
    from geotune.analysis.load import load_study
    from geotune.analysis.report import build_report

    root = make_study(tmp_path / "s", [{"train.seed": 0}], [{"variant": 0}])
    assert "Recovered" not in " ".join(build_report(load_study(root)).findings)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _step(watch: PendingWatch, clock: Clock, at: float, *statuses: str) -> bool:
    clock.now = at
    watch.on_step_end(0, [SimpleNamespace(status=s) for s in statuses])
    return watch.stop_all()


def test_the_pending_watch_stops_a_study_only_after_its_trials_waited_with_none_running():
    clock = Clock()
    watch = PendingWatch(60, clock)
    assert not _step(watch, clock, 0, "PENDING", "PENDING")
    assert not _step(watch, clock, 59, "PENDING", "PENDING")
    assert not _step(watch, clock, 70, "RUNNING", "PENDING")  # one runs: the wait starts again
    assert not _step(watch, clock, 100, "PENDING", "TERMINATED")
    assert not _step(watch, clock, 159, "PENDING", "TERMINATED")
    assert _step(watch, clock, 160, "PENDING", "TERMINATED")
    assert PendingWatch.last is watch and watch("t", {}) is False  # no single trial is stopped
    restored = pickle.loads(pickle.dumps(watch))  # as Tune restores it on resume: not fired
    assert not restored.fired and restored.since is None
    never = PendingWatch(0, clock)  # 0: wait forever
    assert not _step(never, clock, 0, "PENDING") and not _step(never, clock, 10**6, "PENDING")
    idle = PendingWatch(1, clock)  # nothing pending (every trial ended): nothing to wait for
    assert not _step(idle, clock, 0, "TERMINATED") and not _step(idle, clock, 10, "TERMINATED")


def test_a_stuck_study_says_what_a_trial_needs_and_what_the_cluster_has():
    plan = SimpleNamespace(cpus_per_trial=2.0, gpus_per_trial=0.0, study_dir="/runs/s")
    watch = PendingWatch(600)
    line = stuck_message(plan, watch, (1.0, 0.0, 2))
    assert line == (
        "no trial could start for 600 s (--pending-timeout): each needs 2 CPU(s) and 0 GPU(s) on one node, and the "
        "largest of the cluster's 2 alive node(s) has 1 CPU(s) and 0 GPU(s); lower --cpus-per-trial/--gpus-per-trial "
        "or add such a node; then continue with: geotune resume /runs/s"
    )
    assert "which a node has" in stuck_message(plan, watch, (4.0, 0.0, 1))


@pytest.mark.parametrize("verb", ["run", "resume"])
def test_pending_timeout_is_checked(tmp_path, capsys, verb):
    from geotune.study.cli import main

    target = (
        ["quickstart", "--storage", str(tmp_path)] if verb == "run" else [str(make_study(tmp_path / "s", [{}], []))]
    )
    assert main([verb, *target, "--pending-timeout", "-1"]) == 2
    assert "--pending-timeout -1: must be a number of seconds >= 0" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["run", "train"])
def test_a_trial_wider_than_the_ray_it_joins_is_refused(tmp_path, monkeypatch, verb):
    """A Ray already running (a notebook's, the suite's) may have fewer CPUs than a trial asks for: one line
    naming the flag, not a trial pending for ever."""
    import yaml

    from conftest import tiny_config
    from geotune.config_loading import load_config
    from geotune.errors import ConfigError
    from geotune.study import resources
    from geotune.study.cluster import RayInfo
    from geotune.study.plan import train_plan

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    plan = train_plan(load_config([str(config)], []), str(tmp_path / "out"), 2.0, 0.0)
    monkeypatch.setattr(resources, "ensure_ray", lambda **_: RayInfo("127.0.0.2:6379", False, 1.0, 0.0))
    where = "cluster" if verb == "run" else "instance"
    with pytest.raises(ConfigError, match=f"^--cpus-per-trial 2: the Ray {where} has only 1 CPUs$"):
        resources.start_ray_for(plan, None) if verb == "run" else resources.start_ray_for_train(plan)


def test_train_with_ray_retries_a_crash_as_run_does(tmp_path, monkeypatch):
    """`geotune train --ray` runs its trial with run's FailureConfig and the retry line (not Ray's 0 retries)."""
    import yaml
    from ray import tune

    from conftest import tiny_config
    from geotune.config_loading import load_config
    from geotune.study import run as run_module
    from geotune.study.plan import RunOptions, train_plan

    built = {}

    class Captured(Exception):
        pass

    class RecordingTuner:
        def __init__(self, trainable, *, param_space, tune_config, run_config):
            built["run_config"] = run_config

        def fit(self):
            raise Captured

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    plan = train_plan(load_config([str(config)], []), str(tmp_path / "out"), 1.0, 0.0)
    monkeypatch.setattr(tune, "Tuner", RecordingTuner)
    with pytest.raises(Captured):
        run_module.run_train(plan)
    run_config = built["run_config"]
    assert run_config.failure_config.max_failures == RunOptions.max_failures == 2
    assert any(isinstance(c, TrialRetries) for c in run_config.callbacks)


# ---------------------------------------------------------------------------
# a report that reads at any size (issue 35 item 6)


def test_a_forest_of_many_rows_draws_the_strongest_effects_and_says_how_many_are_left_out():
    import pandas as pd

    from geotune.analysis import figure_data as fd
    from geotune.analysis.stats import PairedEffect, Pairing

    arms = [f"geodesic, lambda={i}" for i in range(45)]
    rows, effects = [], []
    for i, arm in enumerate(arms):
        half = 1.0
        mean = 0.1 * i  # arm i stands 0.1 i half-widths from zero: the last 30 are the strongest
        effects.append(PairedEffect(arm, "test_accuracy", 3, mean, mean - half, mean + half, "t", 0.0, 0.5, ""))
        rows += [{"regularizer": arm, "test_accuracy_diff": mean + d} for d in (-0.1, 0.0, 0.1)]
    forest = fd.forest(Pairing(pd.DataFrame(rows), []), effects, ["test_accuracy"])
    assert forest is not None and fd.FOREST_MAX_ROWS == 30
    assert forest.left_out == 15 and len(forest.regularizers) == 30
    assert set(forest.regularizers) == set(arms[15:]) and forest.regularizers[0] == arms[-1]  # strongest first
    assert {key[0] for key in forest.cells} == set(forest.regularizers)
    assert "the 30 rows whose effects stand furthest from 0" in forest.difference and "15 more" in forest.difference
    few = fd.forest(Pairing(pd.DataFrame(rows[:9]), []), effects[:3], ["test_accuracy"])
    assert few is not None and few.left_out == 0 and few.regularizers == arms[:3]  # no summary below the cap


def test_index_html_embeds_thumbnails_and_links_the_full_figures(tmp_path):
    import base64
    import io
    import re

    import numpy as np
    from PIL import Image

    from geotune.analysis.report import THUMBNAIL_BOX, thumbnail_png

    wide = tmp_path / "wide.png"
    noise = np.random.default_rng(0).integers(0, 255, (600, 3000, 3), dtype=np.uint8)
    Image.fromarray(noise).save(wide)
    small = Image.open(io.BytesIO(thumbnail_png(wide)))
    assert small.size == (THUMBNAIL_BOX[0], 250) and small.mode == "P"  # page-wide, aspect kept, palette
    tall = tmp_path / "tall.png"
    Image.fromarray(np.zeros((9000, 900, 3), dtype=np.uint8)).save(tall)
    assert Image.open(io.BytesIO(thumbnail_png(tall))).size == (500, THUMBNAIL_BOX[1])

    from geotune.analysis.load import load_study
    from geotune.analysis.report import build_report, report_folder, save_report

    variants = [{"regularizer.name": name, "train.seed": s} for name in ("none", "geodesic") for s in range(3)]
    root = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(6)])
    index = save_report(build_report(load_study(root)), report_folder([str(root)], None))
    page = index.read_text()
    embedded = re.findall(r"<a href='figures/([^']+)'[^>]*><img [^>]*src='data:image/png;base64,([^']+)'", page)
    assert len(embedded) >= 3
    for name, data in embedded:
        full = Image.open(index.parent / "figures" / name)
        shown = Image.open(io.BytesIO(base64.b64decode(data)))
        assert shown.width <= min(full.width, THUMBNAIL_BOX[0]) and shown.height <= THUMBNAIL_BOX[1], name
    assert "figures/forest.png" in page


def test_resuming_a_finished_study_trains_nothing_and_leaves_its_state_alone(tmp_path, capsys):
    """Issue 36 item 4: a finished study resumes in seconds, writes no new Tune state, and is reported again."""
    from geotune.study.cli import main

    variants = [{"regularizer.name": name, "train.seed": s} for name in ("none", "geodesic") for s in range(2)]
    study = make_study(tmp_path / "s", variants, [{"variant": i} for i in range(4)])
    (study / "experiment_state-2026-12-05_00-00-00.json").write_text("{}")  # as Tune left it
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    assert main(["resume", str(study)]) == 0
    captured = capsys.readouterr()
    assert f"all 4 trials of {study} have finished: nothing to train" in captured.err
    assert "report:" in captured.out and (study / "report" / "index.html").is_file()
    after = {p: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file() and "report" not in p.parts}
    assert after == before, "nothing but the report was written"
    assert main(["resume", str(study), "--no-report"]) == 0


def test_the_page_lists_at_most_150_rows_of_a_table_and_says_where_the_rest_are():
    from geotune.analysis.report import HTML_TABLE_MAX_ROWS, _html_table

    rows = [(f"arm {i}", i) for i in range(400)]
    page = _html_table(["arm", "n"], rows)
    assert page.count("<tr>") == 1 + HTML_TABLE_MAX_ROWS == 151  # the header and 150 rows
    assert "arm 149" in page and "arm 150" not in page
    assert "the first 150 of 400 rows; every row is in tables.md" in page
    assert "every row" not in _html_table(["arm", "n"], rows[:150])


def test_loading_reads_planned_configs_from_the_plan_with_the_same_columns_as_validating_them(tmp_path):
    """Issue 36: a grid trial's config comes from the plan (checked when planned); the frame equals the one built by
    validating every trial's config again (a plan without its trials' configs, as before 0.3)."""
    import shutil

    from geotune.analysis.load import load_study
    from geotune.search_spaces.space import load_space
    from geotune.study.plan import RunOptions, make_plan

    plan = make_plan(load_space("quickstart"), {}, RunOptions(storage=str(tmp_path), name="q", num_samples=2))
    study = Path(plan.study_dir)
    study.mkdir(parents=True)
    plan.save()
    for index, label in enumerate(plan.trial_configs()):
        folder = study / f"{index:05d}_trial"
        folder.mkdir()
        (folder / "params.json").write_text(json.dumps({"variant": label}))
        (folder / "metrics.json").write_text(json.dumps({"val_accuracy": 0.9, "test_accuracy": 0.9, "epochs_run": 1}))
    fast = load_study(study).frame
    old = tmp_path / "old"
    shutil.copytree(study, old)
    saved = json.loads((old / "study.json").read_text())
    assert saved.pop("trials")  # the plan carried every trial's config
    (old / "study.json").write_text(json.dumps(saved))
    slow = load_study(old).frame
    columns = [c for c in fast.columns if "." in c or c == "regularized"]
    assert len(columns) > 100 and len(fast) == 8
    assert fast[columns].equals(slow[columns])
    assert list(fast["regularized"]) == [name != "none" for name in fast["regularizer.name"]]
