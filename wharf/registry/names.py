"""Repository names and tags, validated by the distribution spec's grammar."""

from __future__ import annotations

import re

from wharf.registry.errors import NameInvalid, TagInvalid

# Matched whole (fullmatch): with `^...$` and match(), "v1\n" would pass.
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
# A reference "host/name" must fit in 255 characters; leave room for a host.
MAX_NAME_LENGTH = 255


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and _NAME_RE.fullmatch(name) is not None


def is_valid_tag(tag: str) -> bool:
    return _TAG_RE.fullmatch(tag) is not None


def validate_name(name: str) -> str:
    if not is_valid_name(name):
        raise NameInvalid(name)
    return name


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise TagInvalid(tag)
    return tag
