"""The upgrade engine: moves the cluster's metadata from the release it runs to the release
installed here, in ordered steps that are each recorded as done in the same transaction as
their work, so that an upgrade killed at any point continues where it stopped when it is run
again and ends in the same state as an uninterrupted run.

The steps of an upgrade from A to B:
1. `begin`: record the intent {from: A, to: B} (replicas of B refuse to start until it ends;
   replicas of A keep serving, on a schema that only grows);
2. `schema <rev>`: each Alembic revision between the two releases' schemas, one transaction
   each (PostgreSQL and SQLite both run DDL transactionally here);
3. `<version>: <step>`: the data steps of every release after A up to B;
4. `start background migrations`: queue the `metadatastoremigration` job (2 retries) when a
   release brings background migrations;
5. `finish`: record B as the cluster's version and drop the intent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, select, text

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, utcnow
from wharf.upgrade import history
from wharf.upgrade.versions import Version, VersionError, plan

CLUSTER_SETTING = "cluster"  # {"version": "x.y.z", ...}
UPGRADE_SETTING = "upgrade"  # {"from", "to", "done": [step names], "startedAt"} while running
UPGRADE_LOCK = 0x57484152_0002  # PostgreSQL advisory lock: one `wharf upgrade` at a time
MIGRATION_JOB = "metadatastoremigration"
MIGRATION_RETRIES = 2


class UpgradeRefused(Exception):
    """Refused by a rule (exit 3); the message says why and what to do instead."""


@dataclass(frozen=True)
class ClusterState:
    version: str | None  # None: a database with no Wharf cluster in it
    upgrade: dict[str, Any] | None  # the intent of an unfinished upgrade
    schema: str | None  # the Alembic revision


def _get(conn: Connection, key: str) -> Any:
    value = conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).scalar()
    return None if value is None else json.loads(value)


def _set(store: MetadataStore, conn: Connection, key: str, value: Any) -> None:
    encoded, now = json.dumps(value), utcnow()
    conn.execute(
        store._insert(t.settings)
        .values(key=key, value=encoded, updated_at=now)
        .on_conflict_do_update(
            index_elements=[t.settings.c.key], set_={"value": encoded, "updated_at": now}
        )
    )


def read_state(store: MetadataStore) -> ClusterState:
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return ClusterState(None, None, None)
        schema = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        cluster = _get(conn, CLUSTER_SETTING) or {}
        upgrade = _get(conn, UPGRADE_SETTING)
    # Clusters created before the version was recorded (0.1.0) are known by their schema.
    version = cluster.get("version") or history.version_of_schema(schema)
    return ClusterState(version, upgrade, schema)


def target_schema(version: str) -> str:
    release = history.release(version)
    return release.schema if release is not None else "head"


def initialize(store: MetadataStore, values: dict[str, Any] | None = None) -> str:
    """A new cluster: the schema of the installed release, and its version recorded."""
    version = history.software_version()
    store.migrate(target_schema(version))
    with store._write() as conn:
        cluster = _get(conn, CLUSTER_SETTING) or {}
        cluster.setdefault("version", version)
        cluster.setdefault("createdAt", utcnow().isoformat())
        cluster.update(values or {})
        _set(store, conn, CLUSTER_SETTING, cluster)
    return version


def update_cluster(store: MetadataStore, **values: Any) -> dict[str, Any]:
    """Change cluster-wide facts (the external URL, ...) kept beside the version."""
    with store._write() as conn:
        cluster = _get(conn, CLUSTER_SETTING) or {}
        cluster.update(values)
        _set(store, conn, CLUSTER_SETTING, cluster)
    return cluster


def cluster_record(store: MetadataStore) -> dict[str, Any]:
    with store.engine.connect() as conn:
        if not inspect(conn).has_table("settings"):
            return {}
        return _get(conn, CLUSTER_SETTING) or {}


def check_start(store: MetadataStore) -> ClusterState:
    """Refuse to start a replica whose software is not the cluster's version."""
    state = read_state(store)
    software = history.software_version()
    if state.version is None:
        raise UpgradeRefused(
            f"the metadata store is at schema revision {state.schema!r}, which no Wharf "
            f"release this software knows runs on; install the release that created it"
        )
    if state.upgrade and software == state.upgrade["to"]:
        raise UpgradeRefused(
            f"an upgrade of the cluster from {state.upgrade['from']} to {state.upgrade['to']} "
            "was started and has not finished; run `wharf upgrade` to finish it"
        )
    if software == state.version:
        return state
    if Version.parse(software) > Version.parse(state.version):
        p = plan(state.version, software)
        advice = (
            "run `wharf upgrade` first (it upgrades the cluster, then this replica)"
            if p.supported
            else p.explain()
        )
        raise UpgradeRefused(
            f"the cluster runs Wharf {state.version} and this software is {software}: {advice}"
        )
    raise UpgradeRefused(
        f"the cluster runs Wharf {state.version}, newer than this software ({software}); "
        f"install Wharf {state.version} on this machine"
    )


@contextlib.contextmanager
def _exclusive(store: MetadataStore) -> Iterator[None]:
    """One upgrade at a time: a PostgreSQL advisory lock for the cluster, a file lock beside
    the embedded database."""
    if not store.embedded:
        with store.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": UPGRADE_LOCK})
            if not got.scalar():
                raise UpgradeRefused("another `wharf upgrade` is running on this cluster")
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": UPGRADE_LOCK})
                conn.commit()
        return
    path = Path(str(store.engine.url.database) + ".upgrade-lock")
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpgradeRefused("another `wharf upgrade` is running on this cluster") from None
        yield


