"""One trial from config to artifacts, independent of Ray.

``run_trial`` builds data, model and optimiser from a :class:`TrialConfig`,
restores from the session's checkpoint when there is one, trains epoch by epoch
(reporting each), and at the end evaluates on the test split and writes every
artifact into a local folder that the session then persists. The Ray trainable
(``trainables.trainable``) is a thin adapter around it; tests and the study's
finalisation of early-stopped trials use other sessions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Protocol

import torch

from geotune.analysis.latent import epoch_geometry
from geotune.analysis.segmentation import segmentation_scores
from geotune.config import TrialConfig, phase_of, precise_bn_on
from geotune.errors import ConfigError
from geotune.layout import (
    DIVERGED_FILE,
    FAILURES_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    StopReason,
    recovery_in,
)
from geotune.storage import read_text
from geotune.trainables.artifacts import collapse_of, evaluate_kept, write_trial_artifacts
from geotune.trainables.batches import Augmentation, training_batches
from geotune.trainables.data import Split, check_dataset, describe_input
from geotune.trainables.export import require_onnx
from geotune.trainables.internals import resolve_layers
from geotune.trainables.loop import (
    EarlyStopping,
    Evaluation,
    GradientNormTracker,
    KeptWeights,
    NonFiniteLossError,
    evaluate,
    recalibrate_batchnorm,
    train_one_epoch,
)
from geotune.trainables.models import build_model
from geotune.trainables.parts import build_trial, initial_weights, label_counts, load_trial_state, trial_state
from geotune.trainables.regularizers import LatentRegularizer, build_regularizer
from geotune.trainables.tasks import REGULARIZER_POINTS


class TrialSession(Protocol):
    """Where a trial reports to and checkpoints into (Ray Tune, or a plain folder)."""

    def restore(self) -> dict | None: ...

    def report(self, metrics: dict, state: dict | None) -> None: ...

    def persist(self, artifact_dir: Path) -> None: ...


class NoSession:
    """A session with nothing to resume and nowhere to report: the trial function alone (plain loops,
    benchmarks, tests); the artifacts stay in the folder given to ``run_trial``."""

    def restore(self) -> dict | None:
        return None

    def report(self, metrics: dict, state: dict | None) -> None:
        pass

    def persist(self, artifact_dir: Path) -> None:
        pass


class StoredSession(TrialSession, Protocol):
    """A session whose trial folder outlives the process: files from an earlier attempt can be read back."""

    def read_artifact(self, name: str) -> str | None: ...

    def write_artifact(self, name: str, text: str) -> None: ...


def say(line: str) -> None:
    """Print a progress line; a closed pipe (`geotune train ... | head`) must not stop the training."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")


def epoch_line(row: dict, epochs: int, stopped: bool = False) -> str:
    """The line a trial prints after an epoch, from its history row (or the metrics Tune received)."""
    return (
        f"epoch {row['epoch']:3d}/{epochs}  train_loss {row['train_loss']:.4f}  val_loss {row['val_loss']:.4f}  "
        f"val_acc {row['val_accuracy']:.4f}  "
        + (f"val_miou {row['val_miou']:.4f}  " if row.get("val_miou") is not None else "")
        + f"reg {row['reg_loss']:.4f}  {row['epoch_time']:.2f}s"
        + ("  (early stop)" if stopped else "")
    )


