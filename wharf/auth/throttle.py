"""Refuses logins for a while after too many failures for one user from one address.

Per process (each worker counts for itself), so the effective limit on a replica with N
workers is up to N times the setting; an attacker still gets only a few hundred guesses per
window instead of thousands per second, and argon2 makes each one slow.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class TooManyAttempts(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed login attempts; try again later")
        self.retry_after = retry_after


class LoginThrottle:
    MAX_KEYS = 100_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: OrderedDict[tuple[str, str], list[float]] = OrderedDict()

    def check(self, key: tuple[str, str], limit: int, window: float) -> None:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(key, ()) if now - t < window]
            if len(recent) >= limit:
                raise TooManyAttempts(int(window - (now - recent[0])) + 1)

    def failed(self, key: tuple[str, str], window: float) -> None:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.pop(key, ()) if now - t < window]
            recent.append(now)
            self._failures[key] = recent
            while len(self._failures) > self.MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures.pop(key, None)
