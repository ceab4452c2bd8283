"""A study resumed from a copy: the restored search algorithms create their trials, and write Optuna's study,
in the copy only (study/relocate.py). The whole path, killed study and all, is tests/test_resume.py's
copied-study test; these check each search algorithm's restore on its own, in a fraction of a second."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import optuna
from ray import tune
from ray.tune.experiment import Experiment
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, SearchGenerator

from geotune.layout import optuna_url
from geotune.study.optuna_search import AttributedOptunaSearch
from geotune.study.relocate import RelocatedGrid, RelocatedSearch, relocate_search


def noop_trainable(config):
    return None


def experiment(study_dir: Path, config: dict | None = None, num_samples: int = 1) -> Experiment:
    return Experiment(
        study_dir.name, noop_trainable, config=config or {}, num_samples=num_samples, storage_path=str(study_dir.parent)
    )


def digests(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with a hash of its bytes (what any write would change)."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_a_restored_grid_makes_its_remaining_trials_in_the_copy(tmp_path):
    original, copy = tmp_path / "runs" / "s", tmp_path / "elsewhere" / "s"
    grid = BasicVariantGenerator(max_concurrent=1)
    grid.add_configurations([experiment(original, {"x": tune.grid_search([1, 2, 3])})])
    first = grid.next_trial()
    assert Path(first.storage.experiment_fs_path) == original
    state = tmp_path / "state"
    state.mkdir()
    grid.save_to_dir(str(state), session_str="t")

    restored = RelocatedGrid(copy, max_concurrent=1)
    restored.restore_from_dir(str(state))
    made = []
    for done in (first, None):
        restored.on_trial_complete((done or made[-1]).trial_id)
        made.append(restored.next_trial())
    assert [t.config["x"] for t in made] == [2, 3], "the restore started the grid over"
    assert {Path(t.storage.experiment_fs_path) for t in made} == {copy}
    assert restored.next_trial() is None


def test_relocate_search_keeps_the_grid_s_concurrency_limit(tmp_path):
    config = tune.TuneConfig(max_concurrent_trials=2)
    relocate_search(config, tmp_path / "s")
    assert isinstance(config.search_alg, RelocatedGrid)
    assert config.search_alg.max_concurrent == 2 and config.max_concurrent_trials is None


def sample_x(trial) -> dict:
    return {"x": trial.suggest_float("x", 0, 1)}


def optuna_search(study_dir: Path) -> ConcurrencyLimiter:
    storage = optuna.storages.RDBStorage(optuna_url(study_dir))
    optuna.create_study(study_name="s", storage=storage, direction="maximize", load_if_exists=True)
    searcher = AttributedOptunaSearch(
        space=sample_x,
        metric="val_accuracy",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
        study_name="s",
        storage=storage,
    )
    return ConcurrencyLimiter(searcher, max_concurrent=2)


def test_a_restored_optuna_search_writes_only_into_the_copy(tmp_path):
    original, copy = tmp_path / "runs" / "s", tmp_path / "elsewhere" / "s"
    original.mkdir(parents=True)
    search = SearchGenerator(optuna_search(original))
    search.add_configurations([experiment(original, num_samples=3)])
    running = search.next_trial()
    search.on_trial_result(running.trial_id, {"val_accuracy": 0.5, "training_iteration": 1})
    state = tmp_path / "state"
    state.mkdir()
    search.save_to_dir(str(state), session_str="t")  # Tune's state at the interruption
    shutil.copytree(original, copy)
    before = digests(original)

    # What Tuner.restore hands a resume: the search algorithm pickled when the study started (first folder).
    restored = RelocatedSearch(optuna_search(original), copy)
    restored.restore_from_dir(str(state))
    restored.on_trial_result(running.trial_id, {"val_accuracy": 0.6, "training_iteration": 2})
    restored.on_trial_complete(running.trial_id, {"val_accuracy": 0.7, "test_accuracy": 0.65})
    new = restored.next_trial()

    assert Path(new.storage.experiment_fs_path) == copy
    assert digests(original) == before, "the original study's files were written to"
    trials = optuna.load_study(study_name="s", storage=optuna_url(copy)).trials
    assert len(trials) == 2 and trials[0].value == 0.7
    assert trials[0].intermediate_values == {1: 0.5, 2: 0.6}
    assert trials[0].user_attrs["test_accuracy"] == 0.65
