"""Authentication: who is calling, from an Authorization header or a login form.

A caller proves who they are with a password (local, or bound against LDAP for directory
users), a personal access token in place of the password, or a bearer JWT from
`/auth/token`. Verified credentials are remembered briefly (argon2 is deliberately slow), and
forgotten at once when access control changes (see `wharf.settings.Policy`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from datetime import UTC, datetime
from typing import Protocol

from wharf.auth.audit import Audit
from wharf.auth.identity import ANONYMOUS, Identity
from wharf.auth.passwords import spend_verification, verify_password
from wharf.auth.throttle import LoginThrottle, TooManyAttempts
from wharf.auth.tokens import InvalidToken, TokenService, granted_from_claims, hash_pat
from wharf.faults import log_failure
from wharf.metadata.identity import IdentityStore
from wharf.metadata.models import User
from wharf.metadata.store import MetadataStore
from wharf.settings import Policy

log = logging.getLogger("wharf.auth")

__all__ = ["ANONYMOUS", "AuthService", "Identity", "InvalidCredentials", "TooManyAttempts"]


class InvalidCredentials(Exception):
    """Credentials were given but are wrong (or the account or token is inactive).

    The message is for the client; `reason`, for the audit trail, may say more (a client
    is not told that a password it guessed belongs to a deactivated account)."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class Directory(Protocol):
    """An external directory (LDAP) that can check a password and provision the user."""

    def login(self, username: str, password: str) -> User | None: ...


