"""Regularized trials end to end, their geometry artifacts, and `geotune geometry`."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_trial import MemorySession

from conftest import tiny_config
from geotune.config import TrialConfig
from geotune.trainables.trial import run_trial

REPO = Path(__file__).parents[1]


@pytest.mark.parametrize(
    "name, target", [("geodesic", "fixed"), ("geodesic", "flat"), ("geometry", "flat"), ("combined", "fixed")]
)
@pytest.mark.slow
def test_digits_trial_with_each_regularizer(tmp_path, name, target):
    cfg = TrialConfig.from_dict(
        tiny_config(
            train={"epochs": 8, "batch_size": 128},
            regularizer={
                "name": name,
                "geodesic": {"n_neighbors": 5, "lambda_reg": 0.5, "start_epoch": 2, "target": target},
            },
            logging={"embedding_metrics_every": 4, "geometry_split": "auto", "figures": True},
        )
    )
    session = MemorySession()
    metrics = run_trial(cfg, session, tmp_path, verbose=False)
    assert metrics["val_accuracy"] >= 0.85 and metrics["regularized"] is True

    history = json.loads((tmp_path / "training_history.json").read_text())
    if name == "geodesic" and target == "flat":
        # about 13 digits per class in a batch, too few to see a bend; the memory (256 a class, the default) holds
        # the whole class: it fills in the geodesic term's first epoch (2) and pulls on every step from epoch 3
        assert "reg_geodesic_ratio" not in history[-1] and history[-1]["reg_geodesic_memory_pairs"] > 0
        assert all(0.0 <= row["reg_geodesic_bent_fraction"] <= 1.0 for row in history[1:])
        assert history[1]["reg_loss"] == 0.0
        assert all(row["reg_loss"] > 0 and row["reg_geodesic_acting"] == 1.0 for row in history[2:])
    else:
        assert all(row["reg_loss"] > 0 for row in history[1:])
    if name in ("geodesic", "combined") and target == "fixed":
        assert "reg_geodesic_ratio" not in history[0]  # the geodesic term starts at epoch 2
        assert all(row["reg_geodesic_ratio"] >= 1.0 for row in history[1:])
        assert all(row["reg_geodesic_pairs"] > 0 for row in history[1:])
    if name == "geodesic":
        assert history[0]["reg_loss"] == 0.0
    if name in ("geometry", "combined"):
        assert history[0]["reg_loss"] > 0
        assert all("reg_geometry_dim_estimate" in row for row in history)
    for key in (
        "geodesic_ratio_mean",
        "flatness_calibrated",
        "flatness_calibrated_per_class",
        "participation_ratio_per_class",
    ):
        assert key in history[3], key  # every 4 epochs
    assert "geodesic_ratio_mean" not in history[2]
    assert session.reports[-1]["reg_loss"] == pytest.approx(history[-1]["reg_loss"])  # reported to Tune too

    geometry = json.loads((tmp_path / "geometry_summary.json").read_text())
    geodesic = json.loads((tmp_path / "geodesic_summary.json").read_text())
    assert geometry["n_points"] == metrics["geometry_points"] == metrics["train_size"]  # auto: the training split
    assert metrics["geometry_split"] == "train" and len(geometry["per_class"]) == 10
    assert geodesic["overall"]["mean"] == pytest.approx(metrics["geodesic_ratio_mean"])
    assert geodesic["overall"]["flatness"]["calibrated"] == pytest.approx(metrics["flatness_calibrated"])
    assert geodesic["overall"]["flatness"]["reference"] == pytest.approx(metrics["flatness_reference"])
    assert set(geodesic["per_class"]) == {str(d) for d in range(10)}
    for key in (
        "geodesic_ratio_mean",
        "flatness_calibrated",
        "flatness_reference",
        "flatness_calibrated_per_class",
        "flatness_resolved_per_class",
        "participation_ratio_per_class",
        "top_pc_share_per_class",
        "class_size_median",
        "intrinsic_dim_twonn",
        "intrinsic_dim_mle",
        "silhouette",
        "linear_separability",
        "knn_accuracy",
        "pca_dims_90",
        "trustworthiness",
    ):
        assert metrics[key] is not None, key
    assert (tmp_path / "umap.png").is_file()


def test_regularized_trial_through_ray_with_umap_and_scatter(ray_session, tmp_path):
    from geotune.study.cli import main

    config = tmp_path / "c.yaml"
    import yaml

    config.write_text(
        yaml.safe_dump(
            tiny_config(
                train={"epochs": 4, "batch_size": 128},
                regularizer={"name": "combined", "geodesic": {"n_neighbors": 5}},
                logging={"save_umap": True, "interactive_scatter": True, "figures": True},
            )
        )
    )
    assert main(["train", str(config), str(tmp_path / "out"), "--cpus-per-trial", "1"]) == 0
    trial = tmp_path / "out" / "trial"
    for name in ("geometry_summary.json", "geodesic_summary.json", "umap.png", "latent_scatter.html"):
        assert (trial / name).is_file(), name
    summary = json.loads((trial / "geometry_summary.json").read_text())
    assert summary["projection"] == "umap" and 0.5 < summary["trustworthiness"] <= 1.0
    page = (trial / "latent_scatter.html").read_text()
    assert page.count("<circle") == summary["n_points"] and "<script>" in page and "http" not in page


def write_latents(path: Path, with_labels: bool = True) -> None:
    from sklearn.datasets import make_swiss_roll

    roll = make_swiss_roll(700, random_state=0)[0]  # 700 points: a roll this size is resolved (300 read 1.13)
    blob = np.random.default_rng(0).standard_normal((300, 3)) + 40
    arrays = {"embeddings": np.vstack([roll, blob])}
    if with_labels:
        arrays.update(labels=np.repeat([0, 1], [700, 300]), class_names=np.array(["roll", "blob"]))
    np.savez(path, **arrays)


def test_geometry_cli_text_and_json(tmp_path, cli):
    path = tmp_path / "latents.npz"
    write_latents(path)
    text = cli("geometry", str(path), "--n-neighbors", "8")
    assert text.returncode == 0, text.stderr
    assert "1000 embeddings of dimension 3, k = 8" in text.stdout
    for key in (
        "flatness_calibrated_per_class",
        "participation_ratio_per_class",
        "top_pc_share_per_class",
        "flatness_calibrated",
        "roll",
        "blob",
    ):
        assert key in text.stdout, key
    js = cli("geometry", str(path), "--json")
    data = json.loads(js.stdout)
    assert data["metrics"]["geodesic_components"] == 2
    per_class = data["summary"]["per_class"]
    assert per_class["roll"]["flatness_calibrated"] > 1.2 and abs(per_class["blob"]["flatness_calibrated"] - 1) < 0.03
    assert data["metrics"]["participation_ratio_per_class"] == pytest.approx(
        (per_class["roll"]["participation_ratio"] + per_class["blob"]["participation_ratio"]) / 2
    )
    assert data["metrics"]["linear_separability"] == pytest.approx(1.0)


def test_geometry_cli_without_labels(tmp_path, cli):
    path = tmp_path / "latents.npz"
    write_latents(path, with_labels=False)
    data = json.loads(cli("geometry", str(path), "--json").stdout)
    assert data["metrics"]["silhouette"] is None and data["metrics"]["geodesic_ratio_mean"] > 1.0


@pytest.mark.parametrize(
    "arrays, fragment",
    [
        (None, "does not exist"),
        ({"z": np.zeros((5, 2))}, "has no array 'embeddings' (it has: z)"),
        ({"embeddings": np.zeros(5)}, "(N, D) array"),
        ({"embeddings": np.ones((5, 2)), "labels": np.zeros(4, dtype=int)}, "'labels' must be N=5 integers"),
        ({"embeddings": np.full((5, 2), np.nan)}, "NaN"),
    ],
)
def test_geometry_cli_bad_input(tmp_path, arrays, fragment, cli):
    path = tmp_path / "latents.npz"
    if arrays is not None:
        np.savez(path, **arrays)
    proc = cli("geometry", str(path))
    assert proc.returncode == 2
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_geometry_cli_reads_neural_collapse_from_a_trial_folder(tmp_path, cli):
    """Features on a simplex ETF (4 classes, no spread), logits of a head whose rows are the class means: every
    NC measure 0; a latents file alone gives no NC3; logits of the wrong shape are refused, named."""
    import torch
    from test_collapse import simplex_etf

    means = simplex_etf(4, 16, seed=1)
    labels = np.repeat(np.arange(4), 10)
    x = means[labels] + 0.5
    head = 3.0 * means
    folder = tmp_path / "trial"
    folder.mkdir()
    np.savez(folder / "latents.npz", embeddings=x, labels=labels, logits=x @ head.T)
    torch.save({"head.weight": torch.tensor(head, dtype=torch.float32)}, folder / "model.pt")
    data = json.loads(cli("geometry", str(folder), "--json").stdout)
    for key in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3_self_duality", "nc4_ncc_mismatch"):
        assert data["metrics"][key] == pytest.approx(0.0, abs=1e-6), key
    alone = json.loads(cli("geometry", str(folder / "latents.npz"), "--json").stdout)
    assert alone["neural_collapse"]["nc3_self_duality"] is None and alone["metrics"]["nc4_ncc_mismatch"] == 0.0
    text = cli("geometry", str(folder)).stdout
    assert "neural collapse of 4 classes" in text and "nc3_self_duality" in text
    (folder / "model.pt").write_bytes(b"not weights")
    damaged = cli("geometry", str(folder))
    assert damaged.returncode == 2 and "model.pt' is not a readable weights file" in damaged.stderr
    np.savez(tmp_path / "bad.npz", embeddings=x, labels=labels, logits=np.zeros((3, 4)))
    bad = cli("geometry", str(tmp_path / "bad.npz"))
    assert bad.returncode == 2 and "'logits' must be finite real numbers of shape (N=40, classes)" in bad.stderr
