"""Fixtures of the security tests: a small population of users, an organisation with a
read-only team, and private and public repositories with content, on the shared server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .helpers import Account, Admin, Image, push_image, push_referrer


@dataclass
class World:
    admin: Admin
    alice: Account  # owns nothing anybody else cares about; the usual attacker
    bob: Account  # owns bob/private (with a referrer) and bob/public
    carol: Account  # read-only on org/app through the org's "readers" team
    org: str
    private: Image  # bob's private image
    referrer: str  # digest of an artifact referring to `private`
    public: Image  # bob's public image
    org_app: Image  # org/app: carol may pull, not push
    org_secret: Image  # org/secret: no grant for anyone but admins

    @property
    def missing(self) -> str:
        """A repository that does not exist, in bob's namespace."""
        return f"{self.bob.name}/nosuch"


@pytest.fixture(scope="session")
def admin(wharf_server) -> Iterator[Admin]:
    api = Admin(wharf_server)
    yield api
    api.close()


@pytest.fixture(scope="session")
def world(wharf_server, admin: Admin) -> World:
    alice, bob, carol = admin.user("alice"), admin.user("bob"), admin.user("carol")
    org = admin.org("acme")
    admin.team(org, "readers", carol.name)
    with bob.client() as c:
        private = push_image(c, f"{bob.name}/private")
        referrer = push_referrer(c, private)
        public = push_image(c, f"{bob.name}/public")
    admin.visibility(public.repository, "public")
    org_app = push_image(admin.http, f"{org}/app")
    org_secret = push_image(admin.http, f"{org}/secret")
    admin.grant(org_app.repository, "readers", "read-only")
    return World(admin, alice, bob, carol, org, private, referrer, public, org_app, org_secret)
