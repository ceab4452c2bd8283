"""Start a private local Ray, or join an existing cluster.

A local study gets its own Ray whose node address is a loopback address other
than 127.0.0.1 (Ray rewrites exactly ``127.0.0.1``/``localhost`` to the machine's
network address, but keeps e.g. ``127.0.0.2``), with token authentication on, so
nothing it runs is usable from the network. Joining a cluster passes the token
through (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from geotune.errors import ConfigError

# --pending-timeout: how long a study's trials may wait with none running (no node has what a trial needs) before
# it stops, resumably (study.placement); long enough for a cluster to add a node, short of forever
DEFAULT_PENDING_TIMEOUT_S = 600.0
LOOPBACK_NODE_IP = "127.0.0.2"


class ClusterError(RuntimeError):
    """Ray could not be started or joined; the message is one line for the user."""


# glibc hands out allocations above its mmap threshold as fresh, zeroed pages and unmaps them on free:
# for CPU training, whose activations are a few MB, that is page faults on every step. Keeping them
# on the heap made a simple_cnn epoch 6-20% faster here (benchmarks/data_pipeline.py, BENCHMARKS.md).
# glibc reads these once, at process start: they must be set before Ray starts its workers.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20)}


def quiet_ray_environment() -> None:
    """Settings that must be in the environment before Ray starts (workers inherit them)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports leave the machine
    os.environ.setdefault("RAY_AUTH_MODE", "token")  # every client must present the cluster token
    for key, value in WORKER_MALLOC_ENV.items():
        os.environ.setdefault(key, value)


@dataclass
class RayInfo:
    address: str
    started_here: bool
    cpus: float
    gpus: float


def ensure_ray(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None) -> RayInfo:
    """Connect to ``address`` (or ``RAY_ADDRESS``), reuse a running local Ray, or start a loopback one."""
    quiet_ray_environment()
    import ray  # deferred: Ray reads RAY_AUTH_MODE when first imported, so the environment is set first

    _sync_cached_auth_mode()
    started = False
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address:
            check_reachable(address)
            check_token(address)
        try:
            if address:
                with captured_stderr() as captured:
                    try:
                        ray.init(
                            address=address,
                            _node_ip_address=_driver_ip_for(address),
                            log_to_driver=True,
                            logging_level=logging.WARNING,
                        )
                    except Exception as exc:
                        raise ClusterError(_explain_init_failure(exc, address, captured())) from None
            else:
                ray.init(
                    _node_ip_address=LOOPBACK_NODE_IP,
                    num_cpus=num_cpus,
                    num_gpus=num_gpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=True,
                    # Ray starts two idle workers for the first driver; Tune's trials never use them (its actors
                    # carry an environment of their own, so each gets a worker started for it): 0.8 CPU-s of
                    # imports beside the study's start, for nothing (Ray 2.60's name, pinned in pyproject)
                    _system_config={"prestart_worker_first_driver": False},
                )
                started = True
        except ClusterError:
            raise
        except Exception as exc:  # Ray raises many types here; all mean "no cluster for you"
            raise ClusterError(_explain_init_failure(exc, address)) from None
    resources = ray.cluster_resources()
    return RayInfo(ray.get_runtime_context().gcs_address, started, resources.get("CPU", 0.0), resources.get("GPU", 0.0))


JOIN_TIMEOUT_S = 10.0  # how long to wait for a cluster's port to answer before saying so


def check_reachable(address: str, timeout: float = JOIN_TIMEOUT_S) -> None:
    """Fail in seconds, with one line, where nothing listens at host:port (Ray itself retries for minutes)."""
    target = address.split("://")[-1]
    if target == "auto" or ":" not in target:
        return  # Ray finds the address itself
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except ValueError:
        raise ConfigError(f"--address {address}: expected host:port") from None
    except OSError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster answered within {timeout:g} s "
            f"({exc.strerror or type(exc).__name__}); is the head node running?"
        ) from None


TOKEN_CHECK_S = 3.0  # how long the token check waits for the cluster's answer (it comes in milliseconds)


def check_token(address: str, timeout: float = TOKEN_CHECK_S) -> None:
    """Fail at once, in one line, where the cluster refuses this process's token: Ray's own join retries for
    about 20 s (RAY_NUM_REDIS_GET_RETRIES x 1 s) before it says so. A client of the cluster's GCS asks for the
    cluster's id, which the GCS gives only to its token. In a thread (the call releases the GIL), since where
    the address answers but is not a GCS the same call waits 40 s: after ``timeout`` the join goes on, and Ray's
    own error says what is wrong. Anything but a refused token is left to the join."""
    if "://" in address or ":" not in address:
        return  # Ray Client's protocol, or "auto": Ray finds and checks it itself
    raylet = importlib.import_module("ray._raylet")  # Ray's private API: every name is looked up with a guard
    client = getattr(raylet, "GcsClient", None)
    if client is None:  # pragma: no cover - a Ray without it
        return
    refused: list[Exception] = []

    def ask() -> None:
        try:
            client(address=address)
        except Exception as exc:
            if _is_auth_failure(exc):
                refused.append(exc)

    with captured_stderr():  # Ray's C++ core logs the refusal too: the one line below says it
        probe = threading.Thread(target=ask, name="geotune-token-check", daemon=True)
        probe.start()
        probe.join(timeout)
        if refused:
            raise ClusterError(_explain_init_failure(refused[0], address))


