"""Shared pytest fixtures: the mithril command, scratch stores, and a real
redis-server started on a free loopback port for the tests that need it."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _mithril_bin():
    env = os.environ.get("MITHRIL_BIN")
    if env:
        return env
    return str(ROOT / "build" / "mithril")


@pytest.fixture(scope="session")
def mithril_bin():
    path = _mithril_bin()
    if not os.access(path, os.X_OK):
        pytest.fail(f"mithril command not built at {path}; run make")
    return path


@pytest.fixture
def store_dir(tmp_path):
    d = tmp_path / "store"
    return d


@pytest.fixture
def cli(mithril_bin, store_dir):
    """Run `mithril --dir <store> ARGS`; returns CompletedProcess."""

    def run(*args, input=None, env=None, check=False, dir=None, text=False):
        full_env = dict(os.environ)
        full_env.pop("MITHRIL_DIR", None)
        if env:
            full_env.update(env)
        cmd = [mithril_bin, "--dir", str(dir or store_dir), *map(str, args)]
        p = subprocess.run(cmd, input=input, capture_output=True, env=full_env,
                           text=text, timeout=600)
        if check and p.returncode != 0:
            raise AssertionError(
                f"{cmd} exited {p.returncode}: {p.stderr!r}")
        return p

    return run


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A real redis-server on 127.0.0.1, owned by one test or session."""

    def __init__(self, workdir, extra=()):
        self.workdir = Path(workdir)
        self.port = _free_port()
        self.extra = [str(a) for a in extra]
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.fail("redis-server not installed (scripts/install-deps.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
             "--maxmemory", "4gb", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args):
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *map(str, args)],
            capture_output=True, timeout=60)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_cluster(tmp_path):
    """Three real redis-server nodes formed into one Redis Cluster (all
    16,384 slots spread over them, no replicas)."""
    nodes = []
    try:
        for i in range(3):
            nodes.append(RedisServer(tmp_path / f"node{i}", extra=[
                "--cluster-enabled", "yes", "--cluster-port", _free_port(),
                "--cluster-config-file", tmp_path / f"node{i}.conf"]).start())
        p = subprocess.run(
            ["redis-cli", "--cluster", "create",
             *[f"127.0.0.1:{n.port}" for n in nodes],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        deadline = time.time() + 30
        while not all(b"cluster_state:ok" in n.cli("cluster", "info").stdout
                      for n in nodes):
            assert time.time() < deadline, "the cluster did not form"
            time.sleep(0.1)
        yield nodes
    finally:
        for n in nodes:
            n.stop()
