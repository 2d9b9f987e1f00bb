"""The release history: every Wharf release, the schema revision it runs on, the data steps
an upgrade to it performs, and the background migrations (jobs) it starts afterwards.

Rules for what a release may contain, so that replicas can be replaced one at a time:
- schema changes are additive (new tables, nullable columns, indexes): the replicas still on
  the previous release keep working against the new schema until they are replaced;
  removals wait for a later release;
- a data step runs inside one transaction that also records it as done, so an interrupted
  upgrade never runs it twice nor leaves half of it;
- work too long for the upgrade window (backfills over every row) is a background migration:
  an idempotent function run in batches by the `metadatastoremigration` job.

The software's own version is `wharf.__version__`. `WHARF_RELEASE_HISTORY=package.module`
replaces this history with another (a module with `RELEASES` and `software_version()`); the
test suite uses that to walk a cluster through a synthetic version history. It changes which
upgrades this process believes in, nothing else.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from sqlalchemy import Connection

from wharf.upgrade.versions import Version

HISTORY_ENV = "WHARF_RELEASE_HISTORY"


@dataclass(frozen=True)
class Step:
    """A data step of an upgrade: `run(conn)` inside the transaction that records it; what
    it returns, lines of a report, is printed by `wharf upgrade`."""

    name: str
    run: Callable[[Connection], list[str] | None]


def _repair_stored_names(conn: Connection) -> list[str]:
    from wharf.upgrade.names import repair_stored_names

    return repair_stored_names(conn)


@dataclass(frozen=True)
class Release:
    version: str
    schema: str  # the Alembic revision this release's code expects (head at release time)
    steps: tuple[Step, ...] = ()
    # Names of background migrations (wharf.upgrade.background) started after the upgrade.
    background: tuple[str, ...] = ()
    notes: str = ""

    @property
    def parsed(self) -> Version:
        return Version.parse(self.version)


RELEASES: tuple[Release, ...] = (
    Release("0.1.0", schema="0005", notes="registry, access control, replicas, jobs, online GC"),
    Release(
        "0.2.0",
        schema="0006",
        background=("manifest-image-size",),
        notes="bootstrapper (TLS, upgrade, remove, destroy); manifests record their image size",
    ),
    Release(
        "0.2.1",
        schema="0006",
        steps=(Step("repair stored names", _repair_stored_names),),
        notes="names are matched whole; names stored with a trailing newline are repaired",
    ),
)


@cache
def _override() -> ModuleType | None:
    name = os.environ.get(HISTORY_ENV)
    return importlib.import_module(name) if name else None


def releases() -> tuple[Release, ...]:
    module = _override()
    found = module.RELEASES if module is not None else RELEASES
    return tuple(sorted(found, key=lambda r: r.parsed))


def software_version() -> str:
    """The version of the software installed here (what this process runs)."""
    module = _override()
    if module is not None:
        return str(module.software_version())
    from wharf import __version__

    return __version__


def release(version: str) -> Release | None:
    for r in releases():
        if r.version == version:
            return r
    return None


def between(source: str, target: str) -> list[Release]:
    """Releases after `source` up to and including `target`, oldest first."""
    a, b = Version.parse(source), Version.parse(target)
    return [r for r in releases() if a < r.parsed <= b]


def version_of_schema(revision: str | None) -> str | None:
    """The newest release whose code runs on this schema revision (for clusters created
    before the cluster version was recorded)."""
    matching = [r for r in releases() if r.schema == revision]
    return matching[-1].version if matching else None
