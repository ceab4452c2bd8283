"""Studies through Ray Tune: ASHA, failures, Optuna storage, paired comparison."""

import json
import textwrap
from pathlib import Path

import pytest

from conftest import tiny_config

TINY = tiny_config()


def write_space(path: Path, body: str) -> Path:
    path.write_text(
        f"from geotune.search_spaces.space import Asha, SearchSpace\nTINY = {TINY!r}\n" + textwrap.dedent(body)
    )
    return path


def trial_dirs(study: Path) -> list[Path]:
    return sorted(p for p in study.iterdir() if (p / "params.json").is_file())


def epochs_reported(trial_dir: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (trial_dir / "result.json").read_text().splitlines()]


def test_grid_study_with_asha_a_diverging_trial_and_no_gpu(ray_session, tmp_path, capsys, monkeypatch):
    from geotune.study.cli import main

    space = write_space(
        tmp_path / "asha_space.py",
        """
        SPACE = SearchSpace(
            name="tiny_asha", question="Which learning rate?",
            base={**TINY, "logging": {**TINY["logging"], "figures": True}},  # the test looks for the PNGs
            grid=[{"train.lr": [0.003, 0.00003, 0.00001]},
                  {"train.optimizer": ["sgd"], "train.lr": [1.0e6]}],   # diverges to NaN in epoch 1
            seeds=[0], asha=Asha(grace_period=1, reduction_factor=2), max_concurrent=1)
    """,
    )
    rc = main(
        [
            "run",
            str(space),
            "--storage",
            str(tmp_path / "runs"),
            "--name",
            "s",
            "--gpus-per-trial",
            "0.5",
            "--set",
            "train.epochs=4",
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1, "a failed trial makes the run exit non-zero"
    assert "the Ray cluster has no GPU, so trials run on CPUs" in err

    study = tmp_path / "runs" / "s"
    plan = json.loads((study / "study.json").read_text())
    assert plan["space"] == "tiny_asha" and len(plan["variants"]) == 4 and plan["gpus_per_trial"] == 0
    trials = trial_dirs(study)
    assert len(trials) == 4

    # one line per finished trial, and the summary lists the failure with its reason
    lines = [line for line in out.splitlines() if line.startswith("[") and "/4]" in line]
    assert len(lines) == 4
    failed_line = next(line for line in lines if "lr=1e+06" in line)
    assert "FAILED" in failed_line and "became nan" in failed_line
    assert "failed trials:" in out and "became nan" in out.split("failed trials:")[1]
    assert f"report: {study / 'report' / 'index.html'}" in out  # written at the end of the run
    assert "became nan" in (study / "report" / "REPORT.md").read_text()

    diverged = next(t for t in trials if "lr=1e+06" in t.name)
    assert "became nan in epoch 1" in (diverged / "diverged.txt").read_text()
    assert epochs_reported(diverged) == [] if (diverged / "result.json").exists() else True

    good = [t for t in trials if t != diverged]
    best = next(t for t in good if "lr=0.003" in t.name)
    assert epochs_reported(best) == [1, 2, 3, 4]
    stopped = [t for t in good if t != best]
    for trial in good:  # completed and ASHA-stopped trials alike have every artifact
        for name in (
            "metrics.json",
            "training_history.json",
            "geometry_summary.json",
            "latents.npz",
            "confusion_matrix.png",
            "config.yaml",
        ):
            assert (trial / name).is_file(), (trial.name, name)
    for trial in stopped:
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["stop_reason"] == "stopped by the scheduler"
        assert metrics["epochs_run"] == len(epochs_reported(trial)) < 4
    total_epochs = sum(len(epochs_reported(t)) for t in good)
    assert total_epochs < 3 * 4, "ASHA stopped the worse learning rates early"

    # Ray's own readers as the docs show them, from another folder and a relative path (issue 35 item 3)
    from ray import tune

    from geotune.layout import StudyPlan
    from geotune.study.tune_setup import trainable_for

    monkeypatch.chdir(tmp_path / "runs")
    study = Path("s").resolve()
    plan = StudyPlan.load(Path("s"))  # a relative Path reads too
    analysis = tune.ExperimentAnalysis(study, default_metric=plan.metric, default_mode=plan.mode)
    assert len(analysis.dataframe()) == 3 and analysis.best_config is not None  # the diverged trial reported nothing
    grid = tune.Tuner.restore(str(study), trainable_for(plan)).get_results()
    assert Path(grid.get_best_result(plan.metric, plan.mode).path).name == best.name
    # the study records its metric and mode where Tune reads them: no argument needed (an ASHA study)
    assert Path(grid.get_best_result().path).name == best.name


def test_optuna_study_keeps_its_study_in_sqlite(ray_session, tmp_path, capsys):
    import optuna

    from geotune.study.cli import main

    space = write_space(
        tmp_path / "optuna_space.py",
        """
        def sample(trial):
            trial.suggest_float("regularizer.geodesic.lambda_reg", 1e-3, 1.0, log=True)
            trial.suggest_int("regularizer.geodesic.n_neighbors", 3, 6)
            trial.suggest_categorical("regularizer.geodesic.target", ["flat", "fixed"])  # a string choice reports too

        SPACE = SearchSpace(name="tiny_optuna", question="Which lambda and k?",
                          base={**TINY, "regularizer": {"name": "geodesic"}}, optuna=sample, num_samples=3,
                          seeds=[0], max_concurrent=2)
    """,
    )
    rc = main(["run", str(space), "--storage", str(tmp_path), "--name", "o", "--set", "train.epochs=2"])
    assert rc == 0
    page = (tmp_path / "o" / "report" / "REPORT.md").read_text()
    assert "Optuna search" in page and (tmp_path / "o" / "report" / "figures" / "optuna.png").is_file()
    study_dir = tmp_path / "o"
    # Optuna's own reader: the Optuna study is named after the geotune study (its folder), and each Optuna trial
    # names its Tune trial (id and folder) beside its final metrics (issue 35 item 4)
    assert optuna.get_all_study_names(f"sqlite:///{study_dir / 'optuna.db'}") == ["o"]
    study = optuna.load_study(study_name="o", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    assert study.metric_names == ["val_accuracy"], "the objective is named after the metric"
    for trial in complete:  # the final metrics as user attributes
        assert {"test_accuracy", "flatness_calibrated_per_class", "intrinsic_dim_twonn"} <= set(trial.user_attrs)
    trials = trial_dirs(study_dir)
    assert len(trials) == 3
    linked = {t.user_attrs["trial_folder"]: t for t in complete}
    assert set(linked) == {trial.name for trial in trials}
    for folder, trial in linked.items():  # the folder's own record agrees: same Ray trial, same sampled values
        params = json.loads((study_dir / folder / "params.json").read_text())
        first_result = json.loads((study_dir / folder / "result.json").read_text().splitlines()[0])
        assert trial.user_attrs["ray_trial_id"] == first_result["trial_id"]
        assert params["regularizer.geodesic.n_neighbors"] == trial.params["regularizer.geodesic.n_neighbors"]
    # Tune's own reader ranks the Optuna study's trials without being told the metric (issue 35 item 3)
    from ray import tune

    from geotune.layout import StudyPlan
    from geotune.study.tune_setup import trainable_for

    grid = tune.Tuner.restore(str(study_dir), trainable_for(StudyPlan.load(study_dir))).get_results()
    best = grid.get_best_result()  # ties are possible in a 3-trial toy: compare values, then the folder's record
    assert best.metrics["val_accuracy"] == max(t.value for t in complete)
    assert Path(best.path).name in linked
    seen = set()
    for trial in trials:
        from geotune.config_loading import load_config

        cfg = load_config(trial / "config.yaml")
        metrics = json.loads((trial / "metrics.json").read_text())
        key = (round(cfg.regularizer.geodesic.lambda_reg, 10), cfg.regularizer.geodesic.n_neighbors)
        match = [
            t
            for t in complete
            if (round(t.params["regularizer.geodesic.lambda_reg"], 10), t.params["regularizer.geodesic.n_neighbors"])
            == key
        ]
        assert len(match) == 1, "each trial ran exactly the configuration Optuna sampled"
        assert match[0].value == pytest.approx(metrics["val_accuracy"], abs=1e-6)
        assert match[0].user_attrs["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
        assert cfg.regularizer.name == "geodesic" and cfg.train.epochs == 2
        seen.add(key)
    assert len(seen) == 3


def test_compare_writes_the_paired_report(ray_session, tmp_path, capsys):
    import yaml

    from geotune.study.cli import main

    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            tiny_config(
                train={"epochs": 3, "seed": 4},
                regularizer={"name": "geodesic", "geodesic": {"lambda_reg": 1.0, "target": "fixed"}},
            )
        )
    )  # fixed: acts at any batch size
    out = tmp_path / "cmp"
    assert main(["compare", str(config), str(out), "--no-figures"]) == 0  # its own training curves are drawn
    report = json.loads((out / "comparison_report.json").read_text())
    assert (out / "training_curves_comparison.png").read_bytes()[:4] == b"\x89PNG"
    reg = json.loads(Path(report["runs"]["regularized"]["trial"], "metrics.json").read_text())
    base = json.loads(Path(report["runs"]["baseline"]["trial"], "metrics.json").read_text())
    assert reg["reg_loss"] > 0 and base["reg_loss"] == 0
    assert load_seed(report["runs"]["regularized"]["trial"]) == load_seed(report["runs"]["baseline"]["trial"]) == 4
    for key in ("val_accuracy", "test_accuracy", "geodesic_ratio_mean", "flatness_calibrated", "overfit_gap"):
        d = report["differences"][key]
        assert d["regularized"] == pytest.approx(reg[key]) and d["baseline"] == pytest.approx(base[key])
        assert d["absolute"] == pytest.approx(reg[key] - base[key])
        if base[key]:
            assert d["percent"] == pytest.approx((reg[key] - base[key]) / abs(base[key]) * 100)
    assert report["overfitting"]["regularized_gap"] == pytest.approx(reg["overfit_gap"])
    assert report["geometry"]["regularized"]["n_points"] == reg["geometry_points"]
    assert set(report["geodesic"]["baseline"]) >= {"overall", "per_class"}
    printed = capsys.readouterr().out
    assert "comparison:" in printed and "flatness_calibrated" in printed
    assert (out / "report" / "index.html").is_file() and "report:" in printed


def test_compare_vary_runs_a_batchnorm_pair_and_compares_it(ray_session, tmp_path, cli):
    import yaml

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config(train={"epochs": 2, "seed": 3}, model={"batch_norm": True})))
    out = tmp_path / "bn"
    done = cli("compare", config, out, "--vary", "model.batch_norm=false,true", "--no-report")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "comparison_report.json").read_text())
    changed, kept = (Path(report["runs"][side]["trial"]) for side in ("regularized", "baseline"))
    assert yaml.safe_load((changed / "config.yaml").read_text())["model"]["batch_norm"] is True
    assert yaml.safe_load((kept / "config.yaml").read_text())["model"]["batch_norm"] is False
    assert load_seed(str(changed)) == load_seed(str(kept)) == 3
    acc = next(e for e in report["effects"] if e["metric"] == "test_accuracy")
    after, before = (json.loads((t / "metrics.json").read_text())["test_accuracy"] for t in (changed, kept))
    assert acc["regularizer"] == "true vs false" and acc["mean_diff"] == pytest.approx(after - before)
    assert "batch_norm=true" in done.stdout and "batch_norm=false" in done.stdout
    assert (out / "training_curves_comparison.png").read_bytes()[:4] == b"\x89PNG"
    for bad, why in (
        ("model.batch_norm=true", "give two different values"),
        ("train.seed=1,2", "the two runs share their seed"),
        ("model.nothing=1,2", "model.nothing"),
    ):
        done = cli("compare", config, tmp_path / "x", "--vary", bad)
        assert done.returncode == 2 and why in done.stderr, (bad, done.stderr)


