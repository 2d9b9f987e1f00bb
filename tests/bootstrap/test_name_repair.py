"""Release 0.2.1's data step on both metadata stores: a 0.2.0 cluster holding names stored
while validators matched with `^...$` (a trailing newline passed) is upgraded; refused tags
are deleted, refused accounts, teams and repositories renamed (users deactivated), nothing
referenced is lost, and every change is reported, logged and audited. A new cluster has
nothing to repair."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select

from tests.bootstrap.test_upgrade_engine import new_db
from wharf.metadata import schema as t
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore
from wharf.upgrade import history
from wharf.upgrade.engine import CLUSTER_SETTING, _set, check_start, initialize, upgrade

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "x", "manifests": []}).encode()


@pytest.fixture(autouse=True)
def real_history(monkeypatch):
    monkeypatch.delenv(history.HISTORY_ENV, raising=False)
    history._override.cache_clear()
    yield
    history._override.cache_clear()


def make_0_2_0(url: str) -> MetadataStore:
    """A 0.2.0 cluster (schema 0006, version recorded)."""
    store = MetadataStore(url)
    store.migrate("0006")
    with store._write() as conn:
        _set(store, conn, CLUSTER_SETTING, {"version": "0.2.0"})
    return store


def tag(store: MetadataStore, repository: str, *names: str) -> str:
    repo = store.ensure_repository(repository)
    body = MANIFEST + repository.encode().hex().encode()  # distinct per repository
    digest = f"sha256:{repo.id:064x}"
    store.put_manifest(
        repo.id,
        digest=digest,
        sha256=digest,
        sha512=f"sha512:{repo.id:0128x}",
        media_type="application/vnd.oci.image.index.v1+json",
        content=body,
        artifact_type=None,
        subject=None,
        annotations=None,
        references=(),
        tags=names,
    )
    return digest


def rows(store: MetadataStore, *columns) -> list[tuple]:
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(select(*columns)))


def tags(store: MetadataStore) -> list[tuple[str, str]]:
    q = select(t.repositories.c.name, t.tags.c.name).join(
        t.repositories, t.repositories.c.id == t.tags.c.repository_id
    )
    with store.engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(q))


def test_upgrade_to_0_2_1_repairs_and_reports_refused_names(tmp_path, caplog):
    store = make_0_2_0(new_db(tmp_path))
    identities = IdentityStore(store)
    try:
        alice = store.create_user("alice\n", "x", is_admin=False)  # "alice" is free
        store.create_user("bob", "x", is_admin=False)
        bob2 = store.create_user("bob\n", "x", is_admin=False)  # "bob" is taken
        org = identities.create_account("acme\n", is_org=True)
        team = identities.create_team(org.id, "dev\n")
        identities.add_team_member(team, alice.id)
        identities.create_account("carol", is_org=False)
        # A directory user provisioned under its mixed-case directory name, and one with a space.
        identities.create_account("JSmith", is_org=False, source="ldap", ldap_dn="uid=JSmith")
        identities.create_account("j doe", is_org=False, source="ldap", ldap_dn="uid=j doe")
        kept = tag(store, "alice\n/app", "v1", "v2\n")
        other = tag(store, "carol/tool\n", "latest")
        good = tag(store, "dave/ok", "stable", "v1\n")

        lines: list[str] = []
        with caplog.at_level(logging.WARNING, logger="wharf.upgrade"):
            outcome = upgrade(store, say=lines.append)
        assert outcome.ran == ["begin", "0.2.1: repair stored names", "finish"]
        assert check_start(store).version == "0.2.1"

        # Tags: the refused ones are gone, the others and every manifest are kept.
        assert tags(store) == [
            ("alice/app", "v1"),
            ("carol/tool", "latest"),
            ("dave/ok", "stable"),
        ]
        assert len(rows(store, t.manifests.c.digest)) == 3
        # Accounts: renamed (a free cleaned name, else renamed-<id>); users deactivated.
        accounts = {
            name: (is_org, active)
            for name, is_org, active in rows(
                store, t.accounts.c.name, t.accounts.c.is_org, t.accounts.c.is_active
            )
        }
        assert accounts == {
            "alice": (False, False),
            "bob": (False, True),
            f"renamed-{bob2.id}": (False, False),
            "acme": (True, True),
            "carol": (False, True),
            "jsmith": (False, True),  # logins map "JSmith" to "jsmith": it still works
            "jdoe": (False, False),
        }
        # Teams keep their members; repositories keep their content and move with the account.
        assert rows(store, t.teams.c.name) == [("dev",)]
        assert [m.name for m in identities.team_members(team.id)] == ["alice"]
        assert rows(store, t.repositories.c.name, t.repositories.c.namespace) == [
            ("alice/app", "alice"),
            ("carol/tool", "carol"),
            ("dave/ok", "dave"),
        ]
        assert store.get_manifest_by_tag("alice/app", "v1").digest == kept
        assert store.get_manifest_by_tag("carol/tool", "latest").digest == other

        report = [line.strip() for line in lines if line.startswith("    ")]
        assert len(report) == 9, lines
        for expected in [
            f"deleted the tag 'v2\\n' of 'alice\\n/app', an invalid tag name (it pointed at {kept}",
            f"deleted the tag 'v1\\n' of 'dave/ok', an invalid tag name (it pointed at {good}",
            "renamed the user 'alice\\n' to 'alice', an invalid account name (1 repositories "
            "moved to the namespace 'alice'); deactivated",
            f"renamed the user 'bob\\n' to 'renamed-{bob2.id}'",
            "renamed the organisation 'acme\\n' to 'acme', an invalid account name",
            "renamed the user 'JSmith' to 'jsmith', an invalid account name",
            "renamed the user 'j doe' to 'jdoe', an invalid account name; deactivated",
            "renamed the team 'dev\\n' of 'acme' to 'dev'",
            "renamed the repository 'carol/tool\\n' to 'carol/tool'",
        ]:
            assert any(line.startswith(expected) for line in report), (expected, report)
        assert [r.getMessage() for r in caplog.records] == [f"upgrade: {x}" for x in report]
        events = identities.list_events(actor="wharf upgrade")
        assert sorted(e.action for e in events) == sorted(
            ["upgrade_tag_deleted"] * 2
            + ["upgrade_account_renamed"] * 5
            + ["upgrade_team_renamed", "upgrade_repository_renamed"]
        )
    finally:
        store.dispose()


def test_a_new_cluster_runs_0_2_1_with_nothing_to_repair(tmp_path):
    store = MetadataStore(new_db(tmp_path))
    try:
        assert initialize(store) == "0.2.1"
        assert check_start(store).version == "0.2.1"
        assert upgrade(store, say=lambda _: None).already
    finally:
        store.dispose()


def test_an_upgrade_with_nothing_refused_reports_nothing(tmp_path):
    store = make_0_2_0(new_db(tmp_path))
    try:
        store.create_user("erin", "x", is_admin=False)
        tag(store, "erin/app", "v1")
        lines: list[str] = []
        upgrade(store, say=lines.append)
        assert lines == [
            "upgrading the cluster from 0.2.0 to 0.2.1 (patch upgrade)",
            "  0.2.1: repair stored names",
            "the cluster now runs 0.2.1",
        ]
        assert tags(store) == [("erin/app", "v1")]
    finally:
        store.dispose()
