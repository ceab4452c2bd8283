"""A study whose trials cannot be placed stops after a stated wait instead of waiting forever.

Ray queues a trial until some node has the CPUs and GPUs it asks for. When no node ever will (a trial wants
more than the largest node has, or the node that had them was lost), Tune would wait without end and Ray only
warns every minute. ``PendingWatch`` watches the trials between Tune's steps: once trials have waited
``timeout_s`` seconds with none running, it stops the experiment (Tune saves its state first, so `geotune resume`
continues it), and ``stuck_message`` says what was missing.
"""

from __future__ import annotations

import time

from ray import tune
from ray.tune.stopper import Stopper

from geotune.layout import StudyPlan


class PendingWatch(tune.Callback, Stopper):
    """Tune callback (it sees the trials' states after each step) and stopper (it ends the experiment)."""

    last: PendingWatch | None = None  # the watch of the study that ran last in this process (finish reads it)

    def __init__(self, timeout_s: float, clock=time.monotonic):
        self.timeout_s = timeout_s  # 0: wait forever (an autoscaling cluster that adds nodes on demand)
        self.clock = clock
        self.since: float | None = None  # when trials began waiting with none running
        self.fired = False
        PendingWatch.last = self

    def on_step_end(self, iteration, trials, **info):
        statuses = {trial.status for trial in trials}
        if self.timeout_s <= 0 or "RUNNING" in statuses or "PENDING" not in statuses:
            self.since = None
            return
        now = self.clock()
        if self.since is None:
            self.since = now
        elif now - self.since >= self.timeout_s:
            self.fired = True

    def __call__(self, trial_id, result) -> bool:
        return False  # no single trial is stopped: the whole study is, by stop_all

    def stop_all(self) -> bool:
        return self.fired

    def __getstate__(self) -> dict:  # Tune pickles its stopper with the experiment; a resume starts afresh
        return {**self.__dict__, "since": None, "fired": False, "clock": time.monotonic}


def largest_node() -> tuple[float, float, int]:
    """(CPUs, GPUs) of the alive node with the most CPUs, and how many nodes are alive."""
    import ray  # deferred: called only once a study is stuck, with Ray running

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return 0.0, 0.0, 0
    best = max(nodes, key=lambda r: (r.get("CPU", 0.0), r.get("GPU", 0.0)))
    return float(best.get("CPU", 0.0)), float(best.get("GPU", 0.0)), len(nodes)


def stuck_message(plan: StudyPlan, watch: PendingWatch, node: tuple[float, float, int]) -> str:
    """The one line of a study stopped by its watch: what a trial needs, what the cluster offers, the way on."""
    cpus, gpus, count = node
    need = f"{plan.cpus_per_trial:g} CPU(s) and {plan.gpus_per_trial:g} GPU(s)"
    if plan.cpus_per_trial > cpus or plan.gpus_per_trial > gpus:
        why = (
            f"each needs {need} on one node, and the largest of the cluster's {count} alive node(s) has {cpus:g} "
            f"CPU(s) and {gpus:g} GPU(s); lower --cpus-per-trial/--gpus-per-trial or add such a node"
        )
    else:
        why = f"each needs {need}, which a node has, but Ray placed none (resources held by another job?)"
    return (
        f"no trial could start for {watch.timeout_s:g} s (--pending-timeout): {why}; then continue with: "
        f"geotune resume {plan.study_dir}"
    )