def check_config(cfg: TrialConfig, memo: dict | None = None) -> list[str]:
    """Catch what the schema cannot: data files and their formats, class choice, splits, model shapes.

    Cheap (no images are decoded; on-disk labels and headers are read), so it runs
    before Ray starts and a bad config fails in the terminal rather than inside a
    worker. Returns warnings about results that will be weak but not wrong.
    ``memo``: one dict shared by the checks of one plan, so that configs that share a
    data set section (or a network) read its files (or build it) once.
    """
    memo = {} if memo is None else memo
    data_key = ("dataset", json.dumps(dataclasses.asdict(cfg.dataset), sort_keys=True, default=repr))
    if data_key not in memo:
        memo[data_key] = (check_dataset(cfg.dataset), describe_input(cfg.dataset))
    data, (shape, n_classes) = memo[data_key]
    alpha = cfg.train.focal_alpha
    if alpha is not None and len(alpha) != n_classes:
        raise ConfigError(
            f"config key 'train.focal_alpha' = {alpha}: needs one weight per class; dataset '{cfg.dataset.name}' "
            f"gives {n_classes} classes"
        )
    log = cfg.logging
    network = [
        dataclasses.asdict(cfg.model),
        shape,
        n_classes,
        cfg.train.init_from,
        log.geometry_layers,
        log.activation_layer,
    ]
    model_key = ("model", json.dumps(network, sort_keys=True, default=repr))
    if model_key not in memo:
        model = build_model(cfg.model, shape, n_classes, with_weights=cfg.train.init_from is None)
        resolve_layers(model, cfg.logging.geometry_layers, "logging.geometry_layers")
        if cfg.logging.activation_layer is not None:
            resolve_layers(model, [cfg.logging.activation_layer], "logging.activation_layer")
        if cfg.train.init_from is not None:
            initial_weights(cfg.train.init_from, model)
        memo[model_key] = True
    if cfg.logging.export_onnx:
        require_onnx()
    warnings = list(data.warnings) if data is not None else []
    r = cfg.regularizer
    if r.name != "none" and r.enabled and r.weight > 0 and not r.active:
        warnings.append(
            f"regularizer.name = {r.name} with every lambda_reg 0: such a trial trains without a penalty and is "
            "reported as a baseline"
        )
    return warnings


def check_device(cfg: TrialConfig, gpus: float) -> None:
    """A trial that must run on CUDA needs a GPU share: known once the resources are."""
    if cfg.train.device == "cuda" and not gpus:
        raise ConfigError(
            "config key 'train.device' = 'cuda' but trials get no GPU (none on this machine or "
            "cluster, or --gpus-per-trial 0); use train.device auto or cpu, or give trials GPUs"
        )


def final_tune_metrics(last_epoch: dict, final: dict) -> dict:
    """The last report of a trial: its last epoch's row plus every scalar of metrics.json."""
    metrics = {k: v for k, v in last_epoch.items() if k != "grad_norms"}
    metrics.update({k: v for k, v in final.items() if isinstance(v, (int, float, str, bool))})
    return metrics


def segmentation_row(split: str, evaluation: Evaluation, class_names: list[str]) -> dict:
    """A history row's segmentation scores of one split: {split}_miou and {split}_dice."""
    assert evaluation.confusion is not None
    scores = segmentation_scores(evaluation.confusion.numpy(), class_names)
    return {f"{split}_miou": scores["miou"], f"{split}_dice": scores["mean_dice"]}


def epoch_metrics(history: list[dict], early: EarlyStopping, kept: KeptWeights) -> dict:
    """What Tune sees after each epoch: the last history row (without per-layer norms) and bests."""
    last = {k: v for k, v in history[-1].items() if k != "grad_norms"}
    best = history[early.best_epoch - 1] if early.best_epoch else history[-1]
    last.update(
        best_val_loss=best["val_loss"],
        best_val_accuracy=max(h["val_accuracy"] for h in history),
        best_epoch=early.best_epoch,
        kept_epoch=kept.epoch,
    )
    if "val_miou" in last:
        last["best_val_miou"] = max(h["val_miou"] or 0.0 for h in history)
    return last


def remembered(state: dict, regularizer: LatentRegularizer | None) -> dict:
    """The checkpoint ``state`` with the regularizer's memory, so a resumed trial continues bit for bit."""
    if regularizer is not None and regularizer.memory is not None:
        state["regularizer_memory"] = regularizer.memory.state_dict()
    return state


