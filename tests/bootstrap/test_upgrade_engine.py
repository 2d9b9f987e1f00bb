"""The upgrade engine on both metadata stores: the real upgrade from 0.1.0 (a schema
revision, a data step and a background backfill), a synthetic history with data steps,
refusals, and an upgrade killed at every step (and inside a step's transaction) that, run
again, ends in exactly the state of an uninterrupted run."""

from __future__ import annotations

import json
import os
import traceback

import pytest
from sqlalchemy import DateTime, MetaData, select, text

from tests import metadata_db
from tests.bootstrap import synthetic_history
from wharf.metadata import schema as t
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore, image_size
from wharf.upgrade import background, history
from wharf.upgrade.engine import (
    MIGRATION_JOB,
    UpgradeRefused,
    check_start,
    initialize,
    read_state,
    steps_for,
    upgrade,
)

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "size": 7,
            "digest": "sha256:" + "c" * 64,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "size": 1000,
                "digest": "sha256:" + "d" * 64,
            }
        ],
    }
).encode()


@pytest.fixture
def real_history(monkeypatch):
    monkeypatch.delenv(history.HISTORY_ENV, raising=False)
    history._override.cache_clear()
    yield
    history._override.cache_clear()


@pytest.fixture
def synthetic(monkeypatch, tmp_path):
    version_file = tmp_path / "software-version"
    monkeypatch.setenv(history.HISTORY_ENV, "tests.bootstrap.synthetic_history")
    monkeypatch.setenv("WHARF_TEST_SOFTWARE_VERSION_FILE", str(version_file))
    history._override.cache_clear()

    def install(version: str) -> None:
        version_file.write_text(version + "\n")

    yield install
    history._override.cache_clear()


def new_db(tmp_path, name="db") -> str:
    if metadata_db.backend() == "postgresql":
        return metadata_db.new_database()
    return f"sqlite:///{tmp_path / (name + '.db')}"


def seed_manifests(store: MetadataStore, count: int = 3) -> None:
    """Rows as 0.1.0 wrote them (no image size), with the columns every schema has."""
    with store._write() as conn:
        conn.execute(
            text(
                "INSERT INTO repositories (name, visibility, created_at, namespace, "
                "short_description, long_description) VALUES ('acme/app', 'private', "
                "CURRENT_TIMESTAMP, 'acme', '', '')"
            )
        )
        rid = conn.execute(text("SELECT id FROM repositories")).scalar()
        for i in range(count):
            body = MANIFEST + b" " * i  # distinct digests, same sizes inside
            conn.execute(
                text(
                    "INSERT INTO manifests (repository_id, digest, sha256, sha512, media_type, "
                    "size, content, created_at) VALUES (:r, :d, :d, :e, :m, :s, :c, "
                    "CURRENT_TIMESTAMP)"
                ),
                {
                    "r": rid,
                    "d": f"sha256:{i:064x}",
                    "e": f"sha512:{i:0128x}",
                    "m": "application/vnd.oci.image.manifest.v1+json",
                    "s": len(body),
                    "c": body,
                },
            )


def dump(url: str) -> dict[str, list]:
    """Every table's rows, without what differs between two equal runs (times, job ids)."""
    store = MetadataStore(url)
    try:
        meta = MetaData()
        meta.reflect(store.engine)
        out = {}
        with store.engine.connect() as conn:
            for name, table in sorted(meta.tables.items()):
                keep = [
                    c
                    for c in table.columns
                    if not isinstance(c.type, DateTime) and (name, c.name) != ("jobs", "id")
                ]
                rows = []
                for row in conn.execute(select(*keep)):
                    values = dict(row._mapping)
                    if name == "settings":
                        doc = json.loads(values["value"])
                        if isinstance(doc, dict):
                            doc = {k: v for k, v in doc.items() if not k.endswith("At")}
                        values["value"] = doc
                    rows.append(json.dumps(values, sort_keys=True, default=str))
                out[name] = sorted(rows)
                out[name + " columns"] = sorted(c.name for c in table.columns)
        return out
    finally:
        store.dispose()


