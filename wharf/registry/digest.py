"""Digest parsing and streaming hashing (sha256 and sha512)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from wharf.registry.errors import DigestInvalid

# The spec's grammar: algorithm ":" encoded, matched whole (a trailing newline is refused).
_DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
SUPPORTED_ALGORITHMS = tuple(_HEX_LENGTH)
CANONICAL = "sha256"


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_digest(value: str) -> Digest:
    """Parse and validate a digest; raise DIGEST_INVALID for malformed or unsupported ones."""
    m = _DIGEST_RE.fullmatch(value)
    if not m:
        raise DigestInvalid(value, message="invalid digest format")
    algorithm, encoded = m.groups()
    length = _HEX_LENGTH.get(algorithm)
    if length is None:
        raise DigestInvalid(value, message=f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != length or not _is_lower_hex(encoded):
        raise DigestInvalid(value, message=f"invalid {algorithm} digest")
    return Digest(algorithm, encoded)


def _is_lower_hex(s: str) -> bool:
    return all(c in "0123456789abcdef" for c in s)
