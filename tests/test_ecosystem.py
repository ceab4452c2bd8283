"""Fitting the ecosystem (issue 17): real hyperparameters for Ray, TensorBoard and MLflow; --reuse; reports over
several studies; the CLI's habits (bare overrides, --sweep, repeated --config, --version, config --space)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config
from geotune.layout import StudyPlan
from geotune.study.cli import main
from geotune.study.tune_setup import grid_param_space
from geotune.variants import FOLDER_LABEL_MAX, folder_label, variant_labels
from synthetic import study_plan

# Two keys end in lambda_reg: labels and folder names must tell them apart.
SWEEP = ["--sweep", "regularizer.geometry.lambda_reg=0.2,0.3", "--sweep", "regularizer.geodesic.lambda_reg=0.1"]


def test_labels_tell_keys_with_the_same_last_part_apart_and_long_ones_end_in_a_hash():
    variants = [
        {"dataset.name": "digits", "model.type": "simple_cnn", "regularizer.name": "none", "train.seed": 0},
        {"dataset.name": "shapes", "model.type": "simple_cnn", "regularizer.name": "geodesic", "train.seed": 0},
    ]
    labels = variant_labels(variants)
    assert labels[0] == "dataset.name=digits,type=simple_cnn,regularizer.name=none,seed=0"
    assert labels[1] == "dataset.name=shapes,type=simple_cnn,regularizer.name=geodesic,seed=0"
    # a short label stays whole; two long ones sharing their first characters get different, stable names
    assert folder_label(labels[0]) == labels[0]
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    assert len(folder_label(long_a)) == FOLDER_LABEL_MAX
    assert folder_label(long_a) != folder_label(long_b) and folder_label(long_a) == folder_label("x" * 200 + "a")


def test_a_study_made_by_geotune_0_1_still_maps_its_trials_old_labels():
    plan = study_plan(Path("/nowhere"), [{"dataset.name": "digits", "regularizer.name": "none", "train.seed": 0}])
    by_label = plan.variants_by_any_label()
    assert by_label["name=digits,name=none,seed=0"] == by_label["dataset.name=digits,regularizer.name=none,seed=0"]


def make_sweep_plan(tmp_path, *extra: str) -> StudyPlan:
    from geotune.search_spaces.space import with_sweeps
    from geotune.study.plan import RunOptions, make_plan

    sweeps = [a for a in extra if "=" in a]
    spec = with_sweeps(None, sweeps, tiny_config())
    return make_plan(spec, {}, RunOptions(storage=str(tmp_path), name="p", num_samples=2))


def test_the_tune_config_of_a_grid_trial_holds_every_varied_key_with_its_value(tmp_path):
    plan = make_sweep_plan(tmp_path, "regularizer.name=none,geodesic", "train.lr=1e-3,0.01")
    space = grid_param_space(plan)
    labels = space["variant"]["grid_search"]
    assert len(labels) == 8 and set(space) == {"variant", "regularizer.name", "train.lr", "train.seed"}
    for label, variant in plan.variants_by_label().items():
        config = {"variant": label}
        resolved = {key: space[key].func(config) for key in variant}  # what Tune's sample_from resolves to
        assert resolved == variant, label
    # train.lr typed as 1e-3 on the command line is a number (YAML 1.1 would keep it as text)
    assert {v["train.lr"] for v in plan.variants} == {0.001, 0.01}


def test_the_plan_resolves_each_trial_once_and_every_reader_takes_it_from_there(tmp_path):
    from geotune.analysis.load import load_study
    from geotune.config import TrialConfig
    from geotune.config_loading import variant_config
    from geotune.study.reuse import find_reusable
    from geotune.trainables.trainable import trial_config

    plan = make_sweep_plan(tmp_path, "train.lr=1e-3,0.01")
    labels = list(plan.variants_by_label())
    assert list(plan.trials) == labels and len(labels) == 4  # 2 lrs x 2 seeds
    for label, variant in plan.variants_by_label().items():
        assert TrialConfig.from_dict(plan.trials[label]) == variant_config(plan.base, variant), label
    # study.json carries them; mark one trial's config there: every reader must see the mark, none re-merges
    plan.save()
    data = json.loads((Path(plan.study_dir) / "study.json").read_text())
    data["trials"][labels[1]]["train"]["weight_decay"] = 0.0123
    (Path(plan.study_dir) / "study.json").write_text(json.dumps(data))
    saved = StudyPlan.load(plan.study_dir)
    planned = saved.trial_configs(any_label=True)
    # the worker (what Tune passes: the label and display copies of the varied keys)
    worker = trial_config({"variant": labels[1], "train.lr": 0.5, "train.seed": 7}, planned, saved.base)
    assert worker.train.weight_decay == 0.0123 and worker.train.lr == saved.trials[labels[1]]["train"]["lr"]
    assert trial_config({"variant": labels[0]}, planned, saved.base).train.weight_decay == 0.0
    # an Optuna trial's sampled keys are resolved over the base, where they were sampled
    sampled = trial_config({"train.lr": 0.25, "train.seed": 3}, planned, saved.base)
    assert (sampled.train.lr, sampled.train.seed) == (0.25, 3)
    # the Tune config shown to Ray and its loggers, --reuse's key, and the study's table
    assert grid_param_space(saved)["train.lr"].func({"variant": labels[1]}) == saved.trials[labels[1]]["train"]["lr"]
    old_study = tmp_path / "earlier" / "t0"  # a finished trial whose config.yaml holds the marked config
    old_study.mkdir(parents=True)
    (old_study / "params.json").write_text("{}")
    (old_study / "metrics.json").write_text(json.dumps({"stop": "completed"}))
    (old_study / "config.yaml").write_text(yaml.safe_dump(saved.trials[labels[1]]))
    assert find_reusable(saved, [str(tmp_path / "earlier")]) == {labels[1]: str(old_study.resolve())}
    frame = load_study(plan.study_dir).frame.set_index("variant")
    assert frame.loc[labels[1], "train.weight_decay"] == 0.0123 and frame.loc[labels[0], "train.weight_decay"] == 0.0
    # a plan written before plans carried the resolved configs gets them from base and variants
    data.pop("trials")
    (Path(plan.study_dir) / "study.json").write_text(json.dumps(data))
    old = StudyPlan.load(plan.study_dir)
    assert old.trials == {} and list(old.trial_configs()) == labels
    for label, config in old.trial_configs().items():
        assert TrialConfig.from_dict(config) == variant_config(old.base, old.variants_by_label()[label]), label


def test_bare_overrides_repeated_configs_and_sweeps_plan_as_documented(tmp_path, capsys):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(yaml.safe_dump(tiny_config(train={"epochs": 4, "lr": 0.01})))
    second.write_text(yaml.safe_dump({"train": {"epochs": 6}}))
    rc = main(
        ["run", "--config", str(first), "--config", str(second), "train.batch_size=32", "--dry-run"]
        + ["--sweep", "regularizer.name=none,geodesic", "-m", "model.hidden_dim=16,32", "--seeds", "3"]
        + ["--storage", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "trials          : 12 (grid)" in out, out
    rows = [line.split() for line in out.splitlines() if line.strip()[:2].strip().isdigit()]
    assert {(r[1], r[2], r[3]) for r in rows} == {
        (name, dim, seed) for name in ("none", "geodesic") for dim in ("16", "32") for seed in ("0", "1", "2")
    }
    assert main(["config", "--config", str(first), "--config", str(second), "train.batch_size=32"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert (
        resolved["train"]["epochs"] == 6 and resolved["train"]["lr"] == 0.01 and resolved["train"]["batch_size"] == 32
    )

    # a space crossed with a sweep; a key the space varies itself is refused with its name
    assert main(["run", "quickstart", "--sweep", "train.lr=0.001,0.002", "--dry-run", "--storage", str(tmp_path)]) == 0
    assert "trials          : 24 (grid)" in capsys.readouterr().out
    assert main(["run", "quickstart", "--sweep", "regularizer.name=none", "--dry-run"]) == 2
    assert "'regularizer.name'" in capsys.readouterr().err
    # what is neither an option nor SECTION.KEY=VALUE is refused by argparse (exit 2)
    with pytest.raises(SystemExit) as stop:
        main(["run", "quickstart", "nonsense", "--dry-run"])
    assert stop.value.code == 2 and "unrecognized arguments: nonsense" in capsys.readouterr().err
    assert main(["run", "--sweep", "train.lr", "--dry-run"]) == 2
    assert "--sweep 'train.lr'" in capsys.readouterr().err


def test_version_and_a_spaces_resolved_base_config(capsys):
    from geotune import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"geotune {__version__}"
    assert main(["config", "--space", "segmentation", "train.lr=0.005"]) == 0
    out = capsys.readouterr().out
    assert "# the space varies: model.type, train.loss, train.seed" in out
    config = yaml.safe_load(out)
    assert config["dataset"]["name"] == "shapes_seg" and config["train"]["lr"] == 0.005
    assert len(config["train"]["phases"]) == 2, "the space's own base, not the defaults"


def test_a_missing_tracker_is_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(["run", "quickstart", "--logger", "wandb", "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--logger wandb: the wandb package is not installed (pip install 'geotune[wandb]')" in err
    assert main(["run", "quickstart", "--logger", "comet", "--storage", str(tmp_path)]) == 2
    assert "--logger 'comet': unknown logger" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "nothing was started"


def test_wandb_gets_the_study_as_group_and_keeps_its_files_in_the_study(tmp_path, monkeypatch):
    """Ray's W&B callback, configured from --logger wandb=PROJECT (wandb itself is optional: a stand-in module
    lets the callback be built; what is checked is what geotune passes)."""
    import types

    import ray.air.integrations.wandb as ray_wandb

    from geotune.study.loggers import logger_callbacks

    monkeypatch.setattr(ray_wandb, "wandb", types.SimpleNamespace())
    plan = make_sweep_plan(tmp_path, "train.lr=0.001,0.01")
    plan.loggers = ["wandb=latent-geometry"]
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    (callback,) = logger_callbacks(plan)
    assert isinstance(callback, ray_wandb.WandbLoggerCallback)
    assert callback.project == "latent-geometry" and callback.group == "p"
    assert callback.kwargs["dir"] == str(Path(plan.study_dir) / "wandb") and Path(callback.kwargs["dir"]).is_dir()


def test_wandb_gets_each_trial_folder_as_an_artifact_of_its_run_at_the_study_s_end(tmp_path, monkeypatch):
    """The folder of each trial that reported (result.json names its Tune trial id, which Ray's callback made
    the W&B run id) is added to that run, resumed by id; checkpoints are left out. wandb is optional: a
    stand-in module records the calls."""
    import sys
    import types

    from geotune.study.loggers import log_trial_artifacts

    calls: list[tuple] = []

    class Artifact:
        def __init__(self, name, type, metadata=None):
            self.name, self.type, self.metadata, self.entries = name, type, metadata, []

        def add_file(self, path):
            self.entries.append(Path(path).name)

        def add_dir(self, path, name=None):
            self.entries.append(f"{name}/")

    class Run:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

        def log_artifact(self, artifact):
            calls.append(("artifact", artifact))

        def finish(self):
            calls.append(("finish",))

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kw: Run(**kw), Artifact=Artifact))
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())
    plan = make_sweep_plan(tmp_path, "train.lr=0.001,0.01")
    plan.loggers = ["wandb=latent-geometry"]
    study = Path(plan.study_dir)
    for name, trial_id in (("00000_a", "ab_00000"), ("00001_b", None)):
        folder = study / name
        (folder / "checkpoint_000001").mkdir(parents=True)
        (folder / "figures").mkdir()
        (folder / "params.json").write_text("{}")
        (folder / "metrics.json").write_text("{}")
        if trial_id:  # the second trial never reported
            (folder / "result.json").write_text(json.dumps({"epoch": 1, "trial_id": trial_id}) + "\n")

    assert log_trial_artifacts(plan) == {"W&B": 1}
    (init, artifact, finish) = calls
    assert init[1] == {
        "id": "ab_00000",
        "project": "latent-geometry",
        "group": "p",
        "dir": str(study / "wandb"),
        "resume": "allow",
    }
    assert artifact[1].name == "trial-ab_00000" and artifact[1].metadata == {"folder": "00000_a"}
    assert artifact[1].entries == ["figures/", "metrics.json", "params.json", "result.json"]
    assert finish == ("finish",)


def hparams_of(events: Path) -> dict:
    """The HParams (TensorBoard's plugin) of one event file, read record by record from the TFRecord format."""
    from tensorboardX.proto import event_pb2, plugin_hparams_pb2

    data, offset, found = events.read_bytes(), 0, {}
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset : offset + 8])
        record = data[offset + 12 : offset + 12 + length]
        offset += 12 + length + 4
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                info = plugin_hparams_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                for key, item in info.session_start_info.hparams.items():
                    found[key] = item.WhichOneof("kind") and getattr(item, item.WhichOneof("kind"))
    return found


