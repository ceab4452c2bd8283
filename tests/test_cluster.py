"""A two-node Ray cluster on loopback addresses, joined with --address; token authentication."""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import gated_config

REPO = Path(__file__).parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """`ray start --block` head on 127.0.0.2 and worker on 127.0.0.3; stopping them stops only what they started."""

    def __init__(self):
        # Ray's socket paths are length-limited: keep the temp dir short.
        self.temp_dir = tempfile.mkdtemp(prefix="gt-", dir="/tmp")
        self.port = free_port("127.0.0.2")
        self.address = f"127.0.0.2:{self.port}"
        self.env = dict(
            os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0"
        )
        self.procs: list[subprocess.Popen] = []
        self.started: list[tuple[int, str | None]] = []  # every process of the nodes, when stop() was asked
        self.stopping: float | None = None  # when stop() was asked

    def _start(self, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"node{len(self.procs)}.log", "w")
        self.procs.append(
            subprocess.Popen(
                [RAY, "start", "--block", *args],
                env=dict(self.env, PYTHONUNBUFFERED="1"),  # its "Ray runtime started." reaches the log at once
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def alive_nodes(self) -> int:
        probe = (
            f"import ray; ray.init(address='{self.address}', _node_ip_address='127.0.0.2', logging_level='ERROR', "
            "log_to_driver=False); print('alive nodes:', sum(n['Alive'] for n in ray.nodes()))"
        )
        proc = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True, timeout=120)
        # the line it printed: the nodes' own log lines can reach stdout too (one once came after it)
        counts = [line.split(":")[1] for line in proc.stdout.splitlines() if line.startswith("alive nodes:")]
        return int(counts[-1]) if proc.returncode == 0 and counts else 0

    def __enter__(self):
        try:
            self._start(
                "--head",
                "--node-ip-address=127.0.0.2",
                f"--port={self.port}",
                "--num-cpus=1",
                "--include-dashboard=false",
                f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats",
            )
            # the worker joins once the head is up: its raylet waits only 30 s (Ray's own limit) for the head's
            # GCS, which a loaded 2-core machine once took 33 s to start
            self._wait_for_nodes(1)
            self._start(f"--address={self.address}", "--node-ip-address=127.0.0.3", "--num-cpus=1")
            self._wait_for_nodes(2)
        except BaseException:
            self.__exit__(None, None, None)  # stop what did start
            raise
        return self

    def _started(self, node: int) -> bool:
        """Whether node ``node``'s `ray start` has said that its runtime is up: reading its log costs nothing, a
        probe of the cluster (alive_nodes) is a Python process that imports Ray, 2-3 CPU-s each."""
        log = Path(self.temp_dir) / f"node{node}.log"
        return log.is_file() and "Ray runtime started." in log.read_text()

    def _wait_for_nodes(self, count: int) -> None:
        deadline = time.time() + 120
        while not (self._started(count - 1) and self.alive_nodes() >= count):  # no probe before the log says so
            assert all(p.poll() is None for p in self.procs), self.logs()
            assert time.time() < deadline, "the two-node cluster did not come up:\n" + self.logs()
            time.sleep(0.2)

    def kill_worker_node(self) -> None:
        """SIGKILL the second node: `ray start --block` and everything it started, its raylet and its workers
        (which Ray puts in process groups of their own), as when the machine is lost."""
        worker = self.procs[1]
        for pid in _descendants(worker.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        worker.wait(timeout=60)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(Path(self.temp_dir).glob("node*.log")))

    def stop(self) -> None:
        """Ask the nodes to stop (SIGTERM to `ray start --block`, which stops the processes it started); leaving
        the ``with`` block waits for them. A test can do other work in between."""
        if self.stopping is None:
            self.started = [(pid, _start_time(pid)) for proc in self.procs for pid in _descendants(proc.pid)]
            for proc in reversed(self.procs):
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
            self.stopping = time.time()

    def __exit__(self, *exc):
        # After the second node is lost the head's GCS takes 30 s to go (measured 2026-12-06: raylet gone in 10 s,
        # gcs_server in 32), so whatever of them is left 5 s after stop() is killed, as the lost node's processes
        # were
        self.stop()
        deadline = self.stopping + 5
        started = self.started
        while any(proc.poll() is None for proc in self.procs) and time.time() < deadline:
            time.sleep(0.1)
        for pid, since in started:
            if since is not None and _start_time(pid) == since:  # the same process, not a new one with its id
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait(timeout=120)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftover_processes(self) -> list[str]:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        return [
            line
            for line in out.splitlines()
            if self.temp_dir in line or f"--port={self.port}" in line or f"address={self.address}" in line
        ]


SPACE = """
from geotune.search_spaces.space import SearchSpace
SPACE = SearchSpace(name="cluster", question="q", base=%r,
                  grid=[{"train.lr": [0.003, 0.002, 0.001, 0.0005]}], seeds=[0], cpus_per_trial=1)
"""


def _comparable(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("epoch_time", "train_time")} for row in history]


