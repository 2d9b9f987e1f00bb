"""System settings that admins change at run time (`/api/v0/meta/settings`), kept in the
metadata store so that every replica sees the same values.

Process configuration (addresses, data directory, database URL) is `wharf.config`; this is
the registry's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import Any

from wharf.faults import log_failure
from wharf.metadata.identity import IdentityStore

SETTINGS_KEY = "system"

log = logging.getLogger("wharf.settings")


@dataclass(frozen=True)
class SystemSettings:
    # A push into a namespace the pusher administers creates the repository (private).
    createRepositoryOnPush: bool = True
    # Anonymous callers may pull public repositories (and list them).
    anonymousPull: bool = True
    # Lifetime of a bearer token issued at /auth/token, in seconds.
    tokenLifetimeSeconds: int = 300
    # Failed logins per (user, client address) within failedLoginWindowSeconds before refusal.
    failedLoginLimit: int = 10
    failedLoginWindowSeconds: int = 300
    # Job history kept: finished jobs older than this many days, or beyond this many, are
    # deleted by the daily `jobhistorycleanup` job.
    jobHistoryMaxAgeDays: int = 30
    jobHistoryMaxCount: int = 10000
    # Upload sessions that received nothing for this many minutes (and that no request is
    # writing to) are deleted with their bytes by the daily `uploadcleanup` job and by every
    # garbage collection (which also deletes those idle for longer than its graceMinutes).
    uploadExpiryMinutes: int = 24 * 60

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def updated(self, changes: dict[str, Any]) -> SystemSettings:
        """A copy with `changes` applied; ValueError names the first bad field."""
        known = {f.name: f for f in fields(self)}
        values = self.to_dict()
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown setting {key!r}")
            expected = type(values[key])
            if type(value) is not expected:  # bool is not int here, on purpose
                raise ValueError(f"setting {key!r} must be {expected.__name__}")
            if expected is int and value < 1:
                raise ValueError(f"setting {key!r} must be at least 1")
            values[key] = value
        if not 30 <= values["tokenLifetimeSeconds"] <= 3600:
            raise ValueError("setting 'tokenLifetimeSeconds' must be between 30 and 3600")
        return SystemSettings(**values)


class Policy:
    """Reads settings and notices changes to access control, cheaply enough for every request.

    Changes that can take access away (a grant removed, an account or token deactivated, a
    setting) bump an epoch in the store; callers that cache credentials or decisions key
    their caches by `epoch()`, which re-reads the store at most once per `POLL_SECONDS`, so a
    change made on any replica takes effect everywhere within that time (at once in the
    process that made it, which calls `changed()`).
    """

    POLL_SECONDS = 1.0

    def __init__(self, identities: IdentityStore) -> None:
        self.identities = identities
        self._lock = threading.Lock()
        self._epoch = ""
        self._checked = 0.0
        self._settings: SystemSettings | None = None
        # In a server worker a background task keeps the epoch fresh (`refresh_forever`), so
        # that `epoch()` never waits for the database on the event loop.
        self.background = False

    def refresh(self) -> None:
        """Re-read the epoch (and the settings if it moved). Blocking.

        The read and the assignment are made under one lock: the background refresh, which
        may have read the epoch just before a change committed, must not overwrite what the
        changing thread's refresh read after it (a deleted account's cached credentials
        would then pass for another poll period)."""
        with self._lock:
            epoch = self.identities.epoch()
            if epoch != self._epoch:
                self._epoch = epoch
                self._settings = None
            self._checked = time.monotonic()
        if self._settings is None:
            self.settings()

    async def refresh_forever(self) -> None:
        self.background = True
        while True:
            await asyncio.sleep(self.POLL_SECONDS)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as e:
                log_failure(log, "could not read the access epoch", e)

    def epoch(self) -> str:
        if self.background:
            return self._epoch
        now = time.monotonic()
        if now - self._checked >= self.POLL_SECONDS:
            with self._lock:
                if now - self._checked >= self.POLL_SECONDS:
                    epoch = self.identities.epoch()
                    if epoch != self._epoch:
                        self._epoch = epoch
                        self._settings = None
                    self._checked = time.monotonic()
        return self._epoch

    def changed(self) -> None:
        """This process changed access control: take it into account at once. (Called from
        worker threads and the CLI, never on the event loop.)"""
        with self._lock:  # after any load of the old settings under way
            self._settings = None
        if self.background:
            self.refresh()
        else:
            self._checked = 0.0

    def settings(self) -> SystemSettings:
        self.epoch()
        current = self._settings
        if current is None:
            with self._lock:  # a load of old settings never lands after changed() cleared them
                current = self._settings
                if current is None:
                    stored = self.identities.get_setting(SETTINGS_KEY) or {}
                    known = {f.name for f in fields(SystemSettings)}
                    current = SystemSettings(**{k: v for k, v in stored.items() if k in known})
                    self._settings = current
        return current

    def update_settings(self, changes: dict[str, Any]) -> SystemSettings:
        new = self.settings().updated(changes)
        self.identities.set_setting(SETTINGS_KEY, new.to_dict(), affects_access=True)
        self.changed()
        return new
