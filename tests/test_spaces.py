"""Search spaces: every named space plans the right trials; dry runs print them and train nothing."""

import itertools
import json
import sys
from pathlib import Path

import pytest

from geotune.errors import ConfigError
from geotune.search_spaces.space import builtin_space_names, load_space
from geotune.study.plan import RunOptions, make_plan

REPO = Path(__file__).parents[1]

EXPECTED = {
    "quickstart": [
        {"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic", "geometry") for s in (0, 1, 2)
    ]
    + [{"regularizer.name": "geodesic", "regularizer.geodesic.target": "fixed", "train.seed": s} for s in (0, 1, 2)],
    "geodesic_grid": [{"regularizer.name": "none", "train.seed": s} for s in (0, 1, 2)]
    + [
        {
            "regularizer.name": "geodesic",
            "regularizer.geodesic.lambda_reg": lam,
            "regularizer.geodesic.n_neighbors": k,
            "train.seed": s,
        }
        for lam in (0.05, 0.2, 1.0)
        for k in (3, 5, 8)
        for s in (0, 1, 2)
    ],
    "pooling_bn": [
        {"model.pooling": p, "model.batch_norm": bn, "regularizer.name": r, "train.seed": s}
        for p, bn, r, s in itertools.product(("stride", "max", "avg"), (True, False), ("none", "geodesic"), (0, 1))
    ],
    "architectures": [
        {"model.type": t, "model.channels": w, "model.dropout": d, "regularizer.name": r, "train.seed": s}
        for t, w in (
            ("fc", [256, 128]),
            ("simple_cnn", [32, 64]),
            ("resnet_basic", [32, 64]),
            ("resnet_bottleneck", [32, 64]),
        )
        for d in (0.0, 0.5)
        for r in ("none", "geodesic")
        for s in (0, 1, 2)
    ],
    "kernels": [
        {"model.kernel_size": k, "model.param_budget": 60_000, "train.seed": s} for k in (3, 5, 7) for s in (0, 1, 2)
    ]
    + [{"model.kernel_size": k, "train.seed": s} for k in (3, 5, 7) for s in (0, 1, 2)],
    "bn_gradients": [
        {"model.batch_norm": bn, "model.output": o, "train.seed": s}
        for bn in (True, False)
        for o in ("softmax", "sparsemax")
        for s in (0, 1, 2)
    ],
    "cifar100_pooling": [{"model.pooling": p, "train.seed": s} for p in ("stride", "max", "avg") for s in (0, 1, 2)]
    + [
        {
            "model.kernel_sizes": [5, 3],
            "model.strides": [4, 2],
            "model.pooling": "stride",
            "model.global_pool": g,
            "train.seed": s,
        }
        for g in ("max", "avg")
        for s in (0, 1, 2)
    ],
    "custom_layers": [{"model.activation": a, "train.seed": s} for a in ("relu", "swish") for s in (0, 1, 2)]
    + [
        {key: value, "train.seed": s}
        for key, value in (
            ("model.attention", "channel"),
            ("model.conv", "gated"),
            ("model.pooling", "l2"),
            ("model.type", "resnet_basic"),
            ("model.type", "resnet_bottleneck"),
        )
        for s in (0, 1, 2)
    ],
    "segmentation": [
        {"model.type": m, "train.loss": loss, "train.seed": s}
        for m in ("conv_autoencoder", "unet", "unet_separable")
        for loss in ("weighted_ce", "focal", "dice")
        for s in (0, 1, 2)
    ],
    "backbones": [
        {"model.type": f"torchvision.{m}", "regularizer.name": r, "train.seed": s}
        for m in ("resnet18", "mobilenet_v3_small", "shufflenet_v2_x0_5")
        for r in ("none", "geodesic")
        for s in (0, 1, 2)
    ],
    "heads": [
        {"model.output": o, "regularizer.name": r, "train.seed": s}
        for o in ("softmax", "sparsemax")
        for r in ("none", "geodesic")
        for s in (0, 1, 2)
    ],
}


