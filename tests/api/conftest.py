"""Fixtures of the protocol-level tests."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from wharf.auth.passwords import hash_password
from wharf.metadata.store import MetadataStore


@dataclass(frozen=True)
class User:
    username: str
    password: str

    @property
    def auth(self) -> tuple[str, str]:
        return (self.username, self.password)


@pytest.fixture(scope="session")
def user(wharf_server) -> User:
    """A non-admin account on the shared server (created in its metadata store directly: the
    registry API has no user management). It may do everything under `<username>/`."""
    username = f"user{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    store = MetadataStore(f"sqlite:///{(wharf_server.data_dir / 'wharf.db').resolve()}")
    try:
        store.create_user(username, hash_password(password), is_admin=False)
    finally:
        store.dispose()
    return User(username, password)


@pytest.fixture
def user_client(wharf_server, user: User) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=wharf_server.url, auth=user.auth, timeout=60, follow_redirects=False
    ) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to the test, always valid.

    Overrides the top-level fixture, whose truncated test names can end in `_` or contain
    `+`/`.`-runs that the name grammar refuses (e.g. `..._after_-4de979`).
    """
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    return f"test/{stem}-{secrets.token_hex(3)}"
