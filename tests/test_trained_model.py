"""A finished trial as a model: the kept epoch (best or last), preprocessing.json, ONNX refusal, geotune predict."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_config
from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.preprocessing_file import read_preprocessing
from geotune.trainables.data import load_data
from geotune.trainables.trial import NoSession, check_config, run_trial


def peaking_config(keep: str) -> TrialConfig:
    """digits with 5% of the images for training and no dropout: the validation loss bottoms out at epoch 10
    of 15 and rises as the network overfits (measured; the test checks that it still does)."""
    train = {"epochs": 15, "lr": 1e-2, "scheduler": "none", "patience": 0, "batch_size": 32, "num_threads": 1}
    return TrialConfig.from_dict(
        {
            "dataset": {"name": "digits", "val_ratio": 0.8, "test_ratio": 0.15},
            "model": {"type": "fc", "channels": [64], "dropout": 0.0, "hidden_dim": 16},
            "train": {**train, "keep": keep},
            "logging": {"save_umap": False, "test_every_epoch": True},
        }
    )


def val_loss_of(weights_file, cfg: TrialConfig) -> float:
    from geotune.trainables.heads import OutputLayer
    from geotune.trainables.loop import evaluate
    from geotune.trainables.models import build_model

    data = load_data(cfg.dataset)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(weights_file, weights_only=True))
    return evaluate(model, OutputLayer(cfg.model.output), data, data.val).loss


@pytest.mark.slow
def test_keep_best_tests_the_epoch_whose_validation_loss_peaked_early(tmp_path):
    best = run_trial(peaking_config("best"), NoSession(), tmp_path / "best", verbose=False)
    last = run_trial(peaking_config("last"), NoSession(), tmp_path / "last", verbose=False)
    history = json.loads((tmp_path / "best" / "training_history.json").read_text())
    assert json.loads((tmp_path / "last" / "training_history.json").read_text())[-1]["val_loss"] == pytest.approx(
        history[-1]["val_loss"], rel=1e-6
    )  # keep changes what is tested, not how the network trains
    losses = [row["val_loss"] for row in history]
    kept = int(np.argmin(losses)) + 1
    assert kept <= len(history) - 3 and losses[-1] > losses[kept - 1] * 1.05  # the run really peaks early

    assert best["kept_epoch"] == kept and best["keep"] == "best" and best["keep_by"] == "val_loss"
    assert f"epoch {kept} of 15" in best["kept_reason"]
    row = history[kept - 1]
    # test metrics, train metrics and the saved weights all come from the kept epoch
    assert best["val_loss"] == pytest.approx(row["val_loss"], rel=1e-5)
    assert best["test_loss"] == pytest.approx(row["test_loss"], rel=1e-5)
    assert best["test_accuracy"] == pytest.approx(row["test_accuracy"])
    assert best["train_accuracy"] == row["train_accuracy"]
    assert val_loss_of(tmp_path / "best" / "model.pt", peaking_config("best")) == pytest.approx(row["val_loss"], 1e-5)
    latents = np.load(tmp_path / "best" / "latents.npz")  # the measured split: val, 16x the training split here
    assert best["geometry_split"] == "val"
    assert (latents["logits"].argmax(1) == latents["labels"]).mean() == pytest.approx(row["val_accuracy"])

    assert last["kept_epoch"] == 15 and last["kept_reason"] == "last epoch (15)"
    assert last["val_loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert last["test_loss"] == pytest.approx(history[-1]["test_loss"], rel=1e-5)
    assert val_loss_of(tmp_path / "last" / "model.pt", peaking_config("last")) == pytest.approx(losses[-1], 1e-5)
    assert best["val_loss"] < last["val_loss"]


def test_keep_best_by_accuracy_survives_a_checkpoint_round_trip():
    from geotune.trainables.loop import KeptWeights

    model = torch.nn.Linear(2, 2)
    kept = KeptWeights("best", "val_accuracy")
    assert kept.mode == "max"
    for epoch, accuracy in enumerate([0.5, 0.7, 0.7, 0.6], 1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        kept.update({"epoch": epoch, "val_accuracy": accuracy}, model)
    assert kept.epoch == 2  # a tie keeps the earlier epoch
    restored = KeptWeights("best", "val_accuracy")
    restored.load_state_dict(kept.state_dict())
    assert torch.equal(restored.kept_model(model).weight, torch.full((2, 2), 2.0))
    assert torch.equal(model.weight, torch.full((2, 2), 4.0))  # the training model is left alone


def test_a_tie_of_the_kept_metric_goes_to_the_lower_validation_loss():
    """An accuracy counts images and saturates, so epochs tie on it often: 5 of the quickstart's 12 trials had a
    later epoch with the best validation accuracy (2026-12-05), and the layer recipe's accuracy is 1.0 from epoch
    1. A tie goes to the lower val_loss, so the kept network is the one later training improved, not the first to
    reach the value; a tie on both keeps the earlier epoch. kept_reason names the tied epochs."""
    from geotune.trainables.artifacts import kept_reason
    from geotune.trainables.loop import KeptWeights

    model = torch.nn.Linear(2, 2)
    saturated = KeptWeights("best", "val_accuracy")
    losses = [0.30, 0.20, 0.25, 0.10, 0.10]
    history = [
        {"epoch": e, "val_accuracy": a, "val_loss": v}
        for e, (a, v) in enumerate(zip([1.0, 1.0, 0.99, 1.0, 1.0], losses), 1)
    ]
    for row in history:
        with torch.no_grad():
            model.weight.fill_(row["epoch"])
        saturated.update(row, model)
    assert saturated.epoch == 4, "the lowest val_loss among the tied epochs; 5 ties it on both: the earlier"
    assert torch.equal(saturated.kept_model(model).weight, torch.full((2, 2), 4.0))
    assert kept_reason("best", saturated, history) == (
        "best val_accuracy on the validation split (1, epoch 4 of 5); tied by epochs 1, 2, 5, this one kept for the "
        "lowest val_loss (then the earliest)"
    )
    restored = KeptWeights("best", "val_accuracy")
    restored.load_state_dict(saturated.state_dict())
    restored.update({"epoch": 6, "val_accuracy": 1.0, "val_loss": 0.05}, model)
    assert restored.epoch == 6, "a resumed trial breaks ties as an uninterrupted one"
    rising = KeptWeights("best", "val_accuracy")
    for row in history[:2]:
        rising.update({**row, "val_accuracy": row["epoch"] * 0.4}, model)
    assert kept_reason("best", rising, history[:2]).endswith("(0.8, epoch 2 of 2)"), "no tie, nothing to add"
    assert kept_reason("last", rising, history[:2]) == "last epoch (2)"


def test_space_metric_picks_the_kept_epoch():
    from geotune.search_spaces.space import load_space
    from geotune.study.plan import RunOptions, make_plan

    plan = make_plan(load_space("quickstart"), {}, RunOptions(storage="/tmp/unused"))
    assert plan.metric == "val_accuracy" and plan.base["train"]["keep_by"] == "val_accuracy"
    mine = make_plan(load_space("quickstart"), {"train": {"keep_by": "val_loss"}}, RunOptions(storage="/tmp/unused"))
    assert mine.base["train"]["keep_by"] == "val_loss"  # the user's choice wins


def test_onnx_without_the_extra_is_refused_before_training(monkeypatch, tmp_path, capsys):
    import importlib.util

    from geotune.study.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name))
    cfg = TrialConfig.from_dict(tiny_config(logging={"export_onnx": True}))
    with pytest.raises(ConfigError, match=r"'logging.export_onnx' = true needs the ONNX extra \(onnxruntime"):
        check_config(cfg)
    config = tmp_path / "tiny.yaml"
    config.write_text(cfg.to_yaml())
    rc = main(["train", str(config), str(tmp_path / "out")])
    assert rc == 2
    assert "logging.export_onnx" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing started


# ---------------------------------------------------------------------------
# geotune predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny digits trial (16 px inputs, as configs/digits.yaml), trained once for the predict tests."""
    folder = tmp_path_factory.mktemp("trial")
    cfg = TrialConfig.from_dict(tiny_config(dataset={"image_size": 16}, train={"epochs": 4}))
    run_trial(cfg, NoSession(), folder, verbose=False)
    return folder, cfg


