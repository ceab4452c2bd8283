"""The Python API a notebook uses (``import geotune as gt``): the same numbers as the CLI, nothing on import."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import tiny_config
from geotune.errors import ConfigError
from synthetic import make_study

REPO = Path(__file__).parents[1]


def test_importing_geotune_loads_no_api_until_a_name_is_used():
    code = (
        "import sys, geotune as gt\n"
        "before = {m for m in ('torch', 'ray', 'pandas', 'geotune.study.api') if m in sys.modules}\n"
        "assert callable(gt.measure) and 'load_study' in dir(gt)\n"
        "print(sorted(before), 'geotune.study.api' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
    import geotune

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        geotune.nope  # noqa: B018


def test_measure_gives_the_numbers_of_geotune_geometry(tmp_path, capsys):
    import geotune as gt
    from geotune.study.cli import main

    rng = np.random.default_rng(3)
    x, labels = rng.normal(size=(400, 6)), np.arange(400) % 4
    logits = rng.normal(size=(400, 4))
    np.savez(tmp_path / "x.npz", embeddings=x, labels=labels, logits=logits)
    assert main(["geometry", str(tmp_path / "x.npz"), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)["metrics"]
    measured = gt.measure(x, labels, logits=logits)
    assert measured.n_measured == measured.n_points == 400 and measured.collapse is not None
    assert set(measured.metrics) == set(cli)
    same = {k: v for k, v in measured.metrics.items() if v is not None}
    assert same == pytest.approx({k: cli[k] for k in same}, rel=1e-12)
    sampled = gt.measure(x, labels, max_points=200)
    assert sampled.n_measured == 200 and sampled.geometry.n_points == 200
    with pytest.raises(ConfigError, match="labels must be N=400 integers"):
        gt.measure(x, labels[:10])


def test_load_study_gives_trials_effects_and_findings(tmp_path):
    import geotune as gt

    rng = np.random.default_rng(0)
    variants = [{"regularizer.name": r, "train.seed": s} for r in ("none", "geodesic") for s in range(4)]
    trials = [
        {"variant": i, "metrics": {"test_accuracy": 0.9 + (0.05 if i >= 4 else 0) + rng.normal(0, 0.01)}}
        for i in range(len(variants))
    ]
    study = gt.load_study(make_study(tmp_path / "s", variants, trials))
    assert len(study.trials) == 8 and study.plan is not None and study.plan.space == "synthetic"
    effect = study.effects.set_index(["effect", "metric"]).loc[("geodesic", "test_accuracy")]
    assert effect["n_pairs"] == 4 and effect["ci_low"] > 0  # the planted +0.05
    assert study.findings[0].startswith("**geodesic** vs no regularizer (4 pairs")
    assert study._repr_markdown_().startswith("**s**: 8 trials")
    index = study.report()
    assert index == tmp_path / "s" / "report" / "index.html" and index.is_file()


@pytest.mark.slow
def test_run_then_predict_from_python(tmp_path, ray_session):
    import torch

    import geotune as gt
    from geotune.trainables.data import load_data

    space = tmp_path / "space.py"
    space.write_text(
        "from geotune.search_spaces.space import SearchSpace\n"
        f"BASE = {tiny_config(logging={'save_umap': False, 'geometry_split': 'val'})!r}\n"
        + textwrap.dedent(
            """
            SPACE = SearchSpace(name="api", question="q", base=BASE, grid=[{"regularizer.name": ["none"]}],
                                seeds=[0])
            """
        )
    )
    study = gt.run(str(space), storage=tmp_path / "runs", name="s", overrides={"train.epochs": 2}, report=False)
    assert study.path == tmp_path / "runs" / "s" and len(study.trials) == 1
    assert study.trials["train.epochs"].tolist() == [2] and study.trials["status"].tolist() == ["completed"]
    trial = Path(study.trials["path"].iloc[0])
    trained = gt.load_trained(trial)
    data = load_data(trained_config_dataset(trial))
    probs = gt.predict(trained, data.test.images[:5].numpy())
    assert probs.shape == (5, len(data.class_names)) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    with torch.no_grad():
        expected = torch.softmax(trained.model(data.normalize(data.test.images[:5])), 1).numpy()
    assert np.allclose(probs, expected, atol=1e-5)
    with pytest.raises(RuntimeError, match="exited with code 2"):
        gt.run(str(space), storage=tmp_path / "runs", name="s")  # the folder holds results: refused


def trained_config_dataset(trial: Path):
    from geotune.config_loading import load_config

    return load_config(trial / "config.yaml").dataset