def _results_on(folder: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):  # being written
        return []


def test_study_across_two_loopback_nodes_survives_losing_one(ray_session, tmp_path):
    """A study across two loopback nodes (token authentication): trials run on both; the second node is
    SIGKILLed (raylet and workers) once a trial on it has checkpointed; the lost trial is retried from its
    checkpoint on the node that is left, says so in one line, counts the failure, and ends with the results of
    an uninterrupted run (issue 35 item 2). Then: trials that no node can hold stop the study after
    --pending-timeout with exit code 2; a wrong token is one clear line."""
    import ray

    from geotune.study.cli import main

    # about 1.7 s an epoch until the node is killed, so a trial is mid-way long enough for the kill to land while
    # it runs; then the gate is removed and the rest trains at full speed
    base, gate = gated_config(tmp_path, train={"epochs": 12, "patience": 0})
    space = tmp_path / "space.py"
    space.write_text(textwrap.dedent(SPACE % base))
    storage = tmp_path / "store"
    with LoopbackCluster() as cluster:

        def geotune(name: str, *extra: str) -> list[str]:
            cmd = ["run", str(space), "--address", cluster.address, "--storage", str(storage), "--name", name]
            return [sys.executable, "-m", "geotune", *cmd, *extra]

        # Three programs at once, as their waits overlap (a program's start, the pending timeout, the gated
        # epochs): a trial needing 2 CPUs (the cluster has 2, but no node holds them both, so none can be placed),
        # a client with a wrong token, and the study whose node is lost.
        outputs = {name: tmp_path / f"{name}.log" for name in ("stuck", "denied", "c")}
        wrong = dict(cluster.env, RAY_AUTH_TOKEN=secrets.token_hex(32))
        started = [
            ("stuck", geotune("stuck", "--cpus-per-trial", "2", "--pending-timeout", "3"), cluster.env),
            ("denied", geotune("denied"), wrong),
            # no report: a recovered trial's report is test_faults'; here the trials and their files
            ("c", geotune("c", "--no-report"), cluster.env),
        ]
        procs = {}
        for name, cmd, env in started:
            with open(outputs[name], "w") as out, open(outputs[name].with_suffix(".err"), "w") as err:
                procs[name] = subprocess.Popen(
                    cmd, cwd=str(REPO), env=env, stdout=out, stderr=subprocess.STDOUT if name == "c" else err
                )
        proc, log = procs["c"], outputs["c"]
        # the stuck study's message counts the alive nodes: both, until it has exited
        procs["stuck"].wait(timeout=300)
        deadline = time.time() + 300
        while not any(  # a trial mid-way on the second node
            r.get("node_ip") == "127.0.0.3" and r.get("epoch", 0) >= 2 and not (folder / "metrics.json").exists()
            for folder in (storage / "c").glob("0*")
            for r in _results_on(folder)
        ):
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        cluster.kill_worker_node()
        gate.unlink()
        rc = proc.wait(timeout=600)
        output = log.read_text()
        assert rc == 0, output[-4000:] + cluster.logs()
        procs["denied"].wait(timeout=300)
        stuck, denied = (
            subprocess.CompletedProcess(
                procs[name].args,
                procs[name].returncode,
                outputs[name].read_text(),
                outputs[name].with_suffix(".err").read_text(),
            )
            for name in ("stuck", "denied")
        )
        # the nodes stop while this process trains each retried trial again in one go (an uninterrupted run)
        cluster.stop()
        references = {}
        for done in (storage / "c").glob("*/metrics.json"):
            if json.loads(done.read_text())["failures"]:
                reference = tmp_path / "reference" / done.parent.name
                code = main(["train", str(done.parent / "config.yaml"), str(reference)])
                references[done.parent.name] = (code, reference / "trial")
    assert not cluster.leftover_processes(), "stopping the cluster stopped what it started"
    assert ray.is_initialized() and ray.get(ray.remote(lambda: 42).remote()) == 42, "the session's Ray is untouched"

    assert stuck.returncode == 2, stuck.stdout[-2000:] + stuck.stderr[-2000:]
    assert (
        "no trial could start for 3 s (--pending-timeout): each needs 2 CPU(s) and 0 GPU(s) on one node, and the "
        "largest of the cluster's 2 alive node(s) has 1 CPU(s)" in stuck.stderr
    ), stuck.stderr[-2000:]
    assert f"then continue with: geotune resume {storage / 'stuck'}" in stuck.stderr

    trials = sorted(p for p in (storage / "c").iterdir() if (p / "params.json").is_file())
    assert len(trials) == 4
    nodes, lost = set(), []
    for trial in trials:
        metrics = json.loads((trial / "metrics.json").read_text())
        assert metrics["epochs_run"] == 12 and (trial / "latents.npz").is_file(), trial.name
        nodes |= {r["node_ip"] for r in _results_on(trial)}
        if metrics["failures"]:
            lost.append(trial)
    assert nodes == {"127.0.0.2", "127.0.0.3"}, "trials ran on both nodes"
    assert lost, "a trial of the lost node was retried\n" + output[-6000:]
    retries = [line for line in output.splitlines() if "retrying from" in line]
    assert len(retries) == sum(json.loads((t / "metrics.json").read_text())["failures"] for t in lost), retries
    assert all(" failed on node 127.0.0.3 after epoch " in line and "attempt 1 of 2" in line for line in retries)
    summary = next(line for line in output.splitlines() if line.startswith("recovered after failures"))
    assert all(f"{t.name} (" in summary for t in lost), summary
    assert set(references) == {t.name for t in lost}
    for trial in lost:  # the results of an uninterrupted run: the same trial trained in one go, in this process
        code, reference = references[trial.name]
        assert code == 0, trial.name
        kept, again = (json.loads((d / "training_history.json").read_text()) for d in (trial, reference))
        assert _comparable(kept) == _comparable(again), trial.name
        got, want = (json.loads((d / "metrics.json").read_text()) for d in (trial, reference))
        for key in ("val_accuracy", "test_accuracy", "val_loss", "intrinsic_dim_twonn", "nc1"):
            assert got[key] == want[key], (trial.name, key)

    assert denied.returncode != 0
    lines = denied.stderr.strip().splitlines()
    assert len(lines) == 1, denied.stderr[-3000:]
    assert "authentication failed" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert "Traceback" not in denied.stdout + denied.stderr
    assert not (storage / "denied").exists()