class AuthService:
    # A verified password is remembered for this long, so that argon2 runs once per client
    # per minute rather than on every request.
    CACHE_SECONDS = 60.0
    CACHE_MAX = 10_000
    TOKEN_TOUCH_SECONDS = 60.0  # how often a token's "last used" time is written

    def __init__(
        self,
        store: MetadataStore,
        identities: IdentityStore,
        policy: Policy,
        tokens: TokenService,
        audit: Audit,
        directory: Directory | None = None,
    ) -> None:
        self.store = store
        self.identities = identities
        self.policy = policy
        self.tokens = tokens
        self.audit = audit
        self.directory = directory
        self.throttle = LoginThrottle()
        self._verified: dict[bytes, tuple[Identity, float, str]] = {}
        self._touched: dict[str, float] = {}

    # -- headers ----------------------------------------------------------------------------

    def cached(self, authorization: str | None) -> Identity | None:
        """The identity for a header verified recently, without blocking; None if unknown."""
        if not authorization:
            return ANONYMOUS
        hit = self._verified.get(_cache_key(authorization))
        if hit and hit[1] > time.monotonic() and hit[2] == self.policy.epoch():
            return hit[0]
        return None

    def authenticate(
        self, authorization: str | None, client: str | None = None, *, bearer: bool = True
    ) -> Identity:
        """Identity for an Authorization header (Basic, or Bearer when `bearer`); ANONYMOUS
        when there is none. Blocking: may run argon2 or an LDAP bind."""
        if not authorization:
            return ANONYMOUS
        # The epoch as it was before the check: a change that lands while argon2 runs moves it
        # and so drops this entry, instead of being cached as if it preceded the check.
        epoch = self.policy.epoch()
        scheme, _, value = authorization.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            username, password = parse_basic(value)
            identity = self.login(username, password, client)
            lifetime = self.CACHE_SECONDS
        elif scheme == "bearer" and bearer:
            identity, expires = self.bearer(value.strip())
            lifetime = min(self.CACHE_SECONDS, max(0.0, expires - time.time()))
        else:
            raise InvalidCredentials("unsupported authorization scheme")
        if len(self._verified) >= self.CACHE_MAX:
            self._verified.clear()
        self._verified[_cache_key(authorization)] = (identity, time.monotonic() + lifetime, epoch)
        return identity

    # -- passwords and personal access tokens -----------------------------------------------

    def login(self, username: str, secret: str, client: str | None = None) -> Identity:
        """Check a username with a password or personal access token."""
        settings = self.policy.settings()
        # Account names are lowercase, and a directory may match "Bob" or " bob " to bob: one
        # counter for all the spellings, or each would get its own allowance of guesses.
        key = (username.strip().casefold(), client or "")
        window = float(settings.failedLoginWindowSeconds)
        try:
            self.throttle.check(key, settings.failedLoginLimit, window)
        except TooManyAttempts:
            self.audit.record(
                "login_throttled", username, actor=username, client=client, success=False
            )
            raise
        try:
            identity = self._check_secret(username, secret)
        except InvalidCredentials as e:
            self.throttle.failed(key, window)
            self.audit.record(
                "login_failed",
                username,
                actor=username,
                client=client,
                success=False,
                details={"reason": e.reason},
            )
            raise
        self.throttle.succeeded(key)
        self.audit.record(
            "login", username, actor=username, client=client, details={"method": identity.method}
        )
        return identity

    def _check_secret(self, username: str, secret: str) -> Identity:
        if not secret or "\x00" in username or "\x00" in secret:
            raise InvalidCredentials("invalid username or password")
        # Any secret might be a token: a SHA-256 lookup is cheap, and trying it first means a
        # token is never sent through argon2 or to the directory.
        hashed = hash_pat(secret)
        found = self.identities.token_login(hashed)
        if found is not None:
            owner, is_admin, usable = found
            if not hmac.compare_digest(owner.encode(), username.encode()) or not usable:
                raise InvalidCredentials("invalid username or token")
            self._touch_token(hashed)
            user = self.store.get_user(owner)
            return Identity(owner, is_admin, user.id if user else None, "token")
        user = self.store.get_user(username)
        if user is not None and user.source == "local":
            if user.password_hash is None:
                spend_verification(secret)
                raise InvalidCredentials("invalid username or password")
            if not verify_password(user.password_hash, secret):
                raise InvalidCredentials("invalid username or password")
            if not user.is_active:
                raise InvalidCredentials("invalid username or password", "account is deactivated")
            return Identity(user.username, user.is_admin, user.id, "password")
        if self.directory is not None:
            found_user = self.directory.login(username, secret)
            if found_user is not None:
                if not found_user.is_active:
                    raise InvalidCredentials(
                        "invalid username or password", "account is deactivated"
                    )
                return Identity(found_user.username, found_user.is_admin, found_user.id, "ldap")
        # No such user: refuse in the time a wrong password takes, so that timing does not
        # tell which usernames exist.
        spend_verification(secret)
        raise InvalidCredentials("invalid username or password")

    def _touch_token(self, hashed: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(hashed, 0.0) < self.TOKEN_TOUCH_SECONDS:
            return
        if len(self._touched) > self.CACHE_MAX:
            self._touched.clear()
        self._touched[hashed] = now
        try:
            self.identities.touch_token(hashed, datetime.now(UTC))
        except Exception as e:
            log_failure(log, "could not record token use", e)

    # -- bearer tokens ----------------------------------------------------------------------

    def bearer(self, token: str) -> tuple[Identity, float]:
        """(identity, expiry as epoch seconds) for a bearer JWT issued by /auth/token."""
        try:
            claims = self.tokens.verify(token)
        except InvalidToken as e:
            raise InvalidCredentials(f"invalid bearer token: {e}") from None
        granted = granted_from_claims(claims)
        subject = claims["sub"]
        if not subject:
            return Identity(None, method="bearer", granted=granted), float(claims["exp"])
        user = self.store.get_user(subject)
        if user is None or not user.is_active or claims.get("uid") != user.id:
            raise InvalidCredentials("invalid bearer token: account is unknown or deactivated")
        identity = Identity(user.username, user.is_admin, user.id, "bearer", granted)
        return identity, float(claims["exp"])

    def credential_fingerprint(self, identity: Identity, secret: str) -> str:
        """What a refresh token is bound to: the token used to log in, or the password hash
        (so a password change or token deactivation revokes refresh tokens)."""
        if identity.method == "token":
            return "pat:" + hash_pat(secret)
        user = self.store.get_user(identity.username or "")
        material = (user.password_hash or user.source) if user else ""
        return "pw:" + hashlib.sha256(material.encode()).hexdigest()[:32]

    def refresh(self, refresh_token: str) -> Identity:
        """The identity a refresh token stands for, if it and its credential are still valid."""
        try:
            claims = self.tokens.verify(refresh_token, use="refresh")
        except InvalidToken as e:
            raise InvalidCredentials(f"invalid refresh token: {e}") from None
        user = self.store.get_user(claims["sub"])
        if user is None or not user.is_active or claims.get("uid") != user.id:
            raise InvalidCredentials("invalid refresh token: account is unknown or deactivated")
        credential = str(claims.get("cred", ""))
        if credential.startswith("pat:"):
            found = self.identities.token_login(credential[4:])
            if found is None or found[0] != user.username or not found[2]:
                raise InvalidCredentials("invalid refresh token: its access token was revoked")
            method = "token"
        else:
            material = user.password_hash or user.source
            current = "pw:" + hashlib.sha256(material.encode()).hexdigest()[:32]
            if not hmac.compare_digest(current, credential):
                raise InvalidCredentials("invalid refresh token: the password has changed")
            method = "password"
        return Identity(user.username, user.is_admin, user.id, method)


def parse_basic(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidCredentials("malformed basic credentials") from None
    username, sep, password = decoded.partition(":")
    if not sep or not username:
        raise InvalidCredentials("malformed basic credentials")
    return username, password


def _cache_key(authorization: str) -> bytes:
    # A hash of the header, so the cache never holds a password.
    return hashlib.sha256(authorization.encode()).digest()
