"""Allocation tracing for the soak's service processes (off unless RMAD_TRACEMALLOC names a file).

`python -m bench.soak --tracemalloc` puts this directory first on the children's PYTHONPATH, so Python imports it
at start-up (the `sitecustomize` hook) before `service.cli` runs. With `RMAD_TRACEMALLOC=PATH` set, the process
starts tracemalloc (`RMAD_TRACEMALLOC_FRAMES` frames per traceback, default 8); the first SIGUSR1 takes the
baseline snapshot, every later one (and the process's exit) writes to PATH the top 25 differences from that
baseline grouped by traceback, then by line (at exit: to PATH.exit). Nothing in the service imports this; it
costs nothing when unset.
"""

from __future__ import annotations

import atexit
import os
import signal
import time
import tracemalloc
from pathlib import Path

_PATH = os.environ.get("RMAD_TRACEMALLOC")
_base: tracemalloc.Snapshot | None = None


def _snapshot() -> tracemalloc.Snapshot:
    return tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
            tracemalloc.Filter(False, "*/linecache.py"),
        )
    )


def _dump(*_: object, suffix: str = "") -> None:
    global _base
    if _PATH is None:
        return
    snap = _snapshot()
    if _base is None:
        _base = snap
        Path(_PATH).write_text(f"baseline at {time.time():.0f}, traced {tracemalloc.get_traced_memory()}\n")
        return
    cur, peak = tracemalloc.get_traced_memory()
    lines = [f"pid {os.getpid()} at {time.time():.0f}: traced now {cur / 1e6:.1f} MB, peak {peak / 1e6:.1f} MB"]
    diff = snap.compare_to(_base, "traceback")
    lines.append(f"net since baseline: {sum(d.size_diff for d in diff) / 1e6:+.1f} MB; top 25 by traceback:")
    for d in diff[:25]:
        lines.append(f"{d.size_diff / 1e6:+9.2f} MB {d.count_diff:+8d} blocks (now {d.size / 1e6:.2f} MB)")
        lines.extend(f"        {line}" for line in d.traceback.format(most_recent_first=True))
    lines.append("top 25 by line:")
    for d in snap.compare_to(_base, "lineno")[:25]:
        lines.append(f"{d.size_diff / 1e6:+9.2f} MB {d.count_diff:+8d} blocks  {d.traceback[0]}")
    Path(_PATH + suffix).write_text("\n".join(lines) + "\n")


if _PATH:
    tracemalloc.start(int(os.environ.get("RMAD_TRACEMALLOC_FRAMES", "8")))
    signal.signal(signal.SIGUSR1, _dump)
    atexit.register(_dump, suffix=".exit")
