"""What a running study prints: a progress line, one line per finished trial, and a summary at the end."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ray import tune
from tqdm import tqdm

from geotune.analysis.tables import text_table
from geotune.errors import error_line
from geotune.layout import (
    FAILURES_FILE,
    METRICS_FILE,
    REUSED_PREFIX,
    STOPPED_FILE,
    TrialStatus,
    failure_record,
    failures_text,
    finished_status,
    recovery_in,
)
from geotune.metric_names import score_of
from geotune.storage import is_uri, read_text, write_text
from geotune.trainables.trial import epoch_line


def _number(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else "-"


def count_once(counted: set[str], trial) -> bool:
    """Adds the trial's folder to ``counted``; False where it was there already (a resume ends again a trial that
    wrote its metrics just before an interruption, before Tune saw it end)."""
    name = Path(trial.path).name if trial.path else trial.trial_id
    if name in counted:
        return False
    counted.add(name)
    return True


class TrialLines(tune.Callback):
    """Prints '[done/total] trial: metric ...' when a trial completes, stops early or fails."""

    def __init__(self, total: int, metric: str):
        self.total = total
        self.metric = metric
        self.counted: set[str] = set()  # the trial folders counted as done

    def setup(self, **info):
        # a resume counts on from the trials finished before (StudyProgress.already_done)
        self.counted = set(StudyProgress.already_done)

    def on_trial_complete(self, iteration, trials, trial, **info):
        count_once(self.counted, trial)
        r = trial.last_result or {}
        if "test_accuracy" in r:
            how = f"{r.get('stop_reason', 'completed')}, {r.get('epochs_run', r.get('epoch'))} epochs"
        else:
            stopped = trial.path and read_text(trial.path, STOPPED_FILE) is not None
            how = f"{'stopped by ASHA' if stopped else 'ended without final metrics'} after epoch {r.get('epoch')}"
        score = test_score(r)
        tqdm.write(
            f"[{len(self.counted)}/{self.total}] {Path(trial.path).name}: {self.metric} {_number(r.get(self.metric))}"
            f", {score} {_number(r.get(score))} ({how})",
            file=sys.stdout,
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        count_once(self.counted, trial)
        error = trial_error_text(trial)
        tqdm.write(
            f"[{len(self.counted)}/{self.total}] {Path(trial.path).name}: FAILED: "
            f"{error_line(error) if error else 'unknown error'}",
            file=sys.stdout,
        )


class TrialRetries(tune.Callback):
    """A trial that Tune retries after a crash (a lost node, a killed worker, an error in its code): one line
    saying where it failed and from which checkpoint it continues, and the crash recorded in its folder
    (FAILURES_FILE), which its metrics.json, the closing summary and the report count."""

    def on_trial_recover(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        saved = trial.latest_checkpoint_result
        checkpoint_epoch = (saved.metrics or {}).get("epoch") if saved is not None else None
        error = trial_error_text(trial)
        failure = {
            "attempt": trial.run_metadata.num_failures,
            "node": last.get("node_ip"),
            "epoch_reached": last.get("epoch"),
            "checkpoint_epoch": checkpoint_epoch,
            "error": error_line(error) if error else "unknown error",
        }
        try:
            failures = failure_record(read_text(trial.path, FAILURES_FILE)) + [failure]
            write_text(trial.path, FAILURES_FILE, failures_text(failures))
        except OSError as exc:  # the line below still says it; the counts in metrics.json will miss this one
            tqdm.write(f"geotune: could not record the failure in {trial.path} ({exc})", file=sys.stderr)
        tqdm.write(retry_line(Path(trial.path).name, failure, trial.max_failures), file=sys.stderr)


def retry_line(name: str, failure: dict, max_failures: int) -> str:
    node = f" on node {failure['node']}" if failure.get("node") else ""
    reached = failure.get("epoch_reached")
    when = f" after epoch {reached}" if reached else " before its first epoch"
    saved = failure.get("checkpoint_epoch")
    start = f"its checkpoint of epoch {saved}" if saved else "the start (no checkpoint yet)"
    return (
        f"geotune: trial {name} failed{node}{when} ({failure['error']}); retrying from {start}, "
        f"attempt {failure['attempt']} of {max_failures}"
    )


class StudyProgress(tune.Callback):
    """One line on stderr that keeps itself current: trials done / running / pending, elapsed time and an
    ETA (tqdm's, from the pace of the trials finished so far). Ray's table replaces it with --verbose."""

    # the folders of the trials a resumed study finished before (set by study.run before the fit): counted once,
    # also where Tune had not seen a trial's end before an interruption and ends it again
    already_done: frozenset[str] = frozenset()

    def __init__(self, total: int):
        self.total = total
        self.bar: tqdm | None = None
        self.running: set[str] = set()
        self.counted: set[str] = set()

    def setup(self, **info):
        self.counted = set(StudyProgress.already_done)
        done = min(len(self.counted), self.total)
        self.running = set()
        self.bar = tqdm(
            total=self.total,
            initial=done,
            desc="trials",
            unit="trial",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc}: {n_fmt}/{total_fmt} done |{bar:20}| {postfix} [{elapsed} elapsed, ETA {remaining}]",
        )
        self._show()

    def _show(self) -> None:
        if self.bar is not None:
            pending = max(0, self.total - self.bar.n - len(self.running))
            self.bar.set_postfix_str(f"{len(self.running)} running, {pending} pending", refresh=True)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._show()

    def _ended(self, trial) -> None:
        self.running.discard(trial.trial_id)
        if count_once(self.counted, trial) and self.bar is not None:
            self.bar.update(1)
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._ended(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)  # pending again until Tune places it (on_trial_start)
        self._show()

    def on_experiment_end(self, trials, **info):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __getstate__(self) -> dict:  # Tune pickles its callbacks with the experiment; a live bar cannot be
        return {**self.__dict__, "bar": None}


class EpochLines(tune.Callback):
    """`geotune train --ray`: the trial's epoch lines, printed by the driver as the in-process trial prints
    them (Ray's forwarded worker output would carry its prefix and colour codes)."""

    def __init__(self, epochs: int):
        self.epochs = epochs
        self.last = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        epoch = result.get("epoch")
        if not isinstance(epoch, int) or epoch <= self.last or "train_loss" not in result:
            return
        self.last = epoch
        stopped = str(result.get("stop_reason", "")).startswith("early")
        print(epoch_line(result, self.epochs, stopped), flush=True)


def finished_trials(study_dir: str) -> frozenset[str]:
    """The trial folders of a local study that hold final metrics (for the progress lines of a resume)."""
    folder = Path(study_dir)
    if not folder.is_dir():
        return frozenset()
    return frozenset(
        p.name for p in folder.iterdir() if (p / METRICS_FILE).is_file() and not p.name.startswith(REUSED_PREFIX)
    )


class TrialLedger(tune.Callback):
    """Which trials Tune started and which it ended (finished, stopped by the scheduler, or failed).

    On Ctrl-C Tune saves its state and then marks the trials it cuts short TERMINATED
    in memory, like finished ones; only its callbacks tell them apart: those trials
    were started but never completed. Tune restores callbacks from the study's
    pickled state on resume, so the ledger of the running experiment is found
    through the class attribute ``active`` rather than through the instance the caller built.
    """

    active: TrialLedger | None = None

    def __init__(self):
        self.started: set[str] = set()
        self.ended: set[str] = set()
        self.ended_dirs: set[str] = set()  # the trial folders' names, which a ResultGrid's results also give

    def setup(self, **info):
        self.started, self.ended, self.ended_dirs = set(), set(), set()
        TrialLedger.active = self

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._end(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial)

    def _end(self, trial) -> None:
        self.ended.add(trial.trial_id)
        if getattr(trial, "path", None):
            self.ended_dirs.add(Path(str(trial.path)).name)

    @property
    def cut_short(self) -> int:
        return len(self.started - self.ended)


def unfinished_count(results) -> int:
    """Trials an interruption left to resume: cut short while running, or never started.

    Ctrl-C while trials wait for resources makes Tune mark those TERMINATED too, as if they had finished;
    in a local study such a trial is told apart by geotune's own record: no metrics.json in its folder, no end
    seen by the ledger, and no stopped_by_scheduler.json (a trial ASHA stopped, in this run or an earlier one,
    gets its metrics.json only when the study is finalised)."""
    ledger = TrialLedger.active
    if ledger is None or any(is_uri(str(r.path)) for r in results):  # remote storage: Tune's statuses only
        never_started = len(results) - results.num_terminated - results.num_errors
        return never_started + (ledger.cut_short if ledger is not None else 0)
    return sum(
        1
        for r in results
        if r.error is None
        and Path(str(r.path)).name not in ledger.ended_dirs
        and not (Path(str(r.path)) / METRICS_FILE).is_file()
        and not (Path(str(r.path)) / STOPPED_FILE).is_file()
    )


def trial_error_text(trial) -> str | None:
    """The error trace of a failed trial: from the driver's staging copy (written first), else from storage."""
    local = trial.error_file
    if local and Path(local).is_file():
        return Path(local).read_text()
    return trial.get_error()


@dataclass
class TrialSummary:
    name: str
    status: TrialStatus
    epochs: int | None
    metric: float | None
    test_value: float | None  # test_score's value
    error: str | None
    path: str
    test_name: str = "test_accuracy"
    failures: int = 0  # crashes Tune retried it after (FAILURES_FILE)
    epochs_retrained: int = 0


def test_score(metrics: dict) -> str:
    """The test score a trial's line shows: the test accuracy, or its stand-in for the trial's task."""
    return score_of("test_accuracy", metrics.get("task", "classification"))


def summarize_results(results, metric: str) -> list[TrialSummary]:
    """One row per trial from Tune's ResultGrid and the trials' metrics.json files."""
    rows = []
    for result in results:
        name = Path(result.path).name
        recovery = recovery_in(read_text(result.path, FAILURES_FILE))
        if result.error is not None:
            rows.append(
                TrialSummary(
                    name,
                    TrialStatus.FAILED,
                    (result.metrics or {}).get("epoch"),
                    None,
                    None,
                    error_line(result.error),
                    result.path,
                    failures=recovery["failures"],
                    epochs_retrained=recovery["epochs_retrained"],
                )
            )
            continue
        text = read_text(result.path, METRICS_FILE)
        final = json.loads(text) if text else {}
        status = finished_status(final) if final else TrialStatus.INTERRUPTED
        rows.append(
            TrialSummary(
                name,
                status,
                final.get("epochs_run"),
                final.get(metric),
                final.get(test_score(final)),
                None,
                result.path,
                test_score(final),
                failures=recovery["failures"],
                epochs_retrained=recovery["epochs_retrained"],
            )
        )
    return rows


def summary_text(rows: list[TrialSummary], metric: str, mode: str) -> str:
    counts = Counter(row.status for row in rows)
    lines = [f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
    ok = [r for r in rows if r.metric is not None]
    if ok:
        best = (max if mode == "max" else min)(ok, key=lambda r: r.metric if r.metric is not None else math.nan)
        lines.append(
            f"best by {metric}: {best.name} ({metric} {best.metric:.4f}, {best.test_name} {_number(best.test_value)})"
        )
    recovered = [r for r in rows if r.failures and r.status is not TrialStatus.FAILED]
    if recovered:
        shown = ", ".join(
            f"{r.name} ({r.failures} failure{'s' * (r.failures > 1)}, {r.epochs_retrained} epochs retrained)"
            for r in recovered[:5]
        )
        more = f" and {len(recovered) - 5} more" if len(recovered) > 5 else ""
        lines.append(f"recovered after failures, from their checkpoints: {shown}{more}")
    failed = [r for r in rows if r.status is TrialStatus.FAILED]
    if failed:
        lines.append("failed trials:")
        lines.append(text_table(["trial", "epochs", "reason"], [(r.name, r.epochs, r.error) for r in failed]))
    return "\n".join(lines)
