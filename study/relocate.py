"""Resume a study from a folder other than the one it started in (a copy, or a moved folder).

Tune points the trials it restores at the folder being resumed, but restores its search algorithm as it was
pickled: the grid's trials not yet created, and Optuna's next trials, would be made in the first folder, and
Optuna's SQLite study written there (seen as a copied study whose resume changed the original). The search
algorithms below restore the same state, then point it at the folder being resumed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter, Searcher, SearchGenerator

from geotune.storage import experiment_location, fs_and_path


def relocated_storage(storage: Any, study_dir: str | Path) -> Any:
    """A copy of Ray's StorageContext ``storage`` whose experiment folder is ``study_dir`` (the same object
    when it already is); the fields Tune itself rewrites for the trials it restores."""
    parent, name = experiment_location(study_dir)
    filesystem, fs_path = fs_and_path(parent)
    if storage.storage_fs_path == fs_path and storage.experiment_dir_name == name:
        return storage
    moved = copy.copy(storage)
    moved.storage_filesystem, moved.storage_fs_path, moved.experiment_dir_name = filesystem, fs_path, name
    return moved


class RelocatedGrid(BasicVariantGenerator):
    """Tune's grid generator whose restored trials-to-come are created in ``study_dir``."""

    def __init__(self, study_dir: str | Path, max_concurrent: int = 0):
        super().__init__(max_concurrent=max_concurrent)
        self.study_dir = str(study_dir)

    def restore_from_dir(self, dirpath: str):
        study_dir = self.study_dir  # the restored state may carry the folder of an earlier resume
        super().restore_from_dir(dirpath)
        self.study_dir = study_dir
        for iterator in self._iterators:
            specs = [iterator.unresolved_spec]
            if iterator.variants is not None and not iterator.variants.lazy_eval:
                specs += [spec for _, spec in iterator.variants.iterable]  # resolved, not yet made into trials
            for spec in specs:
                if spec.get("storage") is not None:
                    spec["storage"] = relocated_storage(spec["storage"], study_dir)


class RelocatedSearch(SearchGenerator):
    """Tune's wrapper of a Searcher (Optuna) whose restored experiment creates its trials in ``study_dir``;
    a searcher with a ``relocate(study_dir)`` method moves its own storage too."""

    def __init__(self, searcher: Searcher, study_dir: str | Path):
        super().__init__(searcher)
        self.study_dir = str(study_dir)

    def restore_from_dir(self, dirpath: str):
        super().restore_from_dir(dirpath)
        experiment = self._experiment
        if experiment is not None:
            experiment.storage = relocated_storage(experiment.storage, self.study_dir)
            experiment.spec["storage"] = experiment.storage
        searcher = self.searcher
        while isinstance(searcher, ConcurrencyLimiter):
            searcher = searcher.searcher
        if hasattr(searcher, "relocate"):
            searcher.relocate(self.study_dir)


def relocate_search(tune_config: Any, study_dir: str | Path) -> None:
    """Make the restored ``tune_config`` (a Tuner.restore's) resume into ``study_dir``: its search algorithm
    is swapped for the relocating one of the same kind (state is restored into it by Tune)."""
    search_alg = tune_config.search_alg
    if search_alg is None:  # a grid: Tune would make a BasicVariantGenerator with this concurrency limit
        tune_config.search_alg = RelocatedGrid(study_dir, max_concurrent=tune_config.max_concurrent_trials or 0)
        tune_config.max_concurrent_trials = None  # now the generator's (Tune warns when both are given)
    elif isinstance(search_alg, Searcher):
        tune_config.search_alg = RelocatedSearch(search_alg, study_dir)