def test_every_builtin_space_is_known_and_documented():
    names = builtin_space_names()
    assert set(names) == set(EXPECTED) | {"optuna_geodesic"}
    for name in names:
        space = load_space(name)
        module = sys.modules[f"geotune.search_spaces.{name}"]
        assert module.__doc__ and space.question, name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_grid_spaces_plan_the_right_trials(name, tmp_path):
    plan = make_plan(load_space(name), {}, RunOptions(storage=str(tmp_path)))
    assert sorted(map(repr, plan.variants)) == sorted(map(repr, EXPECTED[name]))
    assert len(plan.variants_by_label()) == len(plan.variants), "labels are distinct"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dry_run_lists_the_trials_and_trains_nothing(name, tmp_path, capsys):
    from geotune.study.cli import main  # in this process: the CLI's own start-up is tested elsewhere

    assert main(["run", name, "--dry-run", "--storage", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"trials          : {len(EXPECTED[name])} (grid)" in out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == len(EXPECTED[name])
    assert "per trial       : 1 CPU" in out and "note: no GPU on this machine" in out
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"


def test_dry_run_of_the_optuna_space(cli):
    proc = cli("run", "optuna_geodesic", "--dry-run", "--num-samples", "7")
    assert proc.returncode == 0, proc.stderr
    assert "trials          : 7 (Optuna TPE samples)" in proc.stdout
    for key in (
        "regularizer.geodesic.lambda_reg",
        "regularizer.geodesic.n_neighbors",
        "regularizer.geodesic.target",
        "regularizer.geodesic.start_epoch",
        "train.lr",
    ):
        assert key in proc.stdout
    assert "log=True" in proc.stdout
    assert "ASHA on epochs (grace period 3, reduction factor 2" in proc.stdout


def test_spaces_lists_questions_and_counts(cli):
    proc = cli("spaces")
    assert proc.returncode == 0
    for name, plan in EXPECTED.items():
        line = next(line for line in proc.stdout.splitlines() if line.startswith(name + " "))
        assert f" {len(plan)} " in line and load_space(name).question[:40] in line


def test_options_and_conflicts(tmp_path):
    space = load_space("heads")
    plan = make_plan(
        space,
        {"train": {"epochs": 3}},
        RunOptions(storage=str(tmp_path), num_samples=4, cpus_per_trial=2, gpus_per_trial=0.5),
    )
    assert len(plan.variants) == 2 * 2 * 4  # --num-samples: seeds per variant for grid spaces
    assert plan.base["train"]["epochs"] == 3 and plan.cpus_per_trial == 2 and plan.gpus_per_trial == 0.5
    assert Path(plan.base["dataset"]["root"]).is_absolute()
    with pytest.raises(ConfigError, match="'model.output' is varied by the space 'heads'"):
        make_plan(load_space("heads"), {"model": {"output": "softmax"}}, RunOptions(storage=str(tmp_path)))
    with pytest.raises(ConfigError, match="train.lr"):
        make_plan(load_space("heads"), {"train": {"lr": -1}}, RunOptions(storage=str(tmp_path)))
    with pytest.raises(ConfigError, match="--gpus-per-trial 1.5"):
        make_plan(load_space("heads"), {}, RunOptions(storage=str(tmp_path), gpus_per_trial=1.5))
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        load_space("nope")


def test_each_distinct_config_is_checked_once_whatever_its_seeds(tmp_path, monkeypatch):
    """The seed changes neither data files nor shapes: 3 seeds of 2 variants are 2 checks (the key once dropped
    'seed: 0' from 'split_seed: 0' too, so seed 0 and seed 1 of one variant were checked apart)."""
    import geotune.study.plan as plan_module
    import geotune.trainables.trial as trial_module

    checked, data_reads, networks = [], [], []
    real, real_data, real_model = plan_module.check_config, trial_module.check_dataset, trial_module.build_model
    monkeypatch.setattr(
        plan_module, "check_config", lambda cfg, memo=None: checked.append(cfg.train.seed) or real(cfg, memo)
    )
    monkeypatch.setattr(trial_module, "check_dataset", lambda d: data_reads.append(d.name) or real_data(d))
    monkeypatch.setattr(trial_module, "build_model", lambda *a, **k: networks.append(1) or real_model(*a, **k))
    make_plan(load_space("quickstart"), {}, RunOptions(storage=str(tmp_path)))
    assert len(load_space("quickstart").seeds) == 3 and checked == [0] * 4  # 4 variants x 3 seeds
    # issue 36: the 4 configs share one data set and one network: its files are read once, the network built once
    assert data_reads == ["digits"] and networks == [1]


def test_invalid_planned_trial_is_named(tmp_path):
    # n_neighbors 8 from the grid would be >= this batch size: the error names the trial
    with pytest.raises(ConfigError, match=r"space 'geodesic_grid', trial .*n_neighbors=8.*batch_size"):
        make_plan(load_space("geodesic_grid"), {"train": {"batch_size": 8}}, RunOptions(storage=str(tmp_path)))


def test_a_space_file_written_for_0_2_still_loads_and_is_told_the_new_name(tmp_path):
    from geotune.search_spaces.space import SearchSpace, load_space

    old = tmp_path / "old.py"
    old.write_text(
        "from geotune.search_spaces.spec import StudySpec\n"
        "SPACE = StudySpec(name='old', question='q', base={}, grid=[{'train.lr': [0.01]}])\n"
    )
    with pytest.warns(FutureWarning, match=r"spec\.StudySpec is now geotune\.search_spaces\.space\.SearchSpace"):
        space = load_space(str(old))
    assert isinstance(space, SearchSpace) and space.name == "old"
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        import geotune.search_spaces.spec as spec

        spec.Nothing  # noqa: B018


def test_user_space_module(tmp_path, cli):
    module = tmp_path / "my_space.py"
    module.write_text(
        "from geotune.search_spaces.space import SearchSpace\n"
        "SPACE = SearchSpace(name='mine', question='Does k matter?', base={'regularizer': {'name': 'geodesic'}},\n"
        "                  grid=[{'regularizer.geodesic.n_neighbors': [3, 4]}], seeds=[5])\n"
    )
    proc = cli("run", str(module), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "study 'mine': Does k matter?" in proc.stdout and "trials          : 2 (grid)" in proc.stdout
    broken = tmp_path / "broken.py"
    broken.write_text("SPACE = 3\n")
    proc = cli("run", str(broken), "--dry-run")
    assert proc.returncode == 2 and "does not define SPACE" in proc.stderr


def test_a_space_moved_to_another_data_set_leaves_out_its_own_data_settings(tmp_path):
    from geotune.search_spaces.space import load_space
    from geotune.study.plan import RunOptions, make_plan

    options = RunOptions(storage=str(tmp_path))
    own = make_plan(load_space("pooling_bn"), {}, options)
    assert own.base["dataset"]["image_size"] == 16 and not own.warnings

    moved = make_plan(load_space("pooling_bn"), {"dataset": {"name": "shapes", "augment": True}}, options)
    assert "image_size" not in moved.base["dataset"] and moved.base["dataset"]["augment"] is True
    (warning,) = [w for w in moved.warnings if "written for digits" in w]
    assert "dataset.image_size" in warning and "dataset.augment," not in warning  # the user's own key is kept

    spec = load_space("pooling_bn")
    spec.per_dataset = {"shapes": {"dataset": {"image_size": 24}, "train": {"epochs": 3}}}
    tuned = make_plan(spec, {"dataset": {"name": "shapes"}}, options)
    assert tuned.base["dataset"]["image_size"] == 24 and tuned.base["train"]["epochs"] == 3
    assert "uses its settings for shapes" in " ".join(tuned.warnings)


def crossed_factors(space) -> set[str]:
    """Keys outside regularizer.* that some arm of a grid lists two or more values of (so they have twins)."""
    return {
        k for arm in space.grid for k, values in arm.items() if len(values) > 1 and not k.startswith("regularizer.")
    }


NEW_SPACES = ("kernels", "bn_gradients", "cifar100_pooling", "custom_layers")  # issue 15's reference studies


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW_SPACES)
def test_reference_spaces_train_end_to_end_in_small(name, tmp_path, cli, ray_session):
    """One seed, one epoch, small data: every trial of the space trains, and the report gets its size table."""
    small = ["--set", "train.epochs=1", "--num-samples", "1", "--storage", str(tmp_path), "--name", "s"]
    # figures, UMAP, internals and the geometry of the training split are tested elsewhere; here the space's
    # trials and its report
    small += ["logging.save_umap=false", "logging.internals=off", "logging.figures=false", "logging.geometry_split=val"]
    data = ["--set", "dataset.shapes.num_samples=300"] if name == "cifar100_pooling" else []
    proc = cli("run", name, *small, *data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trials: " in proc.stdout and "failed" not in proc.stdout.split("trials:")[-1].splitlines()[0]
    report = (tmp_path / "s" / "report" / "REPORT.md").read_text()
    assert "Model size and time per variant" in report
    for factor in crossed_factors(load_space(name)):  # each key an arm varies gets its paired forest
        assert f"## What {factor} did, against " in report, factor
    if name == "kernels":  # at the budget the three kernels' models are within 5% of 60,000 parameters
        import json

        sizes = [
            json.loads(p.read_text())["num_parameters"]
            for p in (tmp_path / "s").glob("*/metrics.json")
            if "param_budget=60000" in p.parent.name
        ]
        assert len(sizes) == 3 and all(abs(n - 60_000) <= 3_000 for n in sizes), sizes


@pytest.mark.slow
def test_the_backbones_space_trains_every_backbone_and_reports_them(tmp_path, cli, ray_session):
    """CI-sized: every backbone x regularizer, one epoch, one seed, 90 images of 16 px; each trial's folder
    records the torchvision body it trained and the report compares them."""
    small = ["train.epochs=1", "dataset.shapes.num_samples=90", "dataset.image_size=16", "train.batch_size=30"]
    # UMAP, internals and the trials' PNGs are tested elsewhere; here the backbones and the report's tables
    small += ["logging.save_umap=false", "logging.internals=off", "logging.figures=false"]
    proc = cli("run", "backbones", *small, "--num-samples", "1", "--storage", str(tmp_path), "--name", "s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "6 trials: 6 completed" in proc.stdout
    study = tmp_path / "s"
    trained = {json.loads((p.parent / "params.json").read_text())["model.type"] for p in study.glob("*/metrics.json")}
    assert trained == {"torchvision.resnet18", "torchvision.mobilenet_v3_small", "torchvision.shufflenet_v2_x0_5"}
    sizes = {json.loads(p.read_text())["num_parameters"] for p in study.glob("*/metrics.json")}
    assert len(sizes) == 3, "three different networks were built"
    report = (study / "report" / "REPORT.md").read_text()
    assert "torchvision.mobilenet_v3_small" in report
    assert "## What model.type did, against torchvision.resnet18" in report
    assert "## Interactions: where one factor's effect depends on another" in report  # backbone x regularizer


@pytest.mark.slow
def test_the_segmentation_space_runs_and_reports_miou(tmp_path, cli, ray_session):
    """Every network x loss trains (one epoch, one seed, 60 images); the report ranks by mIoU and Dice, draws
    the data set's statistics once, and shows each group's latent panels."""
    small = ["--set", "train.phases=null", "--set", "train.epochs=1", "--set", "dataset.shapes_seg.num_samples=60"]
    # UMAP and internals are tested elsewhere (test_segmentation): the latent panels are PCA, here of 300
    # bottleneck vectors per trial (the geometry of the default 1,200 cost 4 s of a trial's 9)
    small += ["logging.save_umap=false", "logging.internals=off", "logging.latent_points=300"]
    proc = cli("run", "segmentation", *small, "--num-samples", "1", "--storage", str(tmp_path), "--name", "s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "9 trials: 9 completed" in proc.stdout and "test_miou" in proc.stdout
    study = tmp_path / "s"
    assert (study / "dataset_eda.json").is_file()
    report = (study / "report" / "REPORT.md").read_text()
    assert "## mIoU, Dice and loss per variant" in report and "| test mIoU | test Dice" in report
    assert "## The data set" in report and "## Latent space of each group's best trial" in report
    assert "test accuracy" not in report.split("## Latent geometry")[0], "mIoU replaces accuracy in the tables"


def test_planning_and_loading_leave_a_built_in_space_as_written(tmp_path):
    """The in-process CLI and notebooks share one module per space: a plan's --num-samples or a caller's change
    of a loaded space must not reach the next load (under the suite's shared workers it once did)."""
    from geotune.study.plan import RunOptions, make_plan

    before = list(load_space("segmentation").seeds)
    make_plan(load_space("segmentation"), {}, RunOptions(storage=str(tmp_path), num_samples=1))
    changed = load_space("bn_gradients")
    changed.reference = {}
    assert load_space("segmentation").seeds == before and len(before) > 1
    assert load_space("bn_gradients").reference == {"model.batch_norm": False, "model.output": "softmax"}
