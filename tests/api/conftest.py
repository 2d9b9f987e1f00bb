"""Fixtures of the protocol-level tests."""

from __future__ import annotations

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
    store = MetadataStore(wharf_server.db_url)
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
