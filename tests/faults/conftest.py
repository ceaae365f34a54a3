"""Fault-suite infrastructure: real `rmad` processes, and servers a case may kill and restart.

Every case that kills a server starts its own (the session's Redis and broker stay untouched for the other suites):
- `DurableBroker`: Tansu on its S3 storage engine, backed by a moto S3 server (`moto_server`, from the dev extra) in
  a separate process. Why: Tansu 0.6 here is built with the `memory://` and `s3://` engines only (`postgres://` and
  `sqlite://` answer FeatureNotEnabled), and memory storage loses every record and committed offset on a restart.
  The bucket lives in the moto process, which outlives the broker, so a SIGKILLed broker restarts with its topics,
  records and consumer-group offsets.
- `restartable_redis`: redis-server with `appendonly yes` (as in production), restarted on the same port and dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.servers import ServerProcess, _wait_tcp, free_port, start_redis, tansu_binary

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)


# ---------------------------------------------------------------------------------------------------- processes
class RmadProcess:
    """`python -m service.cli ROLE` as a child process with its own HTTP port (every role serves /readyz)."""

    def __init__(self, role: str, env: dict[str, str], log: Path, *args: str) -> None:
        self.role = role
        self.port = free_port()
        self.log = log
        self.env = {**env, "RMAD_HOST": "127.0.0.1", "RMAD_PORT": str(self.port)}
        self._fh = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", role, *args],
            env=self.env,
            cwd=ROOT,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    async def readyz(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=3.0) as c:
            r = await c.get(self.base + "/readyz")
            return r.status_code, r.json()

    async def wait_ready(self, within_s: float) -> float:
        """Seconds until /readyz answers 200; fails after `within_s` with the last answer."""
        t0 = time.monotonic()
        last: object = "no answer"
        while time.monotonic() - t0 < within_s:
            if not self.alive():
                raise AssertionError(f"{self.role} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                code, body = await self.readyz()
                if code == 200:
                    return time.monotonic() - t0
                last = body.get("not_ready"), {k: v["detail"] for k, v in body.get("parts", {}).items() if not v["ok"]}
            except (httpx.HTTPError, ValueError) as exc:
                last = repr(exc)
            await asyncio.sleep(0.25)
        raise AssertionError(f"{self.role} not ready within {within_s} s: {last}\n{self.tail()}")

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of one metric's samples whose labels include `labels` (from this process's /metrics)."""
        async with httpx.AsyncClient(timeout=3.0) as c:
            text = (await c.get(self.base + "/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            metric, _, rest = head.partition("{")
            if metric != name:
                continue
            if all(f'{k}="{v}"' in rest for k, v in labels.items()):
                total += float(value)
        return total

    def terminate(self, limit_s: float) -> float:
        """SIGTERM, then the seconds until the process exited (SIGKILL at `limit_s` + 5, which fails the check)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(limit_s + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return time.monotonic() - t0

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def close(self) -> None:
        if self.alive():
            self.terminate(10)
        with contextlib.suppress(Exception):
            self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.text().splitlines()[-n:])


# ---------------------------------------------------------------------------------------------------- servers
def _moto_binary() -> str:
    exe = Path(sys.executable).parent / "moto_server"
    found = str(exe) if exe.exists() else shutil.which("moto_server")
    if not found:
        pytest.skip("moto_server not installed (dev extra: moto[server])")
    return found


class S3Server:
    """A moto S3 server in its own process, with one bucket: the object store the durable broker writes to."""

    def __init__(self, bucket: str = "tansu") -> None:
        self.port = free_port()
        self.bucket = bucket
        self.workdir = Path(tempfile.mkdtemp(prefix="rmad-s3-"))
        self._fh = (self.workdir / "moto.log").open("ab")
        self.proc = subprocess.Popen(
            [_moto_binary(), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _wait_tcp("127.0.0.1", self.port, 30.0, self.proc)
        # create the bucket with a plain S3 PUT (moto accepts unsigned requests)
        r = httpx.put(f"{self.url}/{bucket}", timeout=10)
        r.raise_for_status()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._fh.close()


class DurableBroker:
    """Tansu with `--storage-engine s3://BUCKET/` on a moto S3 server: survives SIGKILL and restart."""

    def __init__(self) -> None:
        self.s3 = S3Server()
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.restarts = 0
        self.start()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            f"s3://{self.s3.bucket}/",
        ]
        workdir = self.s3.workdir
        log = (workdir / "tansu.log").open("ab")
        env = {**os.environ, **self.s3.env(), "RUST_LOG": os.environ.get("RMAD_TANSU_LOG", "warn")}
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=workdir
        )
        _wait_tcp("127.0.0.1", self.port, 20.0, proc)
        self.server = ServerProcess("tansu-s3", self.port, proc, workdir, argv)

    def kill(self) -> None:
        assert self.server is not None
        self.server.kill()

    def restart(self) -> None:
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        self.s3.stop()


@pytest.fixture
def durable_broker() -> Iterator[DurableBroker]:
    b = DurableBroker()
    try:
        yield b
    finally:
        b.stop()


class RestartableRedis:
    """redis-server with appendonly on; `kill` is SIGKILL, `restart` reuses the port and the AOF directory."""

    def __init__(self) -> None:
        self.server = start_redis(appendonly=True)
        self.port = self.server.port
        self.workdir = self.server.workdir

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server = start_redis(self.port, appendonly=True, workdir=self.workdir)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def restartable_redis() -> Iterator[RestartableRedis]:
    r = RestartableRedis()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture(scope="session")
def fault_scenario(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The labelled simulated market and the calibrated contract model (harness/scenario.py), built once."""
    from harness.scenario import build_scenario

    return build_scenario(tmp_path_factory.mktemp("fault-scenario"))
