"""Password hashing with argon2id."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP's argon2id recommendation (19 MiB, 2 passes, 1 lane). The library default takes 64 MiB
# per verification, which a burst of logins multiplies; hashes record their own parameters, so
# these can be raised later without invalidating stored passwords.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_dummy_hash: str | None = None


def spend_verification(password: str) -> None:
    """Take as long as checking a password does, when there is no hash to check it against:
    a refusal then takes the same time whether or not the username exists."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password("wharf: no such user")
    verify_password(_dummy_hash, password)
