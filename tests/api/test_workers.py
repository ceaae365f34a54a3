"""`rmad api --workers N`: N processes on one socket, stopped together; refused without a shared state store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from harness.servers import free_port
from service.api.workers import WorkersError, check_workers

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMAD_")}
    env.update(PYTHONPATH=str(ROOT), RMAD_ENV="test", RMAD_LOG_LEVEL="WARNING", RMAD_SHUTDOWN_GRACE_S="5", **extra)
    return env


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def test_workers_need_a_shared_state_store() -> None:
    check_workers(1, embedded_state=True)
    check_workers(4, embedded_state=False)
    with pytest.raises(WorkersError, match="RMAD_REDIS_URL"):
        check_workers(2, embedded_state=True)
    with pytest.raises(WorkersError, match=r"1\.\.64"):
        check_workers(0, embedded_state=False)
    p = subprocess.run(
        [sys.executable, "-m", "service.cli", "api", "--workers", "2"], env=_env(), capture_output=True, timeout=60
    )
    assert p.returncode == 2 and b"RMAD_REDIS_URL" in p.stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc")
def test_two_workers_serve_one_port_and_stop_together(redis_url: str, unique: str) -> None:
    port = free_port()
    env = _env(RMAD_REDIS_URL=redis_url, RMAD_REDIS_KEY_PREFIX=f"t{unique}:", RMAD_API_FOLLOWERS="false")
    sup = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--workers", "2", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 90
        answered = 0
        while answered < 20 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    answered += r.status == 200
            except OSError:
                time.sleep(0.2)
        assert answered == 20, "the workers never answered"
        kids = _children(sup.pid)
        assert len(kids) == 2 and all(Path(f"/proc/{k}").exists() for k in kids)
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
        assert not any(Path(f"/proc/{k}").exists() and "zombie" not in _state(k) for k in kids)
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)


def _state(pid: int) -> str:
    try:
        return "zombie" if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z" else "alive"
    except OSError:
        return "gone"
