"""Input checks shared by the management services (names, passwords, levels)."""

from __future__ import annotations

import re

from wharf.auth.access import LEVELS
from wharf.management.errors import Invalid

# An account is a namespace: its name is one component of a repository name.
# Matched whole (fullmatch): with `$`, "name\n" would pass.
_NAME = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TEAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_ACCOUNT_NAME = 64
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
MAX_LABEL = 255
RESERVED_ACCOUNT_NAMES = frozenset({"me"})  # /api/v0/accounts/me is the caller


def account_name(name: object) -> str:
    if (
        not isinstance(name, str)
        or not name
        or len(name) > MAX_ACCOUNT_NAME
        or not _NAME.fullmatch(name)
    ):
        raise Invalid(
            "account names are 1-64 lowercase letters, digits and separators (. _ -), "
            "starting and ending with a letter or digit",
            "INVALID_ACCOUNT_NAME",
        )
    if name in RESERVED_ACCOUNT_NAMES:
        raise Invalid(f"the account name {name!r} is reserved", "INVALID_ACCOUNT_NAME")
    return name


def repository_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 190 or not _NAME.fullmatch(name):
        raise Invalid(
            "repository names are lowercase letters, digits and separators (. _ -), "
            "starting and ending with a letter or digit",
            "INVALID_REPOSITORY_NAME",
        )
    return name


def team_name(name: object) -> str:
    if not isinstance(name, str) or not _TEAM.fullmatch(name):
        raise Invalid(
            "team names are 1-100 letters, digits, '.', '_' or '-', starting with a letter or"
            " digit",
            "INVALID_TEAM_NAME",
        )
    return name


def password(value: object) -> str:
    if not isinstance(value, str) or not MIN_PASSWORD <= len(value) <= MAX_PASSWORD:
        raise Invalid(
            f"passwords are {MIN_PASSWORD} to {MAX_PASSWORD} characters", "INVALID_PASSWORD"
        )
    return value


def level(value: object) -> str:
    if value not in LEVELS:
        raise Invalid(
            "accessLevel must be one of read-only, read-write, admin", "INVALID_ACCESS_LEVEL"
        )
    return str(value)


def visibility(value: object) -> str:
    if value not in ("public", "private"):
        raise Invalid("visibility must be public or private", "INVALID_REPOSITORY_VISIBILITY")
    return str(value)


def text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise Invalid(f"{field} must be a string of at most {limit} characters, without NUL")
    return value
