"""Semantic versions and the upgrade rules of PRODUCT.md, in one place.

No downgrades. Patch versions may be skipped; minor versions may not (any patch of x.y may go
to any patch of x.y+1); a major upgrade goes one major at a time and only to its first minor
x.y.z to x+1.0.0 (or a later patch of x+1.0: patches never migrate data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_SEMVER = re.compile(r"(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})")


class VersionError(ValueError):
    """Not a version Wharf understands (x.y.z, digits only)."""


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _SEMVER.fullmatch(text.strip())
        if match is None:
            raise VersionError(f"{text!r} is not a version of the form MAJOR.MINOR.PATCH")
        return cls(*(int(g) for g in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: Version) -> bool:
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)


@dataclass(frozen=True)
class Plan:
    """The answer for one (from, to) pair: which row of the rules table it is, whether it is
    supported, and if not, why and what to do instead."""

    source: Version
    target: Version
    rule: str  # the table row's description, e.g. "skip minor version"
    supported: bool
    reason: str = ""
    instead: str = ""

    def explain(self) -> str:
        head = f"{self.source} -> {self.target}: {self.rule}"
        if self.supported:
            return f"{head}: supported"
        return f"{head}: not supported ({self.reason}); {self.instead}"


def plan(source: Version | str, target: Version | str) -> Plan:
    """Classify an upgrade under the rules table (every row of PRODUCT.md's table)."""
    a = source if isinstance(source, Version) else Version.parse(source)
    b = target if isinstance(target, Version) else Version.parse(target)

    def refuse(rule: str, reason: str, instead: str) -> Plan:
        return Plan(a, b, rule, False, reason, instead)

    if a == b:
        return Plan(a, b, "same version", True)
    if b < a:
        rule = (
            "major downgrade"
            if b.major < a.major
            else "minor downgrade"
            if b.minor < a.minor
            else "patch downgrade"
        )
        return refuse(
            rule,
            "downgrades are not supported",
            f"stay on {a}, or restore a backup taken on {b.major}.{b.minor}.x",
        )
    if b.major == a.major:
        if b.minor == a.minor:
            skipped = b.patch - a.patch > 1
            return Plan(a, b, "skip patch version" if skipped else "patch upgrade", True)
        if b.minor == a.minor + 1:
            return Plan(a, b, "minor upgrade", True)
        return refuse(
            "skip minor version",
            "minor versions may not be skipped",
            f"upgrade to {a.major}.{a.minor + 1}.x first",
        )
    if b.major == a.major + 1:
        # To the first minor of the next major; its patch may be any (patch versions carry
        # no data migration, the rule that lets x.y.0 skip to x.y.2).
        if b.minor == 0:
            return Plan(a, b, "major upgrade", True)
        return refuse(
            "major upgrade skipping minor version",
            f"a major upgrade goes to the first minor version of the next major, {b.major}.0",
            f"upgrade to {b.major}.0.x first",
        )
    return refuse(
        "skip major version",
        "major versions may not be skipped",
        f"upgrade to {a.major + 1}.0.0 first",
    )
