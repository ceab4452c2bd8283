"""Resources of a study, decided once: the GPUs a trial gets where there are none, CPUs, Ray, devices.

The policy: a GPU share asked for where the machine or cluster has no GPU becomes
0 with a notice (trials run on CPUs); a trial whose config insists on CUDA is then
refused, with one line, before anything trains.
"""

from __future__ import annotations

import math
import os

from geotune.config import TrialConfig
from geotune.errors import ConfigError
from geotune.layout import StudyPlan
from geotune.study.cluster import RayInfo, check_storage_shared, ensure_ray, local_gpu_count, notice
from geotune.trainables.trial import check_device


def gpus_available(gpus: float, available: float, flag: str, where: str, dry_run: bool = False) -> float:
    """``gpus`` where there are GPUs; 0 with a notice naming ``flag`` where ``available`` is 0."""
    if gpus and not available:
        if dry_run:  # part of the printed plan, on stdout
            print(f"note: no GPU on {where}: trials would get 0 GPUs instead of {gpus:g}")
        else:
            notice(f"{flag} {gpus:g}: {where} has no GPU, so trials run on CPUs ({flag} set to 0)")
        return 0.0
    return gpus


def check_cpus(plan: StudyPlan, info: RayInfo, where: str) -> None:
    """A trial's CPUs must fit the Ray it runs on: a cluster, or a Ray already running in this process (a
    notebook's) may have fewer, and the trial would wait for ever."""
    if plan.cpus_per_trial > info.cpus:
        raise ConfigError(f"--cpus-per-trial {plan.cpus_per_trial:g}: {where} has only {info.cpus:g} CPUs")


def check_devices(plan: StudyPlan) -> None:
    """Trials that must run on CUDA need a GPU share: known once the resources are."""
    for config in list(plan.trial_configs().values()) or [plan.base]:  # an Optuna space: its base
        check_device(TrialConfig.from_dict(config), plan.gpus_per_trial)


def start_ray_for(plan: StudyPlan, address: str | None) -> RayInfo:
    """Join ``address`` or start a local Ray, and fit the plan's resources to what it has."""
    info = ensure_ray(address=address)
    plan.gpus_per_trial = gpus_available(plan.gpus_per_trial, info.gpus, "--gpus-per-trial", "the Ray cluster")
    check_cpus(plan, info, "the Ray cluster")
    check_devices(plan)
    if not info.started_here:
        check_storage_shared(plan.study_dir)
    return info


def dry_run_gpus(plan: StudyPlan, address: str | None) -> None:
    """`--dry-run` on this machine: show the GPU share a run would really get."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        plan.gpus_per_trial = gpus_available(
            plan.gpus_per_trial, local_gpu_count(), "--gpus-per-trial", "this machine", dry_run=True
        )


def train_resources(cpus: float | None, gpus: float | None) -> tuple[float, float]:
    """CPUs and GPUs of `geotune train`: all of this machine's CPUs and its GPU unless told otherwise."""
    cpus = cpus if cpus is not None else float(os.cpu_count() or 1)
    gpus = gpus if gpus is not None else (1.0 if local_gpu_count() else 0.0)
    if not (math.isfinite(cpus) and cpus > 0):
        raise ConfigError(f"--cpus {cpus:g}: must be a number > 0")
    if not math.isfinite(gpus) or gpus < 0:
        raise ConfigError(f"--gpus {gpus:g}: must be a number >= 0")
    return cpus, gpus_available(gpus, local_gpu_count(), "--gpus", "this machine")


def start_ray_for_train(plan: StudyPlan) -> RayInfo:
    """A local Ray sized for the one trial of `geotune train`."""
    info = ensure_ray(num_cpus=max(1, math.ceil(plan.cpus_per_trial)), num_gpus=local_gpu_count() or None)
    check_cpus(plan, info, "the Ray instance")
    plan.gpus_per_trial = gpus_available(plan.gpus_per_trial, info.gpus, "--gpus", "the Ray instance")
    check_devices(plan)
    return info
