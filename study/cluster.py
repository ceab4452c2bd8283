"""Start a private local Ray, or join an existing cluster.

A local study gets its own Ray whose node address is a loopback address other
than 127.0.0.1 (Ray rewrites exactly ``127.0.0.1``/``localhost`` to the machine's
network address, but keeps e.g. ``127.0.0.2``), with token authentication on, so
nothing it runs is usable from the network. Joining a cluster passes the token
through (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

LOOPBACK_NODE_IP = "127.0.0.2"


class ClusterError(RuntimeError):
    """Ray could not be started or joined; the message is one line for the user."""


def quiet_ray_environment() -> None:
    """Settings that must be in the environment before Ray starts (workers inherit them)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no usage reports leave the machine
    os.environ.setdefault("RAY_AUTH_MODE", "token")          # every client must present the cluster token


@dataclass
class RayInfo:
    address: str
    started_here: bool
    cpus: float
    gpus: float


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> RayInfo:
    """Connect to ``address`` (or ``RAY_ADDRESS``), reuse a running local Ray, or start a loopback one."""
    quiet_ray_environment()
    import ray

    _sync_cached_auth_mode()
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        try:
            if address:
                ray.init(address=address, _node_ip_address=_driver_ip_for(address), log_to_driver=True,
                         logging_level="WARNING")
            else:
                ray.init(_node_ip_address=LOOPBACK_NODE_IP, num_cpus=num_cpus, num_gpus=num_gpus,
                         include_dashboard=False, logging_level="WARNING", log_to_driver=True)
                started = True
        except Exception as exc:  # Ray raises many types here; all mean "no cluster for you"
            raise ClusterError(_explain_init_failure(exc, address)) from None
    resources = ray.cluster_resources()
    return RayInfo(ray.get_runtime_context().gcs_address, started, resources.get("CPU", 0.0),
                   resources.get("GPU", 0.0))


def _sync_cached_auth_mode() -> None:
    """Make Ray's cached auth mode follow RAY_AUTH_MODE when ray was imported before it was set.

    Ray reads the mode once, at import; a driver that disagrees with the nodes it
    starts cannot talk to them. Ray's own default-enabling path refreshes the cache
    the same way (private API, hence the guard).
    """
    try:
        from ray._raylet import AuthenticationMode, Config, get_authentication_mode
    except ImportError:  # pragma: no cover - older/newer Ray without token auth internals
        return
    wants_token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if wants_token != (get_authentication_mode() == AuthenticationMode.TOKEN):
        Config.initialize("")


def _driver_ip_for(address: str) -> str | None:
    """Drive from a loopback address when the cluster lives on loopback (Ray would pick the LAN address)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return LOOPBACK_NODE_IP if host.startswith("127.") else None


def _explain_init_failure(exc: Exception, address: str | None) -> str:
    text = " ".join(str(exc).split())
    if "auth" in text.lower() or "token" in text.lower() or "Unauthenticated" in type(exc).__name__:
        if not address:
            return f"cannot start a local Ray instance: authentication failed ({text[:160]})"
        return (f"cannot join the Ray cluster at {address}: authentication failed; set RAY_AUTH_MODE=token and "
                "RAY_AUTH_TOKEN (or copy the head node's ~/.ray/auth_token) to the cluster's token")
    if address:
        return f"cannot reach a Ray cluster at {address}: {type(exc).__name__}: {text[:200]}"
    return f"cannot start a local Ray instance: {type(exc).__name__}: {text[:200]}"


def shutdown_if_started(info: RayInfo | None) -> None:
    import ray

    if info is not None and info.started_here and ray.is_initialized():
        ray.shutdown()


def local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is a dependency
        return 0


def notice(message: str) -> None:
    print(f"geotune: {message}", file=sys.stderr, flush=True)