@pytest.fixture(scope="module")
def sweep_study(ray_session, tmp_path_factory):
    """A two-trial sweep run through Ray with --logger mlflow: the study the next tests read."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("eco")
    config = root / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(train={"epochs": 2}, regularizer={"name": "geodesic"})))
    rc = main(
        ["run", "--config", str(config), *SWEEP, "--storage", str(root / "runs"), "--name", "first"]
        + ["--logger", "mlflow", "--cpus-per-trial", "1"]
    )
    assert rc == 0
    return root, root / "runs" / "first"


@pytest.mark.slow
def test_ray_tensorboard_and_mlflow_see_the_real_hyperparameters(ray_session, sweep_study):
    from ray import tune

    from geotune.study.tune_setup import trainable_for

    _, study = sweep_study
    folders = sorted(p.name for p in study.iterdir() if (p / "params.json").is_file())
    assert folders == [
        "00000_regularizer.geometry.lambda_reg=0.2,regularizer.geodesic.lambda_reg=0.1,seed=0",
        "00001_regularizer.geometry.lambda_reg=0.3,regularizer.geodesic.lambda_reg=0.1,seed=0",
    ]
    plan = StudyPlan.load(str(study))
    frame = tune.Tuner.restore(str(study), trainable=trainable_for(plan)).get_results().get_dataframe()
    assert sorted(frame["config/regularizer.geometry.lambda_reg"]) == [0.2, 0.3]
    assert list(frame["config/regularizer.geodesic.lambda_reg"]) == [0.1, 0.1]
    assert list(frame["config/train.seed"]) == [0, 0]

    for folder in folders:
        (events,) = (study / folder).glob("events.out.tfevents.*")
        hparams = hparams_of(events)
        expected = 0.2 if "lambda_reg=0.2" in folder else 0.3
        assert hparams["regularizer.geometry.lambda_reg"] == pytest.approx(expected), hparams
        assert hparams["regularizer.geodesic.lambda_reg"] == pytest.approx(0.1)

    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("first")
    assert experiment.artifact_location == str(study / "mlruns"), "the default store lives in the study folder"
    every = client.search_runs([experiment.experiment_id])
    runs = {r.data.tags["geotune.trial"]: r for r in every if "geotune.trial" in r.data.tags}
    assert sorted(runs) == folders
    (parent,) = [r for r in every if r.data.tags.get("geotune.study_run")]  # the study's own run (issue 35 item 5)
    assert parent.info.run_name == "first" and len(every) == 3
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/index.html", "report/summary.csv", "report/REPORT.md", "report/figures"} <= report
    for folder, run in runs.items():
        assert run.data.params["regularizer.geometry.lambda_reg"] == ("0.2" if "=0.2," in folder else "0.3")
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, "each trial nested in the study's run"
        # the resolved config, flattened: every key, not only the varied ones
        assert run.data.params["train.lr"] == "0.003" and run.data.params["model.type"] == "simple_cnn"
        assert run.data.params["model.channels"] == "[16, 32]" and len(run.data.params) > 100
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2], "one value per epoch"
        metrics = json.loads((study / folder / "metrics.json").read_text())
        assert history[-1].value == pytest.approx(metrics["val_accuracy"])
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"metrics.json", "latents.npz", "config.yaml", "model.pt"} <= artifacts
        assert not any(a.startswith(("checkpoint_", "events.out.tfevents")) for a in artifacts)
    # TensorBoard's view of the study folder: a run per folder holding event files, one per trial (no copies)
    assert sorted(p.parent.name for p in study.rglob("events.out.tfevents.*")) == folders

    # the best trial's model as an MLflow Model: MLflow's own loader gives geotune predict's probabilities
    import mlflow.pytorch
    import numpy as np
    import torch

    import geotune as gt

    best = parent.data.tags["geotune.best_trial"]
    local = client.download_artifacts(runs[best].info.run_id, "model", str(study.parent / "downloaded"))
    model = mlflow.pytorch.load_model(local)
    trained = gt.load_trained(study / best)
    images = np.random.default_rng(0).integers(0, 256, (5, *trained.preprocessing.input_shape), dtype=np.uint8)
    with torch.no_grad():
        got = model(torch.from_numpy(images).float() / 255.0).numpy()
    np.testing.assert_allclose(got, gt.predict(trained, images), rtol=0, atol=1e-6)
    spec = mlflow.models.get_model_info(local).signature.inputs.to_dict()[0]["tensor-spec"]
    assert list(spec["shape"][1:]) == list(trained.preprocessing.input_shape) and spec["dtype"] == "float32"


@pytest.mark.slow
def test_reuse_trains_only_new_trials_and_a_report_covers_several_studies(ray_session, sweep_study, capsys):
    root, first = sweep_study
    config = root / "c.yaml"
    # the same sweep with one value more: two trials finished before, one is new
    sweep = ["--sweep", "regularizer.geometry.lambda_reg=0.2,0.3,0.5", SWEEP[2], SWEEP[3]]
    args = ["run", "--config", str(config), *sweep, "--storage", str(root / "runs"), "--reuse", str(first)]
    assert main(args + ["--dry-run", "--name", "dry"]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 trials are taken from earlier studies; 1 train" in out
    assert main(args + ["--name", "second", "--no-figures"]) == 0  # the report's tables are what is read
    out = capsys.readouterr().out
    second = root / "runs" / "second"
    plan = StudyPlan.load(str(second))
    assert len(plan.reused) == 2 and all(path.startswith(str(first)) for path in plan.reused.values())
    trained = [p for p in second.iterdir() if p.name.startswith("0000")]
    assert len(trained) == 1 and "lambda_reg=0.5" in trained[0].name, "only the new value was trained"
    reused = sorted(p for p in second.iterdir() if p.name.startswith("reused_"))
    assert len(reused) == 2
    for folder in reused:
        source = Path((folder / "reused_from.txt").read_text().strip())
        assert (folder / "metrics.json").resolve() == (source / "metrics.json").resolve()
    report = (second / "report" / "summary.csv").read_text()
    assert report.count("\n") == 4, "the report covers the reused trials too"

    # several studies as one report: every trial once (the reused ones are the first study's)
    assert main(["report", str(first), str(second), "--no-figures"]) == 0
    combined = first / "report_combined"
    assert (combined / "index.html").is_file()
    import pandas as pd

    summary = pd.read_csv(combined / "summary.csv")
    assert len(summary) == 3 and set(summary["study"]) == {"first", "second"}
    assert sorted(summary["regularizer.geometry.lambda_reg"]) == [0.2, 0.3, 0.5]
    assert "regularizer.geometry.lambda_reg" in (combined / "REPORT.md").read_text()


def test_the_pareto_front_holds_exactly_the_trials_nothing_beats_on_both_objectives():
    import pandas as pd

    from geotune.analysis.figure_data import pareto_front

    frame = pd.DataFrame(
        {
            "trial": ["a", "b", "c", "d", "e"],
            "val_accuracy": [0.90, 0.80, 0.85, 0.70, 0.90],
            "flatness_calibrated_per_class": [1.10, 0.95, 1.20, 0.90, 1.15],
        }
    )
    front = pareto_front(frame, [["val_accuracy", "max"], ["flatness_calibrated_per_class", "min"]])
    assert front is not None
    # c is beaten by a on both; e ties a on accuracy and is worse on flatness; a, b, d each win somewhere
    assert dict(zip(front.trials, front.on_front)) == {"a": True, "b": True, "c": False, "d": True, "e": False}
    flipped = pareto_front(frame, [["val_accuracy", "min"], ["flatness_calibrated_per_class", "max"]])
    assert flipped is not None and [t for t, on in zip(flipped.trials, flipped.on_front) if on] == ["b", "c", "d"]
    assert pareto_front(frame.head(1), [["val_accuracy", "max"], ["flatness_calibrated_per_class", "min"]]) is None


@pytest.mark.slow
def test_train_with_a_logger_runs_through_tune_and_mlflow_reads_it(ray_session, tmp_path, capsys):
    """`geotune train --logger mlflow`: the trial runs as a Tune trial, and MLflow's own client finds one run with
    every epoch's metrics and the trial's files."""
    import mlflow

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(train={"epochs": 2}, logging={"save_umap": False})))
    args = ["train", str(config), str(tmp_path / "out"), "--logger", "mlflow", "--cpus-per-trial", "1"]
    code = main(args)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "MLflow: artifacts of 1 trial(s) logged" in out
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("out")
    (run,) = client.search_runs([experiment.experiment_id])  # one trial: no study run above it
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert {"metrics.json", "model/MLmodel"} <= {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "model")
    }


@pytest.mark.parametrize("verb", ["train", "compare"])
def test_train_and_compare_check_their_logger_before_anything(tmp_path, capsys, verb):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config()))
    assert main([verb, str(config), str(tmp_path / "out"), "--logger", "mlflow=bad://x"]) == 2
    assert "--logger 'mlflow=bad://x': MLflow stores runs at a path or a URI" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("verb", ["train", "compare"])
def test_a_config_names_its_trackers_checked_before_anything(tmp_path, capsys, verb):
    """logging.loggers in a trial config (issue 33 item 3): the same trackers as --logger, checked as early, the
    error naming the key."""
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(logging={"loggers": ["mlflow=bad://x"]})))
    assert main([verb, str(config), str(tmp_path / "out")]) == 2
    assert "logging.loggers 'mlflow=bad://x': MLflow stores runs at a path or a URI" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # the command line wins for the same tracker: the bad URI in the config is never used
    args = [str(config), str(tmp_path / "out2"), "--logger", "mlflow=bad2://y"]
    assert main([verb, *args]) == 2
    assert "--logger 'mlflow=bad2://y'" in capsys.readouterr().err


def test_a_run_takes_its_trackers_from_the_config_and_the_command_line_wins(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(logging={"loggers": ["mlflow"]})))
    base = ["run", "--config", str(config), "--sweep", "train.lr=0.01,0.02", "--dry-run", "--storage", str(tmp_path)]
    assert main(base) == 0
    assert "trackers        : mlflow (--logger" in capsys.readouterr().out
    assert main([*base, "--logger", "mlflow=sqlite:///x.db"]) == 0
    assert "trackers        : mlflow=sqlite:///x.db " in capsys.readouterr().out


def test_the_trackers_do_not_stop_a_trial_being_reused():
    from geotune.study.reuse import config_key

    plain = tiny_config()
    tracked = tiny_config(logging={"loggers": ["mlflow"]})
    assert config_key(plain) == config_key(tracked)
    assert config_key(plain) != config_key(tiny_config(train={"lr": 0.5}))


def test_a_space_names_its_trackers_and_the_command_line_wins(tmp_path, capsys):
    space = tmp_path / "space.py"
    space.write_text(
        "from geotune.search_spaces.space import SearchSpace\n"
        f"SPACE = SearchSpace(name='tracked', question='q', base={tiny_config()!r}, loggers=['mlflow'])\n"
    )
    assert main(["run", str(space), "--dry-run", "--storage", str(tmp_path)]) == 0
    assert "trackers        : mlflow (--logger, logging.loggers, or the space's loggers)" in capsys.readouterr().out
    assert main(["run", str(space), "--dry-run", "--storage", str(tmp_path), "--logger", "mlflow=sqlite:///x.db"]) == 0
    assert "trackers        : mlflow=sqlite:///x.db " in capsys.readouterr().out
