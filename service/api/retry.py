"""Back-off and state-change logging for loops that talk to a store that may be down (alert hub, webhooks).

Why: with Redis down, those loops retried every poll interval and logged each failure (~40 warnings a second),
burying the one line that matters. Now a loop waits twice as long after each failure in a row (capped, jittered),
logs a warning when it starts failing (and when the error changes), and one line when it recovers.
"""

from __future__ import annotations

import logging
import random


class RetryState:
    def __init__(self, what: str, logger: logging.Logger, base_s: float = 0.1, max_s: float = 5.0) -> None:
        self.what = what
        self.log = logger
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0  # failures in a row
        self._last_error: str | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException) -> float:
        """Record a failure; returns how long to wait before the next try."""
        text = f"{type(exc).__name__}: {exc}"[:300]
        if self.failures == 0 or text != self._last_error:
            self.log.warning("%s failing, retrying with back-off: %s", self.what, text)
        self._last_error = text
        self.failures += 1
        delay: float = min(self.max_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        return delay * random.uniform(0.8, 1.0)  # jitter: workers do not retry in step

    def ok(self) -> None:
        """Record a success (logs the recovery once)."""
        if self.failures:
            self.log.warning("%s recovered after %d failed tries", self.what, self.failures)
        self.failures = 0
        self._last_error = None
