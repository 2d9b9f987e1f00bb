"""Who is calling: the result of authentication, handed to every authorisation check."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    username: str | None
    is_admin: bool = False
    user_id: int | None = None
    # How the caller proved it: "password", "token" (personal access token), "ldap",
    # "bearer" (a JWT from /auth/token) or "anonymous".
    method: str = "anonymous"
    # For "bearer": {(type, name, action)} the token grants; nothing beyond is allowed.
    granted: frozenset[tuple[str, str, str]] | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.username is None

    def token_allows(self, kind: str, name: str, action: str) -> bool:
        """For bearer callers, whether the token lists the action; True for other callers."""
        if self.granted is None:
            return True
        return (kind, name, action) in self.granted or (kind, name, "*") in self.granted


ANONYMOUS = Identity(None)
