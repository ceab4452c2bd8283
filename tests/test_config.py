import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from geotune.config import TrialConfig, commented_defaults, reference_markdown, reference_rows
from geotune.config_loading import apply_overrides, load_config
from geotune.errors import ConfigError

REPO = Path(__file__).parents[1]


def test_defaults_are_valid_and_roundtrip():
    cfg = TrialConfig.from_dict({})
    assert cfg.dataset.name == "digits"
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    # The commented reference is itself a loadable config equal to the defaults.
    import yaml

    assert TrialConfig.from_dict(yaml.safe_load(commented_defaults())) == cfg


def test_yaml_then_set_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.01\n  epochs: 7\nmodel:\n  pooling: avg\n")
    cfg = load_config(path, ["train.lr=0.05", "regularizer.geodesic.n_neighbors=4"])
    assert cfg.train.lr == 0.05  # --set beats the file
    assert cfg.train.epochs == 7  # the file beats the default
    assert cfg.model.pooling == "avg"
    assert cfg.regularizer.geodesic.n_neighbors == 4
    assert cfg.train.batch_size == 128  # untouched default


def test_scientific_notation_string_from_yaml_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-3\n")  # YAML 1.1 reads this as the string '1e-3'
    assert load_config(path).train.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (["train.learning_rate=0.1"], ["train.learning_rate", "did you mean 'lr'"]),
        (["bogus.key=1"], ["bogus", "keys allowed in the top level"]),
        (["train.lr=-0.1"], ["train.lr", "-0.1", "must be > 0"]),
        (["train.epochs=ten"], ["train.epochs", "ten", "expected an integer"]),
        (["train.epochs=2.5"], ["train.epochs", "2.5", "expected an integer"]),
        (["model.batch_norm=3"], ["model.batch_norm", "expected true/false"]),
        (["dataset.val_ratio=1.0"], ["dataset.val_ratio", "must be < 1"]),
        (["dataset.val_ratio=0.6", "dataset.test_ratio=0.5"], ["dataset.val_ratio", "must be < 1"]),
        (["regularizer.geodesic.n_neighbors=0"], ["regularizer.geodesic.n_neighbors", "must be >= 1"]),
        (["model.pooling=mean"], ["model.pooling", "mean", "stride, max, avg"]),
        (["model.kernel_size=4"], ["model.kernel_size", "3, 5, 7"]),
        (["model.channels=[16, -2]"], ["model.channels", "must be >= 1"]),
        (["model.channels=[16, 100000]"], ["model.channels", "must be <= 16384"]),
        (["model.hidden_dim=1e9"], ["model.hidden_dim"]),
        (["model.hidden_dim=1000000000"], ["model.hidden_dim", "must be <= 65536"]),
        (["dataset.image_size=30000"], ["dataset.image_size", "must be <= 1024"]),
        (["model.input_shape=[3, 100000, 100000]"], ["model.input_shape", "must be <= 8192"]),
        (["train.lr=.nan"], ["train.lr", "finite"]),
        (["dataset.classes=[3]"], ["dataset.classes", "at least two"]),
        (["model.input_shape=[1, 8]"], ["model.input_shape", "[channels, height, width]"]),
        (
            ["regularizer.name=geodesic", "regularizer.geodesic.n_neighbors=200"],
            ["regularizer.geodesic.n_neighbors", "train.batch_size"],
        ),
        (["train=5"], ["'train'", "expected a mapping"]),
        (["regularizer.geodesic.target_ratio=1.2"], ["regularizer.geodesic.target_ratio", "1.2", "target=fixed"]),
        (["regularizer.geodesic.exclude_direct=true"], ["regularizer.geodesic.exclude_direct", "fixed only"]),
        (["regularizer.geodesic.target=curved"], ["regularizer.geodesic.target", "curved", "flat, fixed"]),
    ],
)
def test_bad_values_are_rejected_with_one_line_naming_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_set_syntax_errors():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides({}, ["train.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"train": 3}, ["train.lr=1"])


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml' line \d+: not valid YAML"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)


def test_on_and_off_mean_the_choices_not_booleans(tmp_path):
    """YAML 1.1 reads on/off as true/false; for a key whose choices are on/off they mean those choices."""
    cfg = TrialConfig.from_dict(apply_overrides({}, ["logging.internals=off", "train.precise_bn=on"]))
    assert (cfg.logging.internals, cfg.train.precise_bn) == ("off", "on")
    path = tmp_path / "c.yaml"
    path.write_text("logging:\n  internals: off\n")
    assert load_config(path).logging.internals == "off"
    with pytest.raises(ConfigError, match="'dataset.normalize' = false: expected a string"):
        TrialConfig.from_dict({"dataset": {"normalize": False}})  # none of its choices is on/off


def test_numpy_scalars_from_search_spaces_are_accepted():
    import numpy as np

    cfg = TrialConfig.from_dict(
        {"train": {"epochs": np.int64(4), "lr": np.float32(0.5)}, "model": {"batch_norm": np.bool_(False)}}
    )
    assert cfg.train.epochs == 4 and isinstance(cfg.train.epochs, int)
    assert cfg.model.batch_norm is False


def test_reference_documents_every_key():
    rows = reference_rows()
    keys = [r[0] for r in rows]
    assert "regularizer.geodesic.n_neighbors" in keys and "logging.export_onnx" in keys
    assert all(r[3] for r in rows), "every key has a one-line meaning"
    # the documentation site's config page is this table (tests/test_docs.py reads it in the built site)
    table = reference_markdown()
    missing = [k for k in keys if f"| `{k}` |" not in table]
    assert not missing, f"the config reference lacks {missing}"


@pytest.mark.slow
def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  pooling: median\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "geotune", "train", str(cfg), str(out)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model.pooling" in lines[0] and "median" in lines[0]
    assert not out.exists(), "nothing may start before validation passes"


def test_cli_refuses_to_overwrite_results(tmp_path, cli, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    monkeypatch.chdir(REPO)  # the README's relative path
    proc = cli("train", "configs/digits.yaml", out)
    assert proc.returncode == 2
    assert "already holds results" in proc.stderr
    assert (out / "metrics.json").read_text() == "{}"


def test_cli_missing_dataset_files_exit_2(tmp_path, cli):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    proc = cli("train", empty, tmp_path / "o", "--set", "dataset.name=cifar10", "--set", f"dataset.root={tmp_path}")
    assert proc.returncode == 2
    assert "cifar-10-batches-py" in proc.stderr and "data_batch_1" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_shorter_run_fits_what_depends_on_its_epochs_and_says_so(tmp_path):
    """A smoke test's --set train.epochs=1 over a file (or a space) whose geodesic term starts at epoch 2, or
    whose phases add up to more: what the earlier layer set is fitted, with a line per change; what the user
    wrote in the same or a later layer as train.epochs is still judged as written."""
    from geotune.config_loading import fit_to_epochs, load_config

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "regularizer": {"name": "geodesic", "geodesic": {"start_epoch": 2}},
                "train": {"phases": [{"epochs": 2, "lr": 0.01}, {"epochs": 2, "optimizer": "sgd"}]},
            }
        )
    )
    notes: list[str] = []
    assert load_config(path, notes=notes).train.epochs == 4  # the phases' sum, without a word
    assert notes == []
    cfg = load_config(path, ["train.epochs=1"], notes=notes)
    assert cfg.train.epochs == 1 and [p.epochs for p in cfg.train.phases] == [1]
    assert cfg.regularizer.geodesic.start_epoch == 1 and cfg.train.phases[0].lr == 0.01
    assert notes == [
        "train.phases [2, 2] -> [1] epochs, to add up to train.epochs (1)",
        "regularizer.geodesic.start_epoch 2 -> 1: train.epochs (1) ends before it",
    ]
    longer = load_config(path, ["train.epochs=7"])
    assert [p.epochs for p in longer.train.phases] == [2, 5]  # the last phase goes on
    with pytest.raises(ConfigError, match=r"'regularizer.geodesic.start_epoch' = 5: must be <= train.epochs \(1\)"):
        load_config(path, ["train.epochs=1", "regularizer.geodesic.start_epoch=5"])
    data, said = fit_to_epochs({"train": {"epochs": "x", "phases": 3}}, {"train": {"epochs": "x"}})
    assert said == [] and data == {"train": {"epochs": "x", "phases": 3}}  # malformed: left to the schema


def test_a_space_run_shorter_than_its_term_starts_plans_with_a_warning(tmp_path, capsys):
    from geotune.study.cli import main

    code = main(["run", "quickstart", "--set", "train.epochs=1", "--dry-run", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and "warning: regularizer.geodesic.start_epoch 2 -> 1: train.epochs (1) ends before it" in err
