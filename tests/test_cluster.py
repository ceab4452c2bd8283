"""A two-node Ray cluster on loopback addresses, joined with --address; token authentication."""
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

from conftest import tiny_config

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
        self.env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
                        RAY_USAGE_STATS_ENABLED="0")
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args: str) -> None:
        log = open(Path(self.temp_dir) / f"node{len(self.procs)}.log", "w")
        self.procs.append(subprocess.Popen([RAY, "start", "--block", *args], env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def alive_nodes(self) -> int:
        probe = ("import ray; ray.init(address='%s', _node_ip_address='127.0.0.2', logging_level='ERROR'); "
                 "print(sum(n['Alive'] for n in ray.nodes()))" % self.address)
        proc = subprocess.run([sys.executable, "-c", probe], env=self.env, capture_output=True, text=True,
                              timeout=120)
        return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else 0

    def __enter__(self):
        self._start("--head", "--node-ip-address=127.0.0.2", f"--port={self.port}", "--num-cpus=1",
                    "--include-dashboard=false", f"--temp-dir={self.temp_dir}", "--disable-usage-stats")
        self._start(f"--address={self.address}", "--node-ip-address=127.0.0.3", "--num-cpus=1")
        deadline = time.time() + 120
        while self.alive_nodes() < 2:
            assert all(p.poll() is None for p in self.procs), self.logs()
            assert time.time() < deadline, "the two-node cluster did not come up:\n" + self.logs()
            time.sleep(1)
        return self

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(Path(self.temp_dir).glob("node*.log")))

    def __exit__(self, *exc):
        for proc in reversed(self.procs):  # SIGTERM to `ray start --block` stops the processes it started
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=120)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def leftover_processes(self) -> list[str]:
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        return [line for line in out.splitlines() if self.temp_dir in line or f"--port={self.port}" in line
                or f"address={self.address}" in line]


SPACE = """
from search_spaces.spec import StudySpec
SPACE = StudySpec(name="cluster", question="q", base=%r,
                  grid=[{"train.lr": [0.003, 0.002, 0.001, 0.0005]}], seeds=[0], cpus_per_trial=1)
"""


def test_study_across_two_loopback_nodes(ray_session, tmp_path):
    import ray

    space = tmp_path / "space.py"
    space.write_text(textwrap.dedent(SPACE % tiny_config(train={"epochs": 3})))
    storage = tmp_path / "store"
    with LoopbackCluster() as cluster:
        proc = subprocess.run([sys.executable, "-m", "study", "run", str(space), "--address", cluster.address,
                               "--storage", str(storage), "--name", "c"], cwd=str(REPO), env=cluster.env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        wrong = dict(cluster.env, RAY_AUTH_TOKEN=secrets.token_hex(32))
        denied = subprocess.run([sys.executable, "-m", "study", "run", str(space), "--address", cluster.address,
                                 "--storage", str(storage), "--name", "denied"], cwd=str(REPO), env=wrong,
                                capture_output=True, text=True, timeout=300)
    assert not cluster.leftover_processes(), "stopping the cluster stopped what it started"
    assert ray.is_initialized() and ray.get(ray.remote(lambda: 42).remote()) == 42, "the session's Ray is untouched"

    trials = sorted(p for p in (storage / "c").iterdir() if (p / "params.json").is_file())
    assert len(trials) == 4
    nodes = set()
    for trial in trials:
        assert (trial / "metrics.json").is_file() and (trial / "latents.npz").is_file(), trial.name
        nodes |= {json.loads(line)["node_ip"] for line in (trial / "result.json").read_text().splitlines()}
    assert nodes == {"127.0.0.2", "127.0.0.3"}, "trials ran on both nodes"

    assert denied.returncode != 0
    lines = denied.stderr.strip().splitlines()
    assert len(lines) == 1, denied.stderr[-3000:]
    assert "authentication failed" in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert "Traceback" not in denied.stdout + denied.stderr
    assert not (storage / "denied").exists()


def test_storage_not_visible_from_a_node_is_a_clear_error(tmp_path, monkeypatch):
    from study import cluster

    monkeypatch.setattr(cluster, "probe_nodes", lambda marker, token: [("127.0.0.2", True), ("127.0.0.3", False)])
    with pytest.raises(cluster.ClusterError, match=r"not visible from Ray node\(s\) 127.0.0.3.*shared by every node"):
        cluster.check_storage_shared(str(tmp_path / "study"))
    assert not (tmp_path / "study" / ".geotune_storage_check").exists()