def run_in_child(url: str, *, stop_after: str | None = None, crash_in: str | None = None) -> int:
    """Run an upgrade in a forked process that dies (as a SIGKILL would) after the step
    `stop_after` committed, or inside the data step `crash_in`. Returns its exit code."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            synthetic_history.CRASH_IN = crash_in

            def after(name: str) -> None:
                if name == stop_after:
                    os._exit(137)

            store = MetadataStore(url)
            upgrade(store, say=lambda _: None, after_step=after)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


# -- the real history ------------------------------------------------------------------------


def make_0_1_0(url: str) -> None:
    store = MetadataStore(url)
    try:
        store.migrate("0005")  # what 0.1.0 created; it recorded no cluster version
        seed_manifests(store)
    finally:
        store.dispose()


def test_a_0_1_0_cluster_is_known_by_its_schema_and_must_be_upgraded(tmp_path, real_history):
    url = new_db(tmp_path)
    make_0_1_0(url)
    store = MetadataStore(url)
    try:
        assert read_state(store).version == "0.1.0"
        with pytest.raises(UpgradeRefused, match=r"runs Wharf 0\.1\.0 .* run `wharf upgrade`"):
            check_start(store)
        outcome = upgrade(store, say=lambda _: None)
        assert outcome.ran == [
            "begin",
            "schema 0006",
            "0.2.1: repair stored names",
            "start background migrations",
            "finish",
        ]
        state = check_start(store)
        assert (state.version, state.schema, state.upgrade) == ("0.2.1", "0006", None)
        with store.engine.connect() as conn:
            jobs = conn.execute(select(t.jobs.c.action, t.jobs.c.retries_left)).all()
            sizes = conn.execute(select(t.manifests.c.image_size)).scalars().all()
        assert [tuple(j) for j in jobs] == [(MIGRATION_JOB, 2)]
        assert sizes == [None, None, None]  # left to the background migration
        identities = IdentityStore(store)
        assert background.pending(store, identities) == ["manifest-image-size"]
        assert background.run_pending(store, identities, lambda _: None, lambda: False)
        with store.engine.connect() as conn:
            rows = conn.execute(select(t.manifests.c.content, t.manifests.c.image_size)).all()
        assert all(size == len(content) + 1007 for content, size in rows)
        assert all(size == image_size("", content) for content, size in rows)
        assert background.pending(store, identities) == []
        assert upgrade(store, say=lambda _: None).already
    finally:
        store.dispose()


def test_the_real_upgrade_killed_after_each_step_ends_as_an_uninterrupted_one(
    tmp_path, real_history
):
    reference = new_db(tmp_path, "reference")
    make_0_1_0(reference)
    assert run_in_child(reference) == 0
    expected = dump(reference)
    store = MetadataStore(reference)
    try:
        names = ["begin", *steps_for(store, "0.1.0", "0.2.1", "0005"), "finish"]
    finally:
        store.dispose()
    assert names == [
        "begin",
        "schema 0006",
        "0.2.1: repair stored names",
        "start background migrations",
        "finish",
    ]
    for i, name in enumerate(names):
        url = new_db(tmp_path, f"killed{i}")
        make_0_1_0(url)
        assert run_in_child(url, stop_after=name) == 137
        assert run_in_child(url) == 0, name
        assert dump(url) == expected, f"killed after {name!r}"


# -- a synthetic history -----------------------------------------------------------------


def make_cluster(url: str, install, version: str) -> None:
    install(version)
    store = MetadataStore(url)
    try:
        initialize(store)
    finally:
        store.dispose()


def notes(url: str) -> list[str]:
    store = MetadataStore(url)
    try:
        return IdentityStore(store).get_setting(synthetic_history.NOTES) or []
    finally:
        store.dispose()


def test_data_steps_run_once_each_in_release_order(tmp_path, synthetic):
    url = new_db(tmp_path)
    make_cluster(url, synthetic, "1.0.0")
    synthetic("1.0.2")
    assert run_in_child(url) == 0
    assert notes(url) == ["1.0.2 seed"]
    synthetic("1.1.0")
    assert run_in_child(url) == 0
    synthetic("2.0.0")
    assert run_in_child(url) == 0
    assert notes(url) == ["1.0.2 seed", "1.1.0 first", "1.1.0 second", "2.0.0 major"]
    store = MetadataStore(url)
    try:
        assert check_start(store).version == "2.0.0"
        with store.engine.connect() as conn:
            assert conn.execute(select(t.jobs.c.action)).scalars().all() == [MIGRATION_JOB]
    finally:
        store.dispose()


def test_unsupported_paths_and_mismatches_are_refused(tmp_path, synthetic):
    url = new_db(tmp_path)
    make_cluster(url, synthetic, "1.0.0")
    store = MetadataStore(url)
    try:
        synthetic("1.2.0")
        with pytest.raises(UpgradeRefused, match=r"upgrade to 1\.1\.x first"):
            upgrade(store, say=lambda _: None)
        with pytest.raises(UpgradeRefused, match=r"upgrade to 1\.1\.x first"):
            check_start(store)  # a replica of 1.2.0 may not start either
        synthetic("3.0.0")
        with pytest.raises(UpgradeRefused, match=r"upgrade to 2\.0\.0 first"):
            upgrade(store, say=lambda _: None)
        synthetic("0.9.0")
        with pytest.raises(UpgradeRefused, match=r"install Wharf 1\.0\.0"):
            check_start(store)
        with pytest.raises(UpgradeRefused, match="downgrades are not supported"):
            upgrade(store, say=lambda _: None)
        synthetic("1.0.7")  # supported by the rules, but no such release exists
        with pytest.raises(UpgradeRefused, match="not a release"):
            upgrade(store, say=lambda _: None)
        assert read_state(store).upgrade is None  # refusals change nothing
        # An unfinished upgrade to 1.1.0: 1.1.0 may not start, 1.0.0 still may, and
        # another target is refused until it is finished.
        synthetic("1.1.0")
        assert run_in_child(url, stop_after="1.1.0: first") == 137
        with pytest.raises(UpgradeRefused, match="run `wharf upgrade` to finish it"):
            check_start(store)
        synthetic("1.0.0")
        assert check_start(store).version == "1.0.0"
        synthetic("1.0.2")
        with pytest.raises(UpgradeRefused, match=r"install Wharf 1\.1\.0 here"):
            upgrade(store, say=lambda _: None)
        synthetic("1.1.0")
        assert upgrade(store, say=lambda _: None).ran == [
            "1.1.0: second",
            "start background migrations",
            "finish",
        ]
    finally:
        store.dispose()


def test_a_synthetic_upgrade_killed_anywhere_ends_as_an_uninterrupted_one(tmp_path, synthetic):
    def fresh(name: str) -> str:
        url = new_db(tmp_path, name)
        make_cluster(url, synthetic, "1.0.2")
        store = MetadataStore(url)
        try:
            seed_manifests(store)
        finally:
            store.dispose()
        synthetic("1.1.0")
        return url

    reference = fresh("reference")
    assert run_in_child(reference) == 0
    expected = dump(reference)
    names = ["begin", "1.1.0: first", "1.1.0: second", "start background migrations", "finish"]
    for i, name in enumerate(names):
        url = fresh(f"after{i}")
        assert run_in_child(url, stop_after=name) == 137
        assert run_in_child(url) == 0
        assert dump(url) == expected, f"killed after {name!r}"
    for i, note in enumerate(["1.1.0 first", "1.1.0 second"]):
        url = fresh(f"inside{i}")
        assert run_in_child(url, crash_in=note) == 137
        assert run_in_child(url) == 0
        assert dump(url) == expected, f"killed inside {note!r}"
    assert notes(reference) == ["1.1.0 first", "1.1.0 second"]


def test_the_image_size_backfill_fits_sizes_stored_before_they_were_bounded(tmp_path, real_history):
    """0.1.0 accepted any non-negative size: a manifest whose layers add up past what a
    BigInteger holds gets the largest size it can hold, rather than failing the migration."""
    url = new_db(tmp_path)
    make_0_1_0(url)
    store = MetadataStore(url)
    try:
        doc = json.loads(MANIFEST)
        doc["layers"] = [{**doc["layers"][0], "size": 2**64}, {**doc["layers"][0], "size": 5}]
        with store._write() as conn:
            conn.execute(
                t.manifests.update()
                .where(t.manifests.c.digest == f"sha256:{0:064x}")
                .values(content=json.dumps(doc).encode())
            )
        upgrade(store, say=lambda _: None)
        identities = IdentityStore(store)
        assert background.run_pending(store, identities, lambda _: None, lambda: False)
        with store.engine.connect() as conn:
            sizes = conn.execute(
                select(t.manifests.c.image_size).order_by(t.manifests.c.digest)
            ).scalars()
            assert list(sizes) == [2**63 - 1, len(MANIFEST) + 1 + 1007, len(MANIFEST) + 2 + 1007]
    finally:
        store.dispose()
