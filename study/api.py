"""geotune from Python: the small API a notebook uses, kept stable across releases (CHANGELOG says so).

``import geotune as gt`` reaches these names (the package re-exports them lazily):
``gt.load_study`` reads a finished or partial study (its trials as a DataFrame, the plan, the paired
effects, the report's findings, shown inline in Jupyter); ``gt.measure`` gives the numbers of
``geotune geometry`` for any embeddings; ``gt.run`` and ``gt.resume`` run a study as the CLI does and
return it loaded; ``gt.load_trained`` and ``gt.predict`` classify images with a finished trial's model.
Everything else in geotune may change between releases.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from geotune.analysis.load import StudyData
from geotune.analysis.load import load_study as load_study_data
from geotune.analysis.measure import Measurement, measure_embeddings
from geotune.analysis.report import build_report, study_effects
from geotune.errors import ConfigError
from geotune.layout import StudyPlan
from geotune.study.reporting import report_study
from geotune.trainables.predict import TrainedModel, load_trained, probabilities

__all__ = ["Measurement", "Study", "load_study", "load_trained", "measure", "predict", "resume", "run"]


@dataclass
class Study:
    """A study folder, read: ``trials`` (one row per trial: its config keys, metrics and status, as the report's
    summary.csv), ``plan`` (study.json; None for a bare Tune experiment), and, computed when first asked,
    ``effects`` (every paired effect as a DataFrame) and ``findings`` (the report's sentences)."""

    path: Path
    data: StudyData

    @property
    def trials(self) -> pd.DataFrame:
        return self.data.frame

    @property
    def plan(self) -> StudyPlan | None:
        return self.data.plan

    @functools.cached_property
    def effects(self) -> pd.DataFrame:
        """Regularized (or factor level) minus its twin of the same seed: one row per effect and metric, with the
        pairs, mean difference, 95% CI, test, p-value and Holm-adjusted p-value."""
        rows = [dataclasses.asdict(e) for e in study_effects(self.data).every_effect()]
        return pd.DataFrame(rows).rename(columns={"regularizer": "effect"})

    @functools.cached_property
    def findings(self) -> list[str]:
        return build_report(self.data).findings

    def report(self, out: str | Path | None = None) -> Path:
        """Write the report (index.html, REPORT.md, figures, summary.csv) and return index.html's path."""
        code = report_study(str(self.path), None if out is None else str(out))
        if code:
            raise RuntimeError(f"the report of '{self.path}' could not be written (see the message above)")
        folder = Path(out) if out is not None else self.path / "report"
        return folder / "index.html"

    def _repr_markdown_(self) -> str:  # Jupyter shows the findings under the cell
        head = f"**{self.path.name}**: {len(self.trials)} trials"
        return "\n\n".join([head, *(f"- {line}" for line in self.findings)])


def load_study(path: str | Path) -> Study:
    """Read a study folder (from `geotune run`, `resume`, `compare` or `train`); nothing in it runs."""
    folder = Path(path).expanduser().resolve()
    return Study(folder, load_study_data(folder))


def measure(
    embeddings: Any,
    labels: Any = None,
    *,
    class_names: list[str] | None = None,
    logits: Any = None,
    head_weight: Any = None,
    n_neighbors: int = 10,
    max_points: int = 5000,
    seed: int = 0,
) -> Measurement:
    """The latent geometry of ``embeddings`` (N x D), the same numbers as `geotune geometry` on a file holding
    them: per class with ``labels``, neural collapse with labels (NC4 with ``logits``, NC3 with a linear head's
    ``head_weight``), a seeded sample of at most ``max_points`` (classes in proportion)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 3 or x.shape[1] < 2 or not np.isfinite(x).all():
        raise ConfigError(f"embeddings must be a finite (N, D) array with N >= 3 and D >= 2, got shape {x.shape}")
    y = None if labels is None else np.asarray(labels).astype(np.int64)
    if y is not None and y.shape != (len(x),):
        raise ConfigError(f"labels must be N={len(x)} integers, got shape {y.shape}")
    return measure_embeddings(
        x,
        y,
        class_names=class_names,
        logits=None if logits is None else np.asarray(logits, dtype=np.float64),
        head_weight=None if head_weight is None else np.asarray(head_weight, dtype=np.float64),
        n_neighbors=n_neighbors,
        max_points=max_points,
        seed=seed,
    )


def run(
    space: str,
    *,
    storage: str | Path = "runs",
    name: str | None = None,
    seeds: int | None = None,
    num_samples: int | None = None,
    overrides: dict[str, Any] | None = None,
    report: bool = True,
    address: str | None = None,
) -> Study:
    """Run a named space (or a space module's path) as `geotune run` does, in this process, and return the
    study loaded; ``overrides`` are dotted keys (``{"train.epochs": 2}``). A study that does not finish
    (bad input, a failed trial, Ctrl-C) raises RuntimeError after the CLI's own message."""
    from geotune.study.cli import main  # deferred: the CLI's parser is needed only here

    name = name or f"{Path(space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    argv = ["run", str(space), "--storage", str(storage), "--name", name]
    argv += ["--seeds", str(seeds)] if seeds is not None else []
    argv += ["--num-samples", str(num_samples)] if num_samples is not None else []
    argv += ["--address", address] if address else []
    argv += [] if report else ["--no-report"]
    for key, value in (overrides or {}).items():
        argv += ["--set", f"{key}={_yaml_value(value)}"]
    code = main(argv)
    folder = Path(storage).expanduser().resolve() / name
    if code:
        raise RuntimeError(f"geotune run {space} exited with code {code} (see the message above); study: {folder}")
    return load_study(folder)


def resume(path: str | Path, *, report: bool = True, address: str | None = None) -> Study:
    """Finish an interrupted study as `geotune resume` does, in this process, and return it loaded."""
    from geotune.study.cli import main  # deferred: the CLI's parser is needed only here

    argv = ["resume", str(path)] + ([] if report else ["--no-report"]) + (["--address", address] if address else [])
    code = main(argv)
    if code:
        raise RuntimeError(f"geotune resume {path} exited with code {code} (see the message above)")
    return load_study(path)


def predict(trained: TrainedModel, images: Any) -> np.ndarray:
    """Class probabilities (N x classes; softmax or sparsemax, as the model trained) for images already at the
    model's input size: uint8 (N, C, H, W) as the training data was stored."""
    import torch  # deferred: torch costs seconds to import; load_trained has imported it already

    batch = torch.as_tensor(np.asarray(images))
    if batch.dtype != torch.uint8 or batch.ndim != 4 or list(batch.shape[1:]) != trained.preprocessing.input_shape:
        raise ConfigError(
            f"images must be uint8 (N, {', '.join(map(str, trained.preprocessing.input_shape))}), got "
            f"{batch.dtype} {list(batch.shape)}"
        )
    return probabilities(trained, batch).numpy()


def _yaml_value(value: Any) -> str:
    """A Python value as the YAML text --set reads back as the same value."""
    import yaml  # deferred: only run() with overrides needs it

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()
