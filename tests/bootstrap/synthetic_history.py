"""A synthetic release history for upgrade tests (WHARF_RELEASE_HISTORY=this module).

The software version is read from the file named by WHARF_TEST_SOFTWARE_VERSION_FILE, so a
test "installs a new version" by rewriting that file, and a replica that re-executes itself
(SIGHUP) comes back as that version, as it would after a package upgrade.

Data steps append to a list in the settings table: run twice, they would show twice, so the
tests can see that every step ran exactly once. `synthetic-flaky` is a background migration
that fails while the setting `synthetic_failures` is above zero (counting it down).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sqlalchemy import select

from wharf.metadata import schema as t
from wharf.metadata.store import utcnow
from wharf.upgrade.background import manifest_image_size
from wharf.upgrade.history import Release, Step

NOTES = "synthetic_notes"
FAILURES = "synthetic_failures"
# Set in a forked test process: the data step of that name exits the process mid-transaction.
CRASH_IN: str | None = None


def software_version() -> str:
    return Path(os.environ["WHARF_TEST_SOFTWARE_VERSION_FILE"]).read_text().strip()


def _read(conn, key):
    value = conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).scalar()
    return None if value is None else json.loads(value)


def _write(conn, key, value) -> None:
    conn.execute(t.settings.delete().where(t.settings.c.key == key))
    conn.execute(t.settings.insert().values(key=key, value=json.dumps(value), updated_at=utcnow()))


def _note(text: str):
    def run(conn) -> None:
        notes = _read(conn, NOTES) or []
        notes.append(text)
        _write(conn, NOTES, notes)
        if text == CRASH_IN:
            os._exit(137)  # killed inside the step's transaction, before its commit

    return run


def flaky(store, say, stopped) -> bool:
    with store._write() as conn:
        left = _read(conn, FAILURES) or 0
        if left > 0:
            _write(conn, FAILURES, left - 1)
    if left > 0:
        raise RuntimeError(f"synthetic failure ({left - 1} more to come)")
    say("synthetic-flaky: done")
    return True


RELEASES = (
    Release("1.0.0", schema="0006"),
    Release("1.0.1", schema="0006"),
    Release("1.0.2", schema="0006", steps=(Step("seed", _note("1.0.2 seed")),)),
    Release(
        "1.1.0",
        schema="0006",
        steps=(Step("first", _note("1.1.0 first")), Step("second", _note("1.1.0 second"))),
        background=("synthetic-flaky", "manifest-image-size"),
    ),
    Release("1.2.0", schema="0006"),
    Release("2.0.0", schema="0006", steps=(Step("major", _note("2.0.0 major")),)),
    Release("3.0.0", schema="0006"),
)

BACKGROUND = {"manifest-image-size": manifest_image_size, "synthetic-flaky": flaky}
