"""`rmad api --workers N`: N API processes serving one listening socket.

Why processes: one event loop serves a bounded number of scored requests a second (HTTP parsing, the app's own work
and the model's inference share it), and every piece of state API processes must agree on lives in the state store
(keys, rate limits, the alert log, cases, webhooks, latest scores, the tape), so more processes scale out unchanged.
Each child is a whole `rmad api` (its own runtime, followers and graceful shutdown) on the socket the supervisor
binds once and hands down, so the kernel spreads connections over the children.

The supervisor forwards SIGTERM/SIGINT to every child and waits for them (each drains within the grace period). A
child that exits on its own stops the others and the supervisor exits with its status: a half-sized API is not
hidden from the orchestrator, which restarts the whole.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger(__name__)

MAX_WORKERS = 64


class WorkersError(ValueError):
    """`--workers` cannot be honoured with these settings; the message says why."""


def check_workers(n: int, embedded_state: bool) -> None:
    """Several processes share nothing but the state store: refuse them when the state is in-process."""
    if not 1 <= n <= MAX_WORKERS:
        raise WorkersError(f"--workers must be within 1..{MAX_WORKERS}, got {n}")
    if n > 1 and embedded_state:
        raise WorkersError(
            "--workers > 1 needs RMAD_REDIS_URL: API processes share keys, rate limits and the alert log "
            "only through Redis (the in-process state store is per process)"
        )


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket the children share (inheritable, so it survives into them by descriptor)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def inherited(fd: int) -> socket.socket:
    """The supervisor's socket in a child (family and type read from the descriptor)."""
    return socket.socket(fileno=fd)


def supervise(n: int, child_argv: Callable[[int], Sequence[str]], sock: socket.socket, grace_s: float) -> int:
    """Run `n` children (`child_argv(fd)`) on `sock` until a signal or a child's own exit; return the exit status."""
    fd = sock.fileno()
    # own sessions: a terminal's Ctrl-C reaches the supervisor alone, which forwards it once (a second signal would
    # make a child skip its graceful drain)
    children = [subprocess.Popen(list(child_argv(fd)), pass_fds=(fd,), start_new_session=True) for _ in range(n)]
    stopping: list[int] = []

    def forward(sig: int, frame: FrameType | None) -> None:
        if not stopping:
            log.info("signal %d: stopping %d api workers", sig, len(children))
        stopping.append(sig)
        for c in children:
            if c.poll() is None:
                c.send_signal(sig)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info("api workers started: %s", ", ".join(str(c.pid) for c in children))
    status = 0
    try:
        while any(c.poll() is None for c in children):
            exited = [c for c in children if c.poll() is not None]
            if exited and not stopping:
                first = exited[0]
                status = first.returncode or 1
                log.error("api worker %d exited with %s: stopping the others", first.pid, first.returncode)
                forward(signal.SIGTERM, None)
            time.sleep(0.2)
        if stopping:
            status = max((c.returncode for c in children if c.returncode and c.returncode > 0), default=status)
    finally:
        deadline = time.monotonic() + grace_s + 5
        for c in children:
            if c.poll() is None:
                try:
                    c.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    c.kill()
        for s, h in previous.items():
            signal.signal(s, h)
        sock.close()
    return status