def _sync_cached_auth_mode() -> None:
    """Make Ray's cached auth mode follow RAY_AUTH_MODE when ray was imported before it was set.

    Ray reads the mode once, at import; a driver that disagrees with the nodes it
    starts cannot talk to them. Ray's own default-enabling path refreshes the cache
    the same way (private API, hence the guard).
    """
    raylet = importlib.import_module("ray._raylet")  # Ray's private API: every name is looked up with a guard
    mode, config = getattr(raylet, "get_authentication_mode", None), getattr(raylet, "Config", None)
    token = getattr(getattr(raylet, "AuthenticationMode", None), "TOKEN", None)
    if mode is None or config is None or token is None:  # pragma: no cover - a Ray without token auth internals
        return
    wants_token = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    if wants_token != (mode() == token):
        config.initialize("")


def _driver_ip_for(address: str) -> str | None:
    """Drive from a loopback address when the cluster lives on loopback (Ray would pick the LAN address)."""
    host = address.split("://")[-1].rsplit(":", 1)[0]
    return LOOPBACK_NODE_IP if host.startswith("127.") else None


@contextlib.contextmanager
def captured_stderr():
    """Collect what Ray's C++ core writes to file descriptor 2 (one warning a second while it retries).

    Yields a function returning the text so far. On success the text is replayed to
    the real stderr; on failure the caller turns it into one line.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        failed = False

        def text() -> str:
            sink.flush()
            sink.seek(0)
            return sink.read().decode(errors="replace")

        try:
            yield text
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                sys.stderr.write(text())


def _is_auth_failure(exc: Exception, stderr_text: str = "") -> bool:
    """Whether Ray refused this process's token (the words of Ray 2.5x-2.60's errors and its C++ core's log)."""
    text = " ".join(str(exc).split())
    auth_words = ("InvalidAuthToken", "Unauthenticated", "AuthenticationError", "authentication token")
    return any(word in text or word in stderr_text or word in type(exc).__name__ for word in auth_words)


def _explain_init_failure(exc: Exception, address: str | None, stderr_text: str = "") -> str:
    text = " ".join(str(exc).split())
    if _is_auth_failure(exc, stderr_text):
        if not address:
            return f"cannot start a local Ray instance: authentication failed ({text[:160]})"
        return (
            f"cannot join the Ray cluster at {address}: authentication failed; set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or copy the head node's ~/.ray/auth_token) to the cluster's token"
        )
    if address:
        return f"cannot reach a Ray cluster at {address}: {type(exc).__name__}: {text[:200]}"
    return f"cannot start a local Ray instance: {type(exc).__name__}: {text[:200]}"


def shutdown_if_started(info: RayInfo | None) -> None:
    """Stop the Ray this process started. A second Ctrl-C must not cut the shutdown in half (that left
    Ray's exit handlers failing and the exit code 1 instead of 130): SIGINT waits until it is done."""
    import ray  # deferred: see ensure_ray

    if info is None or not info.started_here or not ray.is_initialized():
        return
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        ray.shutdown()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def local_gpu_count() -> int:
    try:
        import torch  # deferred: torch takes 1.8 s to import; only the GPU question needs it

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch is a dependency
        return 0


def notice(message: str) -> None:
    print(f"geotune: {message}", file=sys.stderr, flush=True)


def check_storage_shared(study_dir: str) -> None:
    """On a cluster, every node must be able to write the study directory: check each alive node.

    Object-store URIs are reachable by construction; a local path must be a shared
    file system (Ray Tune needs it for checkpoints since Ray 2.7).
    """
    if "://" in study_dir:
        return
    folder = Path(study_dir)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / ".geotune_storage_check"
    token = os.urandom(8).hex()
    marker.write_text(token)
    try:
        missing = [ip for ip, ok in probe_nodes(str(marker), token) if not ok]
    finally:
        marker.unlink(missing_ok=True)
    if missing:
        raise ClusterError(
            f"storage '{study_dir}' is not visible from Ray node(s) {', '.join(missing)}: use a "
            "folder on a file system shared by every node, or an object-store URI (s3://, gs://)"
        )


def probe_nodes(marker: str, token: str) -> list[tuple[str, bool]]:
    """(node address, whether it reads ``token`` from ``marker``) for every alive node of the cluster but the
    driver's own: its workers share this process's file system, which just wrote the marker. Asking it too
    would cost each study on a one-node Ray a worker's start (Ray stops the idle worker a study's trials leave
    beyond its CPUs, so the next study's probe started one anew: 0.6-1 CPU-s and about a second)."""
    import ray  # deferred: see ensure_ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def reads_marker(path: str, expected: str) -> bool:
        try:
            with open(path) as fh:
                return fh.read() == expected
        except OSError:
            return False

    own = ray.get_runtime_context().get_node_id()
    nodes = [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] != own]
    refs = [
        reads_marker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            marker, token
        )
        for n in nodes
    ]
    return [(n["NodeManagerAddress"], ok) for n, ok in zip(nodes, ray.get(refs, timeout=120))]