def write_test_images(folder, cfg):
    """Validation digits as files in real formats: an 8-bit grey PNG at the training size, an RGB JPEG at 3x
    the size, an RGBA PNG, a 16-bit PNG, and a file that is not an image."""
    data = load_data(cfg.dataset)
    images = data.val.images[:4, 0].numpy()
    folder.mkdir()
    Image.fromarray(images[0]).save(folder / "grey.png")
    Image.fromarray(images[1]).convert("RGB").resize((48, 48), Image.Resampling.BILINEAR).save(
        folder / "big.jpg", quality=95
    )
    rgba = np.dstack([np.repeat(images[2][..., None], 3, axis=2), np.full((16, 16), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(images[3].astype(np.uint16) * 257).save(folder / "deep.png")
    (folder / "notes.png").write_bytes(b"this is not a PNG")
    return data, images


@pytest.mark.slow
def test_predict_prints_top_k_as_json_and_draws_the_grid(trained, tmp_path, capsys):
    from geotune.study.cli import main
    from geotune.trainables.predict import load_trained, probabilities

    folder, cfg = trained
    data, images = write_test_images(tmp_path / "images", cfg)
    rc = main(["predict", str(folder), str(tmp_path / "images"), "--top-k", "3", "--json", "--out", str(tmp_path)])
    out, err = capsys.readouterr()
    assert rc == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["file"].rsplit("/", 1)[1] for r in rows] == ["alpha.png", "big.jpg", "deep.png", "grey.png"]
    assert "skipped" in err and "notes.png" in err  # the unreadable file is reported, the others predicted
    assert (tmp_path / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # same probabilities as the model on the training pipeline's own tensors, for the lossless files
    model = load_trained(folder)
    expected = probabilities(model, torch.from_numpy(images[:, None]))
    by_name = {r["file"].rsplit("/", 1)[1]: r for r in rows}
    for i, name in [(0, "grey.png"), (2, "alpha.png"), (3, "deep.png")]:
        top = by_name[name]["top_k"]
        probs = [t["probability"] for t in top]
        assert len(top) == 3 and probs == sorted(probs, reverse=True)
        values, indices = expected[i].topk(3)
        assert [t["class"] for t in top] == [data.class_names[j] for j in indices.tolist()]
        assert [t["probability"] for t in top] == pytest.approx(values.tolist(), abs=1e-5)
    # the JPEG, enlarged 3x and back, is the same digit to the model
    assert by_name["big.jpg"]["top_k"][0]["class"] == data.class_names[int(expected[1].argmax())]

    # without --json: one readable line per image; an unknown path is reported, not fatal
    images = [str(tmp_path / "images" / "grey.png"), str(tmp_path / "nope.png")]
    rc = main(["predict", str(folder), *images, "--out", str(tmp_path / "text")])
    out, err = capsys.readouterr()
    assert rc == 0 and out.startswith(f"{tmp_path / 'images' / 'grey.png'}: ") and "nope.png" in err


@pytest.mark.slow
def test_predict_refuses_what_it_cannot_use(trained, tmp_path, capsys):
    from geotune.study.cli import main

    folder, _ = trained
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    assert main(["predict", str(folder), str(tmp_path / "bad.png")]) == 2
    assert "no readable image" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), str(tmp_path / "bad.png")]) == 2
    assert "is not a finished trial folder: it has no config.yaml" in capsys.readouterr().err
    assert main(["predict", str(folder), str(tmp_path / "bad.png"), "--top-k", "0"]) == 2
    assert "--top-k 0" in capsys.readouterr().err

    # a hand-edited preprocessing.json is named with its key
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    prep = json.loads((copy / "preprocessing.json").read_text())
    prep["std"] = [0.0]
    (copy / "preprocessing.json").write_text(json.dumps(prep))
    with pytest.raises(ConfigError, match=r"key 'std' = \[0.0\]: expected 1 finite numbers > 0"):
        read_preprocessing(copy / "preprocessing.json")


