"""Fixtures of the access-control tests: a registry of their own, an admin client, and
factories of users and organisations."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import WharfServer, start_server

from .helpers import OrgSetup, User, create_org, create_user, org_with_team_member


@pytest.fixture(scope="session")
def wharf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """Overrides the session-wide registry for these tests only (and for the `anon` and
    `client` fixtures they use): they make accounts and public repositories, which the other
    suites' shared registry must not show (its anonymous catalog is expected to be empty)."""
    server = start_server(tmp_path_factory.mktemp("wharf-access"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin(wharf_server) -> Iterator[httpx.Client]:
    """The system administrator, for the whole session (its Basic credentials stay cached)."""
    with wharf_server.client() as c:
        yield c


@pytest.fixture
def make_user(admin: httpx.Client) -> Iterator[Callable[..., User]]:
    """make_user(**fields) -> User: a new non-admin user with its own client."""
    made: list[User] = []

    def make(**extra) -> User:
        user = create_user(admin, **extra)
        made.append(user)
        return user

    yield make
    for user in made:
        user.close()


@pytest.fixture
def user(make_user) -> User:
    return make_user()


@pytest.fixture
def make_org(admin: httpx.Client) -> Callable[..., str]:
    return lambda **extra: create_org(admin, **extra)


@pytest.fixture
def team_member(admin: httpx.Client, make_user) -> OrgSetup:
    """An organisation, a team in it, and a user who is a plain member of both."""
    return org_with_team_member(admin, make_user())