def run_trial(
    cfg: TrialConfig, session: TrialSession, artifact_dir: Path, *, verbose: bool = True, recovery: dict | None = None
) -> dict:
    """Train and evaluate one trial; returns the final metrics (also written to metrics.json)."""
    start = time.perf_counter()
    parts = build_trial(cfg)
    generator = torch.Generator(device=parts.device).manual_seed(cfg.train.seed)
    early = EarlyStopping(cfg.train.patience)
    kept = KeptWeights(cfg.train.keep, cfg.train.keep_by)
    if parts.task.segmentation:  # the regularizer sees a balanced sample of latent points per step
        points_per_step, class_sizes = REGULARIZER_POINTS, [1] * parts.data.num_classes
    else:
        points_per_step, class_sizes = cfg.train.batch_size, label_counts(parts.data).tolist()
    regularizer = build_regularizer(
        cfg.regularizer, parts.data.num_classes, points_per_step, class_sizes, keyed=not parts.task.segmentation
    )
    grad_tracker = GradientNormTracker(parts.model)
    augmentation = Augmentation.from_config(cfg.dataset)
    history: list[dict] = []
    first_epoch, step, stopped, elapsed_before = 1, 0, False, 0.0

    state = session.restore()
    if state is not None:
        load_trial_state(cfg, parts, generator, state, early, kept)
        if regularizer is not None and regularizer.memory is not None and "regularizer_memory" in state:
            regularizer.memory.load_state_dict(state["regularizer_memory"], parts.device)
        history, step, stopped = list(state["history"]), state["step"], state["stopped"]
        first_epoch, elapsed_before = state["epoch"] + 1, state["elapsed"]
        if verbose:
            say(f"resuming from the checkpoint of epoch {state['epoch']}")

    steps_per_epoch = max(1, len(parts.data.train) // cfg.train.batch_size)

    def evaluate_split(split: Split) -> Evaluation:
        precision, channels_last = cfg.train.precision, cfg.train.channels_last
        return evaluate(
            parts.model,
            parts.criterion,
            parts.data,
            split,
            precision=precision,
            channels_last=channels_last,
            task=parts.task,
            seed=cfg.train.seed,
        )

    precise_bn = precise_bn_on(cfg)
    epoch = first_epoch - 1
    for epoch in range(first_epoch, cfg.train.epochs + 1 if not stopped else first_epoch):
        if phase_of(cfg.train, epoch) != parts.phase:
            parts.start_phase(cfg, phase_of(cfg.train, epoch))
            if verbose:
                say(f"phase {parts.phase + 1} of {len(cfg.train.phases or [])} from epoch {epoch}")
        lr = parts.optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        batches = training_batches(
            parts.data, cfg.train.batch_size, generator, augmentation, with_samples=regularizer is not None
        )
        stats = train_one_epoch(
            parts.model,
            parts.criterion,
            parts.optimizer,
            batches,
            epoch,
            regularizer=regularizer,
            grad_tracker=grad_tracker,
            precision=cfg.train.precision,
            channels_last=cfg.train.channels_last,
            step_offset=step,
            task=parts.task,
        )
        train_time = time.perf_counter() - t0
        step += steps_per_epoch
        if precise_bn:
            recalibrate_batchnorm(
                parts.model,
                parts.data.train.images,
                parts.data.normalize,
                cfg.train.batch_size,
                cfg.train.channels_last,
            )
        val = evaluate_split(parts.data.val)
        if isinstance(parts.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            parts.scheduler.step(val.loss)
        elif parts.scheduler is not None:
            parts.scheduler.step()
        row = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "train_accuracy": stats.accuracy,
            "val_loss": val.loss,
            "val_accuracy": val.accuracy,
            "reg_loss": stats.reg_loss,
            "lr": lr,
            "epoch_time": time.perf_counter() - t0,
            "train_time": train_time,
        }
        if parts.task.segmentation:
            row.update(segmentation_row("val", val, parts.data.class_names))
        else:  # neural collapse of the validation features every epoch: milliseconds (BENCHMARKS.md)
            row.update(collapse_of(val, parts.model, prefix="val_"))
        if cfg.train.phases:
            row["phase"] = parts.phase + 1
        row.update(
            train_loss_q25=stats.loss_quartiles[0],
            train_loss_q75=stats.loss_quartiles[1],
            train_accuracy_q25=stats.accuracy_quartiles[0],
            train_accuracy_q75=stats.accuracy_quartiles[1],
        )
        if cfg.logging.test_every_epoch:
            test = evaluate_split(parts.data.test)
            row.update(test_loss=test.loss, test_accuracy=test.accuracy)
            if parts.task.segmentation:
                row.update(segmentation_row("test", test, parts.data.class_names))
        row.update({f"reg_{k}": v for k, v in stats.reg_stats.items()})
        every = cfg.logging.embedding_metrics_every
        if every and epoch % every == 0 and epoch != cfg.train.epochs:
            row.update(
                epoch_geometry(
                    val.embeddings.numpy(), val.labels.numpy(), cfg.logging.metrics_n_neighbors, seed=cfg.train.seed
                )
            )
        row["grad_norms"] = stats.grad_norms
        history.append(row)
        kept.update(row, parts.model)
        # Patience running out on the last epoch is not an early stop: the run was complete anyway.
        stopped = early.step(val.loss, epoch) and epoch < cfg.train.epochs
        finished = stopped or epoch == cfg.train.epochs
        elapsed = elapsed_before + time.perf_counter() - start
        metrics = epoch_metrics(history, early, kept)
        if verbose:
            say(epoch_line(row, cfg.train.epochs, stopped))
        if finished:
            break
        session.report(
            metrics,
            remembered(trial_state(parts, generator, epoch, step, history, early, kept, stopped, elapsed), regularizer)
            if cfg.logging.save_checkpoint
            else None,
        )

    # The last report comes after the artifacts are persisted, so a finished trial always has them.
    elapsed = elapsed_before + time.perf_counter() - start
    model, evaluations = evaluate_kept(cfg, parts, kept)
    final = write_trial_artifacts(
        artifact_dir,
        cfg,
        parts,
        history,
        early,
        kept,
        StopReason.PATIENCE if stopped else StopReason.COMPLETED,
        elapsed,
        model,
        evaluations,
        recovery,
    )
    session.persist(artifact_dir)
    metrics = final_tune_metrics(epoch_metrics(history, early, kept) if history else {}, final)
    session.report(
        metrics,
        remembered(trial_state(parts, generator, epoch, step, history, early, kept, True, elapsed), regularizer)
        if cfg.logging.save_checkpoint
        else None,
    )
    return final


def run_stored_trial(cfg: TrialConfig, session: StoredSession, artifact_dir: Path, *, verbose: bool = True) -> dict:
    """``run_trial`` for a trial that may have been attempted before (Ray's restart, `geotune resume`).

    A trial that already finished reports its final metrics again instead of training
    a second time (its session's saved state can lag behind the trial); one whose loss
    became non-finite fails again at once, since retrying a deterministic divergence
    would diverge again.
    """
    finished = session.read_artifact(METRICS_FILE)
    if finished is not None:
        final = json.loads(finished)
        history = json.loads(session.read_artifact(HISTORY_FILE) or "[]")
        session.report(final_tune_metrics(history[-1] if history else {}, final), None)
        return final
    diverged = session.read_artifact(DIVERGED_FILE)
    if diverged is not None:
        raise NonFiniteLossError(diverged)
    # the crashes Tune retried this trial after, as the driver recorded them (metrics.json counts them)
    recovery = recovery_in(session.read_artifact(FAILURES_FILE))
    try:
        return run_trial(cfg, session, artifact_dir, verbose=verbose, recovery=recovery)
    except NonFiniteLossError as exc:
        session.write_artifact(DIVERGED_FILE, str(exc))
        raise


def finalize_trial(cfg: TrialConfig, state: dict, artifact_dir: Path) -> dict:
    """Write the artifacts of a trial stopped from outside (e.g. by ASHA) from its last checkpoint."""
    parts = build_trial(cfg)
    generator = torch.Generator(device=parts.device)
    early = EarlyStopping(cfg.train.patience)
    kept = KeptWeights(cfg.train.keep, cfg.train.keep_by)
    load_trial_state(cfg, parts, generator, state, early, kept)
    model, evaluations = evaluate_kept(cfg, parts, kept)
    return write_trial_artifacts(
        artifact_dir,
        cfg,
        parts,
        list(state["history"]),
        early,
        kept,
        StopReason.SCHEDULER,
        state["elapsed"],
        model,
        evaluations,
        recovery_in(read_text(str(artifact_dir), FAILURES_FILE)),
    )
