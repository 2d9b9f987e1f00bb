"""Which `Host` a replica answers for, and the base URL of the URLs it builds (the token
realm, the redirect to HTTPS).

With an external URL, every URL is built from it and the request's Host is not used at all.
Without one, a request is answered only when its Host names this replica: a loopback name or
address when the connection arrived on loopback, the address the connection arrived at, a
name in the TLS certificate it serves, the machine's hostname, or one of `allowed_hosts`.
Any other Host (a name an attacker's DNS points at this machine, a header a client was made
to send) is refused with 400 before any URL is built from it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from starlette.types import Scope

from wharf.config import Settings

# host[:port], a DNS name or IPv4 address, or a bracketed IPv6 address.
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
DECISIONS_KEPT = 1024


class HostPolicy:
    def __init__(
        self,
        settings: Settings,
        certificate_names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.external_url = settings.external_url
        self._allowed = {h for h in settings.allowed_hosts if not h.startswith("*.")}
        self._suffixes = tuple(h[1:] for h in settings.allowed_hosts if h.startswith("*."))
        self._any = "*" in self._allowed
        self._hostname = socket.gethostname().lower().rstrip(".")
        self._certificate_names = certificate_names or (lambda: ())
        # Decisions by (Host, local address), for the certificate names they were made with:
        # a request then costs a dictionary lookup (deciding takes ~15 µs).
        self._decided: dict[tuple[str, str], bool] = {}
        self._decided_names: Iterable[str] | None = None

    def host(self, scope: Scope) -> str | None:
        """The request's Host header (host[:port]) when the replica answers for it; the
        address the connection arrived at when it has none; None when it is refused.
        Never None when an external URL is configured (the Host is not checked then, only
        well-formed)."""
        value = _header(scope, b"host")
        if not value:
            return _local_host(scope)
        if not _HOST.fullmatch(value):
            return None if self.external_url is None else _local_host(scope)
        if self.external_url is None and not self._decide(value, scope):
            return None
        return value

    def base_url(self, scope: Scope) -> str:
        """scheme://host[:port] of the URLs built for a request the policy let in."""
        if self.external_url is not None:
            return self.external_url
        return f"{scope['scheme']}://{self.host(scope) or _local_host(scope)}"

    def _decide(self, host: str, scope: Scope) -> bool:
        names = self._certificate_names()
        if names is not self._decided_names or len(self._decided) >= DECISIONS_KEPT:
            self._decided, self._decided_names = {}, names  # a new certificate, or full
        local = (scope.get("server") or ("", 0))[0]
        key = (host, local)
        decision = self._decided.get(key)
        if decision is None:
            decision = self._decided[key] = self._answers_for(_name(host), local, names)
        return decision

    def _answers_for(self, name: str, local: str, certificate_names: Iterable[str]) -> bool:
        if self._any or name in self._allowed or any(name.endswith(s) for s in self._suffixes):
            return True
        if _is_loopback(local) and (name == "localhost" or _is_loopback(name)):
            return True
        if _same_address(name, local) or name == self._hostname:
            return True
        return any(_matches(name, pattern) for pattern in certificate_names)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _name(host: str) -> str:
    """The host of host[:port], lowercase, without brackets or a trailing dot."""
    if host.startswith("["):
        return host[1 : host.index("]")].lower()
    return host.rsplit(":", 1)[0].lower().rstrip(".")


def _local_host(scope: Scope) -> str:
    host, port = (scope.get("server") or ("localhost", None))[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
    mapped = getattr(ip, "ipv4_mapped", None)
    return mapped or ip


def _is_loopback(name: str) -> bool:
    ip = _ip(name)
    return ip is not None and ip.is_loopback


def _same_address(name: str, local: str) -> bool:
    ip = _ip(name)
    return ip is not None and ip == _ip(local)


def _matches(name: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):  # a wildcard stands for exactly one label
        first, _, rest = name.partition(".")
        return bool(first) and rest == pattern[2:]
    return name == pattern or _same_address(name, pattern)