def load_seed(trial_dir: str) -> int:
    from geotune.config_loading import load_config

    return load_config(Path(trial_dir) / "config.yaml").train.seed


def test_compare_refuses_a_config_without_regularizer(tmp_path, capsys):
    from geotune.study.cli import main

    empty = tmp_path / "c.yaml"
    empty.write_text("")
    assert main(["compare", str(empty), str(tmp_path / "out")]) == 2
    assert "regularizer.name' = none: nothing to compare" in capsys.readouterr().err


def test_pareto_mode_searches_two_objectives_and_draws_the_front(ray_session, tmp_path, capsys):
    import optuna

    from geotune.study.cli import main

    space = write_space(
        tmp_path / "pareto_space.py",
        """
        def sample(trial):
            trial.suggest_float("regularizer.geodesic.lambda_reg", 1e-3, 1.0, log=True)

        SPACE = SearchSpace(name="tiny_pareto", question="Accuracy against flatness?",
                          base={**TINY, "regularizer": {"name": "geodesic"}}, optuna=sample, num_samples=3,
                          seeds=[0], max_concurrent=2, asha=Asha(grace_period=1),
                          pareto=[("val_accuracy", "max"), ("flatness_calibrated_per_class", "min")])
    """,
    )
    rc = main(["run", str(space), "--pareto", "--storage", str(tmp_path), "--name", "p", "train.epochs=2"])
    assert rc == 0
    assert "--pareto: ASHA is off" in capsys.readouterr().err
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{tmp_path / 'p' / 'optuna.db'}")
    assert study.metric_names == ["val_accuracy", "flatness_calibrated_per_class"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and all(len(t.values) == 2 for t in complete)
    report = tmp_path / "p" / "report"
    assert (report / "figures" / "pareto.png").is_file() and "Pareto front" in (report / "REPORT.md").read_text()