def test_storage_not_visible_from_a_node_is_a_clear_error(tmp_path, monkeypatch):
    from geotune.study import cluster

    monkeypatch.setattr(cluster, "probe_nodes", lambda marker, token: [("127.0.0.2", True), ("127.0.0.3", False)])
    with pytest.raises(cluster.ClusterError, match=r"not visible from Ray node\(s\) 127.0.0.3.*shared by every node"):
        cluster.check_storage_shared(str(tmp_path / "study"))
    assert not (tmp_path / "study" / ".geotune_storage_check").exists()


# ---------------------------------------------------------------------------
# what geotune's own Ray exposes to the network


def _listening_inodes() -> dict[str, str]:
    """socket inode -> local address of every listening TCP socket (IPv4 and IPv6), from /proc/net."""
    out = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            if width == 8:
                ip = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_ip)[::-1])
            else:
                words = bytes.fromhex(hex_ip)
                ip = socket.inet_ntop(socket.AF_INET6, b"".join(words[i : i + 4][::-1] for i in range(0, 16, 4)))
            out[fields[9]] = f"{ip}:{int(hex_port, 16)}"
    return out


def _start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot), None when it is gone: a pid with its start time names
    one process, whatever later reuses the id."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    return found


def listening_sockets(root: int) -> list[tuple[str, str]]:
    """(process name, local address) of every listening TCP socket of ``root`` and its descendants."""
    inodes = _listening_inodes()
    out = []
    for pid in _descendants(root):
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        out += [(name, inodes[link[8:-1]]) for link in links if link.startswith("socket:[") and link[8:-1] in inodes]
    return out


# Ray 2.60's C++ gRPC servers (GCS, raylet, every core worker and the driver's) bind the wildcard address
# whatever node address they are given; the docs' "Network safety" page lists them and says what protects them.
WILDCARD_LISTENERS = ("gcs_server", "raylet", "ray::", "python")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from Linux's /proc")
def test_what_the_local_ray_listens_on_matches_the_readme(ray_session):
    import ray

    @ray.remote(num_cpus=1)
    def pid() -> int:
        return os.getpid()

    ray.get(pid.remote())  # a worker is up with its own server
    sockets = listening_sockets(os.getpid())
    assert sockets, "the study's processes listen somewhere"
    loopback = [(n, a) for n, a in sockets if a.startswith("127.") or a.startswith("::1:")]
    wildcard = [(n, a) for n, a in sockets if a.startswith(("0.0.0.0:", ":::"))]
    other = [s for s in sockets if s not in loopback and s not in wildcard]
    assert not other, f"sockets on a network address: {other}"
    names = {n for n, _ in wildcard}
    assert names <= {n for n in names if n.startswith(WILDCARD_LISTENERS)}, names
    assert {"gcs_server", "raylet"} <= names, names  # if Ray ever binds these to the node address, update the docs
    # what protects the wildcard servers: every Ray process runs with token authentication
    gcs = next(p for p in _descendants(os.getpid()) if Path(f"/proc/{p}/comm").read_text().strip() == "gcs_server")
    environ = Path(f"/proc/{gcs}/environ").read_bytes().split(b"\0")
    assert b"RAY_AUTH_MODE=token" in environ
    page = (Path(__file__).parents[1] / "docs" / "reference" / "network-safety.md").read_text()
    assert "gcs_server" in page and "0.0.0.0" in page and "RAY_AUTH_MODE=token" in page