@dataclass(frozen=True)
class PlannedStep:
    name: str
    run: Callable[[], list[str] | None]  # a data step's report


def _schema_revisions(store: MetadataStore, current: str | None, target: str) -> list[str]:
    """Alembic revisions after `current` up to `target`, oldest first."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from wharf.metadata.store import MIGRATIONS

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(cfg)
    revs = [r.revision for r in script.iterate_revisions(target, current)]
    return list(reversed(revs))


def steps_for(store: MetadataStore, source: str, target: str, schema: str | None) -> list[str]:
    """The names of the steps an upgrade from `source` to `target` runs, in order."""
    return [s.name for s in _plan_steps(store, source, target, schema, [])]


def _plan_steps(
    store: MetadataStore, source: str, target: str, schema: str | None, done: list[str]
) -> list[PlannedStep]:
    planned: list[PlannedStep] = []
    for rev in _schema_revisions(store, schema, target_schema(target)):
        planned.append(PlannedStep(f"schema {rev}", lambda rev=rev: _schema_step(store, rev)))
    releases = history.between(source, target)
    for release in releases:
        for step in release.steps:
            name = f"{release.version}: {step.name}"
            planned.append(PlannedStep(name, lambda s=step, n=name: _data_step(store, n, s.run)))
    background = [n for r in releases for n in r.background]
    if background:
        name = "start background migrations"
        planned.append(PlannedStep(name, lambda: _queue_background(store, name, background)))
    return planned


def _mark_done(store: MetadataStore, conn: Connection, name: str) -> bool:
    """Record `name` as done in the open transaction; False when it already was."""
    intent = _get(conn, UPGRADE_SETTING)
    if intent is None or name in intent["done"]:
        return False
    intent["done"].append(name)
    _set(store, conn, UPGRADE_SETTING, intent)
    return True


def _schema_step(store: MetadataStore, rev: str) -> None:
    store.migrate(rev)  # a no-op when Alembic already records it
    with store._write() as conn:
        _mark_done(store, conn, f"schema {rev}")


def _data_step(
    store: MetadataStore, name: str, run: Callable[[Connection], list[str] | None]
) -> list[str] | None:
    with store._write() as conn:
        intent = _get(conn, UPGRADE_SETTING)
        if intent is None or name in intent["done"]:
            return None
        report = run(conn)
        _mark_done(store, conn, name)
    return report


def _queue_background(store: MetadataStore, name: str, migrations: list[str]) -> None:
    from wharf.jobs.store import JobStore

    with store._write() as conn:
        if not _mark_done(store, conn, name):
            return
        JobStore(store).create(
            MIGRATION_JOB,
            {},
            retries=MIGRATION_RETRIES,
            created_by="wharf upgrade",
            conn=conn,
        )


def run_data_steps(conn: Connection, source: str, target: str) -> list[str]:
    """Run the data steps of the releases after `source` up to `target` in the caller's
    transaction (a restore of an older patch's backup, which no `wharf upgrade` will see);
    returns their reports."""
    report: list[str] = []
    for release in history.between(source, target):
        for step in release.steps:
            report += step.run(conn) or []
    return report


@dataclass(frozen=True)
class Outcome:
    source: str
    target: str
    ran: list[str]
    already: bool = False


def upgrade(
    store: MetadataStore,
    *,
    say: Callable[[str], None] = print,
    after_step: Callable[[str], None] | None = None,
) -> Outcome:
    """Upgrade the cluster's metadata to the software installed here (or finish an upgrade
    that was interrupted). Raises UpgradeRefused when a rule forbids it."""
    target = history.software_version()
    with _exclusive(store):
        state = read_state(store)
        if state.version is None:
            raise UpgradeRefused("no Wharf cluster in this metadata store (run `wharf install`)")
        intent = state.upgrade
        if intent is not None and intent["to"] != target:
            raise UpgradeRefused(
                f"an upgrade from {intent['from']} to {intent['to']} was started and has not "
                f"finished; install Wharf {intent['to']} here and run `wharf upgrade` again"
            )
        source = intent["from"] if intent else state.version
        if intent is None and source == target:
            return Outcome(source, target, [], already=True)
        try:
            p = plan(source, target)
        except VersionError as e:
            raise UpgradeRefused(str(e)) from None
        if not p.supported:
            raise UpgradeRefused(p.explain())
        if history.release(target) is None:
            raise UpgradeRefused(f"{target} is not a release this software knows")
        ran: list[str] = []
        if intent is None:
            with store._write() as conn:
                intent = {"from": source, "to": target, "done": [], "startedAt": _now()}
                _set(store, conn, UPGRADE_SETTING, intent)
            say(f"upgrading the cluster from {source} to {target} ({p.rule})")
            ran.append("begin")
            if after_step:
                after_step("begin")
        else:
            say(f"continuing the upgrade from {source} to {target}")
        done = list(intent["done"])
        for step in _plan_steps(store, source, target, state.schema, done):
            if step.name in done:
                continue
            say(f"  {step.name}")
            for line in step.run() or ():
                say(f"    {line}")
            ran.append(step.name)
            if after_step:
                after_step(step.name)
        with store._write() as conn:
            cluster = _get(conn, CLUSTER_SETTING) or {}
            cluster["version"] = target
            cluster.setdefault("createdAt", intent.get("startedAt"))
            _set(store, conn, CLUSTER_SETTING, cluster)
            conn.execute(t.settings.delete().where(t.settings.c.key == UPGRADE_SETTING))
        ran.append("finish")
        if after_step:
            after_step("finish")
        say(f"the cluster now runs {target}")
        return Outcome(source, target, ran)


def _now() -> str:
    return utcnow().isoformat()
