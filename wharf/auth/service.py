"""Who is calling (authentication) and what they may do to a repository (authorisation).

This issue's model: the admin may do everything, a user may do everything in their own
namespace (`username/...`), anonymous callers may pull public repositories. The access-control
issue replaces `AuthService.allowed_actions` with teams and grants; handlers only ever ask it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass

from wharf.auth.passwords import verify_password
from wharf.metadata.store import MetadataStore

PULL, PUSH, DELETE = "pull", "push", "delete"
ALL_ACTIONS = frozenset({PULL, PUSH, DELETE})
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Identity:
    username: str | None
    is_admin: bool = False

    @property
    def is_anonymous(self) -> bool:
        return self.username is None


ANONYMOUS = Identity(None)


class InvalidCredentials(Exception):
    """Credentials were given but are wrong (or the account is inactive)."""


class AuthService:
    # A verified password is remembered for this long, so that argon2 (deliberately slow)
    # runs once per client per minute rather than on every request.
    CACHE_SECONDS = 60.0
    CACHE_MAX = 10_000

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._verified: dict[bytes, tuple[Identity, float]] = {}

    def authenticate(self, authorization: str | None) -> Identity:
        """Identity for an Authorization header; ANONYMOUS when there is none."""
        if not authorization:
            return ANONYMOUS
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "basic":
            raise InvalidCredentials("unsupported authorization scheme")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidCredentials("malformed basic credentials") from None
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise InvalidCredentials("malformed basic credentials")
        identity = self.verify(username, password)
        if len(self._verified) >= self.CACHE_MAX:
            self._verified.clear()
        self._verified[_cache_key(authorization)] = (
            identity,
            time.monotonic() + self.CACHE_SECONDS,
        )
        return identity

    def cached(self, authorization: str | None) -> Identity | None:
        """The identity for a header verified recently, without blocking; None if unknown."""
        if not authorization:
            return ANONYMOUS
        hit = self._verified.get(_cache_key(authorization))
        if hit and hit[1] > time.monotonic():
            return hit[0]
        return None

    def verify(self, username: str, password: str) -> Identity:
        user = self.store.get_user(username)
        if user is None or not user.is_active or not verify_password(user.password_hash, password):
            raise InvalidCredentials("invalid username or password")
        return Identity(user.username, user.is_admin)

    def allowed_actions(
        self, identity: Identity, repository: str, *, is_public: bool
    ) -> frozenset[str]:
        if identity.is_admin:
            return ALL_ACTIONS
        if identity.username and repository.startswith(identity.username + "/"):
            return ALL_ACTIONS
        if is_public:
            return frozenset({PULL})
        return NONE


def _cache_key(authorization: str) -> bytes:
    # A hash of the header, so the cache never holds a password.
    return hashlib.sha256(authorization.encode()).digest()
