"""Background migrations: data work too long for the upgrade window, run after an upgrade by
the `metadatastoremigration` job (the seeds' 2.5 -> 2.6 migration).

Each migration is an idempotent function that works in short batches (one transaction each)
and returns True once nothing is left to do, so a run that fails, is canceled or is stopped
with its replica can simply be run again. Garbage collection does not run while the job runs
(the job runner's exclusion rules), so a migration never races a collection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, image_size, utcnow
from wharf.upgrade import history
from wharf.upgrade.versions import Version

log = logging.getLogger("wharf.upgrade")

DONE_SETTING = "background_migrations"  # {name: {"doneAt": iso}}
BATCH = 500

Migration = Callable[[MetadataStore, Callable[[str], None], Callable[[], bool]], bool]


def manifest_image_size(
    store: MetadataStore, say: Callable[[str], None], stopped: Callable[[], bool]
) -> bool:
    """0.2.0: record the image size of manifests pushed before it (the tags API computed it
    from every manifest's content on each listing)."""
    m = t.manifests
    filled = 0
    while not stopped():
        with store._write() as conn:
            rows = conn.execute(
                select(m.c.id, m.c.media_type, m.c.content)
                .where(m.c.image_size.is_(None))
                .order_by(m.c.id)
                .limit(BATCH)
            ).all()
            for row in rows:
                conn.execute(
                    update(m)
                    .where(m.c.id == row.id)
                    .values(image_size=image_size(row.media_type, row.content))
                )
        filled += len(rows)
        if len(rows) < BATCH:
            say(f"manifest-image-size: filled in {filled} manifests")
            return True
    say(f"manifest-image-size: stopped after {filled} manifests; the next run continues")
    return False


BACKGROUND: dict[str, Migration] = {"manifest-image-size": manifest_image_size}


def migrations() -> dict[str, Migration]:
    found = dict(BACKGROUND)
    module = history._override()
    if module is not None:
        found.update(getattr(module, "BACKGROUND", {}))
    return found


def pending(store: MetadataStore, identities: Any) -> list[str]:
    """Background migrations of the releases up to the cluster's version, not done yet."""
    from wharf.upgrade.engine import read_state

    state = read_state(store)
    done = identities.get_setting(DONE_SETTING) or {}
    # During an upgrade the job is queued once the schema is in place, before the version
    # is recorded: the target's migrations are due from then on.
    current = state.upgrade["to"] if state.upgrade else state.version
    if current is None:
        return []
    wanted = [
        name
        for release in history.releases()
        if release.parsed <= Version.parse(current)
        for name in release.background
    ]
    return [name for name in wanted if name not in done]


def run_pending(
    store: MetadataStore, identities: Any, say: Callable[[str], None], stopped: Callable[[], bool]
) -> bool:
    """Run every pending migration in release order; True when all are done."""
    known = migrations()
    names = pending(store, identities)
    if not names:
        say("no background migrations pending")
        return True
    for name in names:
        if name not in known:
            raise RuntimeError(f"background migration {name!r} is not known to this software")
        say(f"{name}: running")
        if not known[name](store, say, stopped):
            return False
        done = identities.get_setting(DONE_SETTING) or {}
        done[name] = {"doneAt": utcnow().isoformat()}
        identities.set_setting(DONE_SETTING, done)
        say(f"{name}: done")
    return True
