"""One trial end to end: through the CLI and Ray Tune, bit-for-bit reproducibility, resume."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config
from geotune.config import TrialConfig
from geotune.config_loading import load_config
from geotune.trainables.trial import run_trial

REPO = Path(__file__).parents[1]
ARTIFACTS = [
    "config.yaml",
    "metrics.json",
    "training_history.json",
    "classification_report.json",
    "confusion_matrix.png",
    "train_val_loss.png",
    "train_val_accuracy.png",
    "grad_norms.png",
    "latents.npz",
    "model.pt",
    "preprocessing.json",
    "model.onnx",
    "test_predictions.png",
    "test_examples.json",
    "data_samples.png",
]


class Interrupted(Exception):
    pass


class MemorySession:
    """Keeps the checkpoint the way Tune would (serialised, reloaded weights_only); can crash after an epoch."""

    def __init__(self, checkpoint: bytes | None = None, crash_after_epoch: int | None = None):
        self.checkpoint = checkpoint
        self.crash_after_epoch = crash_after_epoch
        self.reports: list[dict] = []

    def restore(self):
        if self.checkpoint is None:
            return None
        return torch.load(io.BytesIO(self.checkpoint), weights_only=True)

    def report(self, metrics, state):
        self.reports.append(metrics)
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            self.checkpoint = buffer.getvalue()
        if self.crash_after_epoch is not None and metrics["epoch"] == self.crash_after_epoch:
            raise Interrupted

    def persist(self, artifact_dir):
        pass


def comparable(history):
    """History rows without wall-clock times, which differ run to run."""
    return [{k: v for k, v in row.items() if k not in ("epoch_time", "train_time")} for row in history]


def test_train_cli_end_to_end(ray_session, tmp_path, capsys):
    from geotune.study.cli import main

    out = tmp_path / "digits"
    rc = main(
        [
            "train",
            str(REPO / "configs" / "digits.yaml"),
            str(out),
            "--cpus",  # the old spelling, on purpose; one thread, as the suite's other worker trains beside it
            "1",
            "--set",
            "train.epochs=8",
            "--set",
            "logging.export_onnx=true",
            "--set",
            "logging.save_umap=false",
        ]
    )
    assert rc == 0
    printed, errors = capsys.readouterr()
    assert "--cpus is now --cpus-per-trial" in errors  # the 0.2 spelling still works, for one release
    trial = out / "trial"
    assert f"artifacts: {trial}" in printed and "val_accuracy" in printed
    for name in ARTIFACTS:
        assert (trial / name).is_file() and (trial / name).stat().st_size > 0, name

    metrics = json.loads((trial / "metrics.json").read_text())
    assert metrics["val_accuracy"] >= 0.90
    assert metrics["test_accuracy"] >= 0.85
    # the first test image of each of the first 8 classes, its raw logits and its softmax probabilities
    examples = json.loads((trial / "test_examples.json").read_text())
    assert examples["output"] == "softmax" and [e["label"] for e in examples["examples"]] == list(range(8))
    for e in examples["examples"]:
        logits = np.asarray(e["logits"])
        assert np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum() == pytest.approx(
            e["probabilities"], abs=1e-5
        )
        assert np.asarray(e["thumbnail"]).shape[-1] == 1 and max(np.asarray(e["thumbnail"]).shape[:2]) <= 28
    per_class = json.loads((trial / "geometry_summary.json").read_text())["per_class"]
    assert metrics["linear_separability"] == pytest.approx(
        np.mean([c["linear_separability"] for c in per_class.values()])
    )
    assert metrics["epochs_run"] == 8 and metrics["onnx_matches"] is True
    assert metrics["regularized"] is False  # digits.yaml trains without a penalty

    cfg = load_config(
        REPO / "configs" / "digits.yaml",
        [
            "train.epochs=8",
            "logging.export_onnx=true",
            "logging.save_umap=false",
            f"dataset.root={Path('data').resolve()}",
        ],
    )  # trials see an absolute data root
    assert load_config(trial / "config.yaml") == cfg  # the resolved config sits next to the results

    history = json.loads((trial / "training_history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 9))
    for row in history:
        assert set(row) >= {
            "train_loss",
            "val_loss",
            "train_accuracy",
            "val_accuracy",
            "reg_loss",
            "lr",
            "epoch_time",
            "grad_norms",
        }
        assert row["reg_loss"] == 0.0
        # quartiles over the epoch's batches
        assert 0 < row["train_loss_q25"] <= row["train_loss_q75"] < 10
        assert 0 <= row["train_accuracy_q25"] <= row["train_accuracy_q75"] <= 1
        assert set(row["grad_norms"]) == {
            "body.block1.conv",
            "body.block1.bn",
            "body.block2.conv",
            "body.block2.bn",
            "embedding.linear",
            "head",
        }
        assert all(v > 0 for v in row["grad_norms"].values())
    assert history[0]["lr"] > history[-1]["lr"]  # cosine schedule

    report = json.loads((trial / "classification_report.json").read_text())
    assert set(report) == {"train", "val", "test"}
    assert {str(d) for d in range(10)} <= set(report["test"])
    assert report["train"]["macro avg"]["support"] == metrics["train_size"]
    assert report["train"]["accuracy"] == pytest.approx(metrics["train_eval_accuracy"])
    # the seed reports' train-test gap: the kept model in eval mode on both splits
    assert metrics["train_test_gap"] == pytest.approx(
        report["train"]["accuracy"] - report["test"]["accuracy"], abs=1e-6
    )
    assert set(report["test"]["3"]) >= {"precision", "recall", "f1-score", "support"}

    for png in ("confusion_matrix.png", "train_val_loss.png", "train_val_accuracy.png", "grad_norms.png"):
        assert (trial / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # model.pt reloads with weights_only and reproduces the saved logits of the measured split (logging.geometry_split
    # auto: digits' training split, whose smallest class is largest; at most 1,000 per class keeps all of it)
    from geotune.trainables.data import load_data
    from geotune.trainables.models import build_model

    latents = np.load(trial / "latents.npz")
    assert metrics["geometry_split"] == str(latents["split"]) == "train"
    data = load_data(cfg.dataset)
    model = build_model(cfg.model, data.input_shape, data.num_classes)
    model.load_state_dict(torch.load(trial / "model.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        logits = model(data.normalize(data.train.images))
        embeddings = model.embed(data.normalize(data.train.images))
    assert (
        latents["embeddings"].shape == (len(data.train), cfg.model.hidden_dim)
        and len(data.train) == metrics["geometry_points"]
    )
    assert np.array_equal(latents["labels"], data.train.labels.numpy())
    assert np.allclose(latents["logits"], logits.numpy(), atol=1e-4)
    assert np.allclose(latents["embeddings"], embeddings.numpy(), atol=1e-4)
    assert (latents["logits"].argmax(1) == latents["labels"]).mean() == pytest.approx(metrics["train_eval_accuracy"])

    # preprocessing.json holds what the model needs beyond its weights
    from geotune.preprocessing_file import read_preprocessing

    prep = read_preprocessing(trial / "preprocessing.json")
    assert prep.input_shape == list(data.input_shape) and prep.channel_order == "L"
    assert prep.class_names == data.class_names and prep.output == cfg.model.output
    assert np.allclose(prep.mean, data.mean.flatten().numpy()) and np.allclose(prep.std, data.std.flatten().numpy())

    # the ONNX file takes images scaled to [0, 1] (normalisation inside) and gives PyTorch's logits
    import onnxruntime

    session = onnxruntime.InferenceSession(str(trial / "model.onnx"), providers=["CPUExecutionProvider"])
    pixels = data.test.images[:32].float() / 255.0
    with torch.no_grad():
        expected = model(data.normalize(data.test.images[:32])).numpy()
    got = session.run(None, {"images": pixels.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())
    assert np.abs(expected).max() > 0.1  # the check is not between two near-zero outputs


@pytest.mark.slow
def test_same_seed_is_bitwise_reproducible(tmp_path):
    cfg = TrialConfig.from_dict(tiny_config(dataset={"augment": True}, model={"dropout": 0.2}))
    first, second = MemorySession(), MemorySession()
    run_trial(cfg, first, tmp_path / "a", verbose=False)
    run_trial(cfg, second, tmp_path / "b", verbose=False)
    h1 = json.loads((tmp_path / "a" / "training_history.json").read_text())
    h2 = json.loads((tmp_path / "b" / "training_history.json").read_text())
    assert comparable(h1) == comparable(h2)
    assert not list((tmp_path / "a").glob("*.png")) and (tmp_path / "a" / "metrics.json").is_file()  # figures off
    w1, w2 = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # and another seed really is another run
    other = TrialConfig.from_dict(tiny_config(dataset={"augment": True}, model={"dropout": 0.2}, train={"seed": 1}))
    run_trial(other, MemorySession(), tmp_path / "c", verbose=False)
    h3 = json.loads((tmp_path / "c" / "training_history.json").read_text())
    assert comparable(h3) != comparable(h1)


@pytest.mark.slow
def test_resume_from_checkpoint_continues_the_history(tmp_path):
    cfg = TrialConfig.from_dict(
        tiny_config(dataset={"augment": True}, model={"dropout": 0.2}, train={"epochs": 5, "patience": 0})
    )
    reference = MemorySession()
    run_trial(cfg, reference, tmp_path / "ref", verbose=False)

    crashed = MemorySession(crash_after_epoch=2)
    with pytest.raises(Interrupted):
        run_trial(cfg, crashed, tmp_path / "run", verbose=False)
    assert [r["epoch"] for r in crashed.reports] == [1, 2]
    assert not (tmp_path / "run" / "metrics.json").exists()

    resumed = MemorySession(checkpoint=crashed.checkpoint)
    run_trial(cfg, resumed, tmp_path / "run", verbose=False)
    assert [r["epoch"] for r in resumed.reports] == [3, 4, 5]  # continues, does not restart
    h_ref = json.loads((tmp_path / "ref" / "training_history.json").read_text())
    h_run = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert [h["epoch"] for h in h_run] == [1, 2, 3, 4, 5]
    assert comparable(h_run) == comparable(h_ref)


def test_resume_through_ray_tune_after_a_crash(ray_session, tmp_path, capsys):
    """Tune restarts a crashed trial; the trainable restores from tune.get_checkpoint() and continues. The crash
    shows (issue 35 item 2): one retry line, failures.json in the trial folder, failures in metrics.json."""
    from ray import tune

    from geotune.study.progress import TrialRetries
    from geotune.trainables.trainable import TuneSession, tune_trial

    marker = tmp_path / "crashed-once"
    restored = tmp_path / "restored-epoch"

    def crash_once_after_epoch_2(config):
        import tempfile

        from geotune.config import TrialConfig as Config
        from geotune.trainables.trial import run_stored_trial as run

        class CrashingSession(TuneSession):
            def restore(self):
                state = super().restore()
                if state is not None:  # what the restarted trial continued from
                    restored.write_text(str(state["epoch"]))
                return state

            def report(self, metrics, state):
                super().report(metrics, state)
                if metrics["epoch"] == 2 and not marker.exists():
                    marker.write_text("crashed")
                    raise RuntimeError("simulated crash after epoch 2")

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as folder:
            run(Config.from_dict(config), CrashingSession(), Path(folder))

    config = tiny_config(dataset={"augment": True}, model={"dropout": 0.2}, train={"epochs": 5, "patience": 0})

    def fit(trainable, name, failures):
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            param_space=config,
            run_config=tune.RunConfig(
                storage_path=str(tmp_path),
                name=name,
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=failures),
                callbacks=[TrialRetries()],
            ),
        )
        result = tuner.fit()[0]
        assert result.error is None
        return Path(result.path)

    crashed_dir = fit(crash_once_after_epoch_2, "crashed", 1)
    retry_lines = [line for line in capsys.readouterr().err.splitlines() if "retrying" in line]
    reference_dir = fit(tune_trial, "reference", 0)
    assert marker.exists()

    assert len(retry_lines) == 1, retry_lines
    assert "failed on node 127." in retry_lines[0] and "after epoch 2 (RuntimeError: simulated crash" in retry_lines[0]
    assert retry_lines[0].endswith("retrying from its checkpoint of epoch 2, attempt 1 of 1")
    (failure,) = json.loads((crashed_dir / "failures.json").read_text())["failures"]
    assert failure["epoch_reached"] == 2 and failure["checkpoint_epoch"] == 2 and failure["attempt"] == 1
    crashed_metrics = json.loads((crashed_dir / "metrics.json").read_text())
    assert (crashed_metrics["failures"], crashed_metrics["epochs_retrained"]) == (1, 0)
    assert json.loads((reference_dir / "metrics.json").read_text())["failures"] == 0
    assert not (reference_dir / "failures.json").exists()

    assert restored.read_text() == "2", "the restarted trial continues from the epoch-2 checkpoint"
    reported = [json.loads(line)["epoch"] for line in (crashed_dir / "result.json").read_text().splitlines()]
    # Ray may rewrite result.json from its last experiment snapshot when it restarts a trial (seen under load:
    # [3, 4, 5]); whatever it kept, no epoch is reported twice and the run ends at epoch 5
    assert reported == sorted(set(reported)) and reported[-1] == 5 and reported[0] in (1, 3), reported
    h_crashed = json.loads((crashed_dir / "training_history.json").read_text())
    h_reference = json.loads((reference_dir / "training_history.json").read_text())
    assert comparable(h_crashed) == comparable(h_reference)


@pytest.mark.slow
def test_bf16_channels_last_trial_on_cpu(tmp_path):
    """The GPU speed switches (bf16 autocast, channels_last) also run, and learn, on the CPU."""
    cfg = TrialConfig.from_dict(tiny_config(train={"epochs": 4, "precision": "bf16", "channels_last": True}))
    metrics = run_trial(cfg, MemorySession(), tmp_path, verbose=False)
    assert metrics["val_accuracy"] >= 0.8
    latents = np.load(tmp_path / "latents.npz")
    assert latents["embeddings"].dtype == np.float32 and np.isfinite(latents["embeddings"]).all()


@pytest.mark.slow
@pytest.mark.parametrize("crash_after", [3, 1])  # mid-phase 2 (its first epoch done), and mid-phase 1
def test_two_phase_run_resumes_mid_phase_as_if_never_stopped(tmp_path, crash_after):
    """The reference recipe in small: Nadam, then SGD with exponential decay; a crash inside a phase resumes
    with that phase's optimiser and schedule and ends bit for bit where the uninterrupted run ends."""
    phases = [
        {"epochs": 2, "optimizer": "nadam", "lr": 0.003, "scheduler": "none"},
        {"epochs": 3, "optimizer": "sgd", "lr": 0.05, "scheduler": "exponential", "lr_gamma": 0.5},
    ]
    cfg = TrialConfig.from_dict(
        tiny_config(model={"dropout": 0.2}, train={"epochs": 5, "patience": 0, "phases": phases})
    )
    reference = MemorySession()
    run_trial(cfg, reference, tmp_path / "ref", verbose=False)
    h_ref = json.loads((tmp_path / "ref" / "training_history.json").read_text())
    assert [h["phase"] for h in h_ref] == [1, 1, 2, 2, 2]
    assert [h["lr"] for h in h_ref] == pytest.approx([0.003, 0.003, 0.05, 0.025, 0.0125])

    crashed = MemorySession(crash_after_epoch=crash_after)
    with pytest.raises(Interrupted):
        run_trial(cfg, crashed, tmp_path / "run", verbose=False)
    resumed = MemorySession(checkpoint=crashed.checkpoint)
    run_trial(cfg, resumed, tmp_path / "run", verbose=False)
    h_run = json.loads((tmp_path / "run" / "training_history.json").read_text())
    assert comparable(h_run) == comparable(h_ref)
    w_ref, w_run = (torch.load(tmp_path / d / "model.pt", weights_only=True) for d in ("ref", "run"))
    assert all(torch.equal(w_ref[k], w_run[k]) for k in w_ref)


def test_phases_must_add_up_to_the_epochs():
    from geotune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'train.phases' = 2 phases of 5 epochs in all: must add up to train.epochs"):
        TrialConfig.from_dict({"train": {"epochs": 4, "phases": [{"epochs": 2}, {"epochs": 3}]}})
    with pytest.raises(ConfigError, match=r"'train.phases\[1\].warmup_epochs' = 3: must be < the epochs it applies"):
        TrialConfig.from_dict(
            {
                "train": {
                    "epochs": 5,
                    "phases": [{"epochs": 2}, {"epochs": 3, "scheduler": "warmup_cosine", "warmup_epochs": 3}],
                }
            }
        )