@pytest.mark.slow
def test_predict_sparsemax_gives_sparse_probabilities(tmp_path, capsys):
    from geotune.study.cli import main

    cfg = TrialConfig.from_dict(tiny_config(model={"output": "sparsemax"}, train={"epochs": 3}))
    run_trial(cfg, NoSession(), tmp_path / "trial", verbose=False)
    data = load_data(cfg.dataset)
    (tmp_path / "images").mkdir()
    for i in range(6):
        Image.fromarray(data.test.images[i, 0].numpy()).save(tmp_path / "images" / f"{i}.png")
    args = [str(tmp_path / "trial"), str(tmp_path / "images"), "--json", "--top-k", "10", "--out", str(tmp_path)]
    assert main(["predict", *args]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    sums = [sum(t["probability"] for t in r["top_k"]) for r in rows]
    assert sums == pytest.approx([1.0] * 6, abs=1e-5)
    assert all(any(t["probability"] == 0.0 for t in r["top_k"]) for r in rows)  # sparsemax's exact zeros


@pytest.mark.slow
def test_shapes_trial_is_a_usable_rgb_model(tmp_path, capsys):
    """The RGB data set end to end: preprocessing.json says RGB, ONNX takes [0, 1] pixels, predict reads JPEGs."""
    import onnxruntime

    from geotune.study.cli import main

    cfg = TrialConfig.from_dict(
        {
            "dataset": {"name": "shapes", "shapes": {"num_samples": 240}},
            "model": {"type": "simple_cnn", "channels": [8, 16], "hidden_dim": 16},
            "train": {"epochs": 2, "batch_size": 32, "num_threads": 1},
            "logging": {"save_umap": False, "export_onnx": True, "geometry_layers": ["input", "block1", "embedding"]},
        }
    )
    metrics = run_trial(cfg, NoSession(), tmp_path / "trial", verbose=False)
    assert metrics["onnx_matches"] is True and metrics["warnings"] == []
    prep = read_preprocessing(tmp_path / "trial" / "preprocessing.json")
    assert prep.channel_order == "RGB" and len(prep.mean) == 3 and prep.num_classes == 3

    data = load_data(cfg.dataset)
    session = onnxruntime.InferenceSession(str(tmp_path / "trial" / "model.onnx"), providers=["CPUExecutionProvider"])
    from geotune.trainables.predict import load_trained

    model = load_trained(tmp_path / "trial").model
    with torch.no_grad():
        expected = model(data.normalize(data.test.images[:16])).numpy()
    got = session.run(None, {"images": (data.test.images[:16].float() / 255).numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())

    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.fromarray(data.test.images[i].permute(1, 2, 0).numpy()).save(tmp_path / "images" / f"{i}.png")
    assert main(["predict", str(tmp_path / "trial"), str(tmp_path / "images"), "--json", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["top_k"][0]["class"] for r in rows] == [data.class_names[int(i)] for i in expected[:3].argmax(1)]
    layers = json.loads((tmp_path / "trial" / "layer_geometry.json").read_text())["layers"]
    assert [r["width"] for r in layers] == [3 * 32 * 32, 8 * 16 * 16, 16]  # flattened
    assert [r["dim"] for r in layers] == [2048, 2048, 16]  # the pixels, wider than 2048, randomly projected
    assert [r["projected"] for r in layers] == [True, False, False]


@pytest.mark.slow
def test_export_after_the_fact_reproduces_the_model_in_both_formats(trained, tmp_path, capsys):
    """geotune export on a trial trained without logging.export_onnx: ONNX and TorchScript files, each read back
    by its own runtime on real test images, give the logits of the PyTorch model on the training pipeline's
    normalised images."""
    import warnings

    import onnxruntime

    from geotune.study.cli import main
    from geotune.trainables.predict import load_trained

    folder, cfg = trained
    data = load_data(cfg.dataset)
    images = data.test.images[:16]
    model = load_trained(folder).model
    with torch.no_grad():
        expected = model(data.normalize(images)).numpy()
    pixels = (images.float() / 255).numpy()
    for fmt in ("onnx", "torchscript"):
        out = tmp_path / f"m.{fmt}"
        assert main(["export", str(folder), "--format", fmt, "--out", str(out)]) == 0
        assert "matches PyTorch" in capsys.readouterr().out
        if fmt == "onnx":
            session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
            got = session.run(None, {"images": pixels})[0]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                got = torch.jit.load(str(out)).eval()(torch.from_numpy(pixels)).detach().numpy()
        assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max()), fmt
    assert main(["export", str(folder), "--out", str(tmp_path)]) == 2
    assert "is a folder; give the file to write" in capsys.readouterr().err


def test_export_without_the_onnx_extra_is_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    from geotune.study.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        "geotune export --format onnx needs the ONNX extra (onnxruntime missing)" in err
        and "--format torchscript" in err
    )
