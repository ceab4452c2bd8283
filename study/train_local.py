"""The one trial of `geotune train` (and its `geotune resume`), run in this process without Ray.

Ray adds nothing to a single trial but its start-up: ``ray.init`` (about 3 s), a
worker process that imports torch again, and its result boxes. Here the same
``run_stored_trial`` runs with a ``FolderSession``, which writes Tune's files into
``STUDY_DIR/trial`` itself, so the folder is the same either way and resumes the
same way (``geotune train --ray`` still goes through Ray Tune: ``study.run``).
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from geotune.config import TrialConfig
from geotune.errors import error_line
from geotune.layout import ERROR_FILE, TRAIN_TRIAL_DIR, StudyPlan
from geotune.trainables.folder_session import FolderSession
from geotune.trainables.trial import run_stored_trial


@dataclass
class TrialOutcome:
    trial_dir: Path
    metrics: dict
    error: str | None
    interrupted: bool = False  # Ctrl-C: the trial stopped mid-way and can be resumed


def local_trial_config(plan: StudyPlan) -> TrialConfig:
    """The trial's config, and this process's threads and device as a Ray worker's would be set."""
    cfg = plan.base_config()
    # As in a Ray worker: torch threads follow the CPUs given to the trial (--cpus, default all).
    torch.set_num_threads(cfg.train.num_threads or max(1, math.ceil(plan.cpus_per_trial)))
    if not plan.gpus_per_trial and cfg.train.device == "auto" and torch.cuda.is_available():
        # Ray would hide the GPU from a trial given none (--gpus 0): keep it off the GPU here too.
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device="cpu"))
    return cfg


def run_train_in_process(plan: StudyPlan, verbose: bool = True) -> TrialOutcome:
    """Run or resume (from its newest checkpoint) the one trial of ``plan`` in ``STUDY_DIR/trial``."""
    trial_dir = Path(plan.study_dir) / TRAIN_TRIAL_DIR
    trial_dir.mkdir(parents=True, exist_ok=True)
    session = FolderSession(trial_dir, plan.base)
    # The trial's torch threads are this process's only while it trains: a notebook (or a test run in one
    # process) keeps its own count for what it does next, not the trial's.
    threads = torch.get_num_threads()
    try:
        cfg = local_trial_config(plan)
        with stop_on_ctrl_c(session):
            metrics = run_stored_trial(cfg, session, trial_dir, verbose=verbose)
    except KeyboardInterrupt:
        return TrialOutcome(trial_dir, {}, None, interrupted=True)
    except Exception:
        details = traceback.format_exc()
        (trial_dir / ERROR_FILE).write_text(details)
        return TrialOutcome(trial_dir, {}, error_line(details))
    finally:
        session.close()
        torch.set_num_threads(threads)
    (trial_dir / ERROR_FILE).unlink(missing_ok=True)  # an earlier attempt's error no longer stands
    return TrialOutcome(trial_dir, metrics, None)


@contextmanager
def stop_on_ctrl_c(session: FolderSession) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt at once, as Python's own handler does, and is also remembered, so the
    session's next report stops the trial. An exception raised by a signal is lost where it lands in a
    destructor or a library's ``except BaseException`` (the suite once saw a trial ignore Ctrl-C and train to
    the end). A process started with SIGINT ignored (a background job of a script) keeps ignoring it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    if previous is not signal.default_int_handler:
        yield
        return

    def interrupt(signum, frame):
        session.interrupt_requested = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
