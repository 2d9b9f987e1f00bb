"""Docker token authentication: the JWTs that `/auth/token` issues and `/v2/` accepts, and
the secrets of personal access tokens.

Bearer tokens are ES256 JWTs signed with a key kept in the metadata store, so that every
replica issues and verifies the same tokens. Verification accepts only ES256 (never `none`,
never an HMAC with the public key), checks signature, issuer, audience, expiry and the
token's use, and caps what a token grants to what its `access` claim lists.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from wharf.metadata.identity import IdentityStore

ISSUER = "wharf"
SERVICE = "wharf"  # the `service` clients echo from the challenge; also the JWT audience
ALGORITHM = "ES256"
SIGNING_KEY = "token_signing_key"
LEEWAY_SECONDS = 30
REFRESH_SECONDS = 90 * 24 * 3600

# Personal access tokens: the secret is shown once; only its SHA-256 is stored. A PAT is
# 256 random bits, so a fast hash is enough (a slow one guards low-entropy passwords).
PAT_PREFIX = "wharf_pat_"


def new_pat() -> tuple[str, str]:
    """A new personal access token: (secret, hashed)."""
    secret = PAT_PREFIX + secrets.token_urlsafe(32)
    return secret, hash_pat(secret)


def hash_pat(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_pat(secret: str) -> bool:
    return secret.startswith(PAT_PREFIX)


class InvalidToken(Exception):
    """A bearer or refresh token that is malformed, forged, expired or meant for elsewhere."""


@dataclass(frozen=True)
class Scope:
    type: str  # "repository" | "registry"
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Scopes of a token request; several may come in one space-separated value.
    Malformed entries are dropped (nothing is granted for them)."""
    scopes = []
    for value in values:
        for item in value.split():
            kind, sep, rest = item.partition(":")
            name, sep2, actions = rest.rpartition(":")
            if not sep or not sep2 or not name:
                continue
            kind = kind.split("(", 1)[0]  # "repository(plugin)" -> "repository"
            wanted = tuple(dict.fromkeys(a for a in actions.split(",") if a))
            scopes.append(Scope(kind, name, wanted))
    return scopes


class TokenService:
    def __init__(self, identities: IdentityStore) -> None:
        self.identities = identities
        self._lock = threading.Lock()
        self._private: ec.EllipticCurvePrivateKey | None = None
        self._kid = ""

    def _key(self) -> ec.EllipticCurvePrivateKey:
        if self._private is None:
            with self._lock:
                if self._private is None:
                    self._private = self._load_or_create()
                    der = self._private.public_key().public_bytes(
                        serialization.Encoding.DER,
                        serialization.PublicFormat.SubjectPublicKeyInfo,
                    )
                    digest = hashlib.sha256(der).digest()[:15]
                    self._kid = base64.b32encode(digest).decode().rstrip("=")
        return self._private

    def _load_or_create(self) -> ec.EllipticCurvePrivateKey:
        pem = self.identities.get_setting(SIGNING_KEY)
        if pem is None:
            key = ec.generate_private_key(ec.SECP256R1())
            new = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ).decode()
            # Two replicas may race here; whichever key lands is read back and used by both.
            self.identities.set_setting_if_missing(SIGNING_KEY, new)
            pem = self.identities.get_setting(SIGNING_KEY)
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise RuntimeError("the stored token signing key is not an EC key")
        return key

    def issue(
        self,
        subject: str | None,
        access: list[dict[str, Any]],
        lifetime: int,
        *,
        user_id: int | None = None,
        audience: str = SERVICE,
    ) -> tuple[str, int, int]:
        """(token, expires_in, issued_at) for `access` (already reduced to what is granted)."""
        key = self._key()
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject or "",
            "aud": audience,
            "exp": now + lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "use": "access",
            "access": access,
        }
        if subject:
            # The account's id as well as its name: a token never outlives a deleted account
            # into a new one of the same name.
            claims["uid"] = user_id
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": self._kid})
        return token, lifetime, now

    def issue_refresh(self, subject: str, credential: str, user_id: int | None) -> str:
        """A long-lived token for the OAuth2 refresh grant; `credential` binds it to the
        password or access token it was obtained with, so changing that revokes it."""
        key = self._key()
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + REFRESH_SECONDS,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "use": "refresh",
            "cred": credential,
            "uid": user_id,
        }
        return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": self._kid})

    def verify(self, token: str, *, use: str = "access") -> dict[str, Any]:
        key = self._key()
        try:
            claims = jwt.decode(
                token,
                key.public_key(),
                algorithms=[ALGORITHM],
                audience=SERVICE,
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        if claims.get("use") != use:
            raise InvalidToken(f"not an {use} token")
        if use == "access" and not isinstance(claims.get("access"), list):
            raise InvalidToken("token has no access claim")
        return claims


def granted_from_claims(claims: dict[str, Any]) -> frozenset[tuple[str, str, str]]:
    """{(type, name, action)} listed in a verified token's `access` claim."""
    granted = set()
    for entry in claims.get("access", []):
        if not isinstance(entry, dict):
            continue
        kind, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if isinstance(kind, str) and isinstance(name, str) and isinstance(actions, list):
            granted.update((kind, name, a) for a in actions if isinstance(a, str))
    return frozenset(granted)
