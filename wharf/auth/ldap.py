"""LDAP / Active Directory user directory (ldap3, synchronous).

Each call opens its own connection(s), binds, does its work and unbinds: `LdapDirectory` holds
no sockets and is safe to share between threads. Callers in an event loop should run it in a
worker thread. The service account's password never appears in reprs, logs or exceptions.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SIMPLE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException
from ldap3.operation.search import parse_filter
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

log = logging.getLogger(__name__)

PAGE_SIZE = 500
# Groups with more members than this are resolved with one paged search of the users instead
# of one base-scope lookup per member DN.
_MEMBER_LOOKUP_LIMIT = 50
_MAX_USERNAME_LEN = 256

# LDAP result codes (RFC 4511).
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_REFERRAL = 10
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
# A user bind failing with one of these means "not allowed in", not "directory broken":
# inappropriateAuthentication, invalidCredentials, insufficientAccessRights, unwillingToPerform
# (AD and ppolicy use 49/53 for locked, disabled and expired accounts).
_USER_BIND_REFUSED = frozenset({48, 49, 50, 53})

_ATTR_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+")  # matched whole

# camelCase key -> (field name, required)
_KEYS: dict[str, tuple[str, bool]] = {
    "url": ("url", True),
    "bindDN": ("bind_dn", True),
    "bindPassword": ("bind_password", True),
    "userSearchBase": ("user_search_base", True),
    "userFilter": ("user_filter", False),
    "usernameAttr": ("username_attr", False),
    "fullNameAttr": ("fullname_attr", False),
    "groupMemberAttr": ("group_member_attr", False),
    "startTLS": ("start_tls", False),
    "caFile": ("ca_file", False),
    "timeout": ("timeout", False),
}


class LdapError(Exception):
    """The directory is unreachable, refused the service account, or is misconfigured."""


@dataclass(frozen=True)
class LdapConfig:
    """How to reach and search the directory. Validated on construction (ValueError)."""

    url: str
    bind_dn: str
    bind_password: str = field(repr=False)
    user_search_base: str
    user_filter: str = "(objectClass=inetOrgPerson)"
    username_attr: str = "uid"
    fullname_attr: str = "cn"
    group_member_attr: str = "member"
    start_tls: bool = False
    ca_file: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("url", "bind_dn", "bind_password", "user_search_base", "user_filter"):
            value = getattr(self, name)
            if not isinstance(value, str) or not (
                value if name == "bind_password" else value.strip()
            ):
                raise ValueError(f"LDAP {name} must be a non-empty string")
        _parse_url(self.url)
        try:
            _clean_dn(self.user_search_base)
        except ValueError:
            raise ValueError(
                f"LDAP user_search_base must be a DN, got {self.user_search_base!r}"
            ) from None
        for name in ("username_attr", "fullname_attr", "group_member_attr"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _ATTR_RE.fullmatch(value):
                raise ValueError(f"LDAP {name} must be an attribute name, got {value!r}")
        if not _valid_filter(self.user_filter):
            raise ValueError(
                f"LDAP user_filter must be a parenthesised filter, got {self.user_filter!r}"
            )
        if not isinstance(self.start_tls, bool):
            raise ValueError("LDAP start_tls must be true or false")
        if self.start_tls and self.url.lower().startswith("ldaps://"):
            raise ValueError("LDAP start_tls cannot be combined with an ldaps:// url")
        if self.ca_file is not None and (not isinstance(self.ca_file, str) or not self.ca_file):
            raise ValueError("LDAP ca_file must be a path or null")
        if (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not 0 < self.timeout <= 600
        ):
            raise ValueError(
                f"LDAP timeout must be a number of seconds in (0, 600], got {self.timeout!r}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LdapConfig:
        """Build from camelCase settings (as stored/edited by the admin); ValueError if invalid."""
        if not isinstance(d, dict):
            raise ValueError("LDAP settings must be an object")
        unknown = sorted(set(d) - set(_KEYS))
        if unknown:
            raise ValueError(f"unknown LDAP setting(s): {', '.join(unknown)}")
        missing = [
            key for key, (_, required) in _KEYS.items() if required and d.get(key) in (None, "")
        ]
        if missing:
            raise ValueError(f"missing LDAP setting(s): {', '.join(missing)}")
        kwargs = {_KEYS[key][0]: value for key, value in d.items() if value is not None}
        if isinstance(kwargs.get("timeout"), int | float) and not isinstance(
            kwargs.get("timeout"), bool
        ):
            kwargs["timeout"] = float(kwargs["timeout"])
        return cls(**kwargs)

    def to_dict(self, *, include_secret: bool = False) -> dict[str, Any]:
        """camelCase settings; bindPassword only when include_secret."""
        out = {key: getattr(self, name) for key, (name, _) in _KEYS.items()}
        if not include_secret:
            del out["bindPassword"]
        return out


@dataclass(frozen=True)
class LdapUser:
    username: str
    dn: str
    full_name: str


class LdapDirectory:
    """Authenticates and enumerates users and group members of one LDAP/AD directory."""

    def __init__(self, config: LdapConfig) -> None:
        self.config = config
        self._base = _clean_dn(config.user_search_base)
        self._base_key = _dn_key(self._base)

    def __repr__(self) -> str:
        return f"LdapDirectory({self.config.url!r}, base={self.config.user_search_base!r})"

    # -- public API ----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> LdapUser | None:
        """The user if `password` is theirs; None if not (or unknown). LdapError if unreachable.

        The directory's matching rules apply (usually case-insensitive, ignoring surrounding
        spaces): use the returned `username`, which is spelt as in the directory.
        """
        if not username or not password or len(username) > _MAX_USERNAME_LEN:
            return None  # an empty password would be an unauthenticated bind: it always "works"
        cfg = self.config
        search_filter = f"(&{cfg.user_filter}({cfg.username_attr}={escape_filter_chars(username)}))"
        with self._service() as conn:
            entries = self._search(
                conn,
                self._base,
                search_filter,
                size_limit=2,
                attributes=[cfg.username_attr, cfg.fullname_attr],
            )
        if len(entries) != 1:
            if len(entries) > 1:
                log.warning(
                    "LDAP: %d entries match username %r; refusing login", len(entries), username
                )
            return None
        user = self._user(entries[0], prefer=username)
        if user is None:
            return None
        with self._session(user.dn, password) as conn:
            if not conn.bind():
                code = conn.result.get("result")
                if code in _USER_BIND_REFUSED:
                    return None
                raise LdapError(f"LDAP bind as user failed: {_describe(conn)}")
        return user

    def list_users(self) -> list[LdapUser]:
        """Every user under the search base matching the user filter, sorted by username."""
        cfg = self.config
        with self._service() as conn:
            entries = self._paged_search(
                conn, self._base, cfg.user_filter, [cfg.username_attr, cfg.fullname_attr]
            )
        users = [u for u in map(self._user, entries) if u is not None]
        return sorted(users, key=lambda u: u.username)

    def group_members(self, group_dn: str) -> set[str]:
        """Usernames of the group's members that are users of this directory; unknown group: {}."""
        cfg = self.config
        try:
            group_dn = _clean_dn(group_dn)
        except ValueError:
            raise LdapError(f"invalid LDAP group DN {group_dn!r}") from None
        with self._service() as conn:
            groups = self._search(
                conn,
                group_dn,
                "(objectClass=*)",
                scope=BASE,
                attributes=[cfg.group_member_attr],
                missing_ok=True,
            )
            if not groups:
                return set()
            member_dns = _values(groups[0], cfg.group_member_attr)
            wanted: dict[tuple, str] = {}
            for dn in member_dns:
                key = _dn_key(dn)
                if (
                    key is not None
                    and self._base_key is not None
                    and _is_under(key, self._base_key)
                ):
                    wanted[key] = _clean_dn(dn)
            if not wanted:
                return set()
            attrs = [cfg.username_attr, cfg.fullname_attr]
            if len(wanted) > _MEMBER_LOOKUP_LIMIT:
                entries = self._paged_search(conn, self._base, cfg.user_filter, attrs)
                entries = [e for e in entries if _dn_key(e["dn"]) in wanted]
            else:
                entries = []
                for dn in wanted.values():
                    entries += self._search(
                        conn, dn, cfg.user_filter, scope=BASE, attributes=attrs, missing_ok=True
                    )
        return {u.username for u in map(self._user, entries) if u is not None}

    def check(self) -> None:
        """Verify connectivity, the service account and the search base; LdapError if not."""
        cfg = self.config
        with self._service() as conn:
            found = self._search(conn, self._base, "(objectClass=*)", scope=BASE, missing_ok=True)
            if not found:
                raise LdapError(
                    f"LDAP user search base {cfg.user_search_base!r} does not exist "
                    "or is not readable by the bind DN"
                )
            self._search(conn, self._base, cfg.user_filter, size_limit=1)

    # -- internals -----------------------------------------------------------------------------

    @contextmanager
    def _session(
        self, user: str | None = None, password: str | None = None
    ) -> Iterator[Connection]:
        """An open (TLS-protected when configured) connection, not yet bound; always unbound."""
        cfg = self.config
        scheme, host, port = _parse_url(cfg.url)
        use_ssl = scheme == "ldaps"
        tls = _VerifyingTls(cfg.ca_file) if use_ssl or cfg.start_tls else None
        conn: Connection | None = None
        try:
            server = Server(
                host,
                port=port,
                use_ssl=use_ssl,
                tls=tls,
                get_info=NONE,
                connect_timeout=cfg.timeout,
            )
            conn = Connection(
                server,
                user=user,
                password=password,
                authentication=SIMPLE,
                # ldap3 packs this into SO_RCVTIMEO as whole seconds: a float raises struct.error.
                receive_timeout=math.ceil(cfg.timeout),
                raise_exceptions=False,
                auto_referrals=False,  # never send credentials to a server named in a referral
                read_only=True,
            )
            conn.open()
            if cfg.start_tls:
                conn.start_tls()
            yield conn
        except LDAPException as exc:
            # ldap3's messages name hosts and result codes, never the password.
            if tls is not None and tls.error:
                raise LdapError(f"TLS with LDAP server {cfg.url} failed: {tls.error}") from None
            raise LdapError(f"LDAP server {cfg.url} failed: {exc}") from None
        finally:
            if conn is not None:
                with suppress(LDAPException, OSError):
                    conn.unbind()

    @contextmanager
    def _service(self) -> Iterator[Connection]:
        """A connection bound as the service account."""
        cfg = self.config
        with self._session(cfg.bind_dn, cfg.bind_password) as conn:
            if not conn.bind():
                if conn.result.get("result") == _INVALID_CREDENTIALS:
                    raise LdapError(f"LDAP bind as {cfg.bind_dn!r} failed: invalid credentials")
                raise LdapError(f"LDAP bind as {cfg.bind_dn!r} failed: {_describe(conn)}")
            yield conn

    def _search(
        self,
        conn: Connection,
        base: str,
        search_filter: str,
        *,
        scope: str = SUBTREE,
        attributes: list[str] | None = None,
        size_limit: int = 0,
        missing_ok: bool = False,
    ) -> list[dict[str, Any]]:
        conn.search(
            base, search_filter, scope, attributes=attributes or ["1.1"], size_limit=size_limit
        )
        code = conn.result.get("result")
        if code in (_NO_SUCH_OBJECT, _REFERRAL) and missing_ok:
            return []  # (AD answers a DN outside its naming contexts with a referral)
        if code not in (_SUCCESS, _SIZE_LIMIT_EXCEEDED) or (
            code == _SIZE_LIMIT_EXCEEDED and not size_limit
        ):
            raise LdapError(f"LDAP search under {base!r} failed: {_describe(conn)}")
        return _entries(conn.response)

    def _paged_search(
        self, conn: Connection, base: str, search_filter: str, attributes: list[str]
    ) -> list[dict[str, Any]]:
        entries = list(
            conn.extend.standard.paged_search(
                base,
                search_filter,
                SUBTREE,
                attributes=attributes,
                paged_size=PAGE_SIZE,
                generator=True,
            )
        )
        code = conn.result.get("result")
        if code == _SIZE_LIMIT_EXCEEDED:
            # Returning a truncated list would silently drop users. OpenLDAP caps paged searches
            # at its sizelimit (500) unless the bind DN is given e.g. `size.prtotal=unlimited`.
            raise LdapError(
                f"LDAP search under {base!r} stopped after {len(_entries(entries))} entries: the "
                f"directory's size limit for {self.config.bind_dn!r} was exceeded; raise it "
                "(OpenLDAP: limits ... size.prtotal=unlimited) or narrow the search base/filter"
            )
        if code != _SUCCESS:
            raise LdapError(f"LDAP search under {base!r} failed: {_describe(conn)}")
        return _entries(entries)

    def _user(self, entry: dict[str, Any], prefer: str | None = None) -> LdapUser | None:
        names = _values(entry, self.config.username_attr)
        if not names:
            return None
        username = names[0]
        if prefer is not None:
            # A multi-valued username attribute: report the value that was asked for, as spelt
            # in the directory.
            username = next((n for n in names if n.casefold() == prefer.casefold()), username)
        full = _values(entry, self.config.fullname_attr)
        return LdapUser(username=username, dn=entry["dn"], full_name=full[0] if full else username)


class _VerifyingTls(Tls):
    """ldap3 TLS with the standard library's certificate *and* hostname verification.

    ldap3 turns `check_hostname` off and matches names itself with the deprecated
    `ssl.match_hostname` (a DeprecationWarning on 3.11; on 3.12+ a backport that ignores IP
    address SANs). Here the SSL context does it, as for HTTPS.
    """

    def __init__(self, ca_file: str | None) -> None:
        self.error: str | None = None
        try:
            super().__init__(validate=ssl.CERT_REQUIRED, ca_certs_file=ca_file)
            self._context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
        except (LDAPException, OSError) as exc:  # missing, unreadable or not PEM
            raise LdapError(f"LDAP CA file {ca_file!r} cannot be loaded: {exc}") from None

    def wrap_socket(self, connection: Connection, do_handshake: bool = False) -> None:
        try:
            connection.socket = self._context.wrap_socket(
                connection.socket,
                server_side=False,
                do_handshake_on_connect=do_handshake,
                server_hostname=connection.server.host,
            )
        except ssl.SSLCertVerificationError as exc:
            self.error = f"certificate verify failed: {exc.verify_message}"
            raise
        except (OSError, ValueError) as exc:
            # ldap3 re-raises this wrapped in nested tuples; keep a readable message.
            self.error = str(exc)
            raise


def _parse_url(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"invalid LDAP url {url!r}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ldap", "ldaps") or "://" not in url:
        raise ValueError(f"LDAP url must start with ldap:// or ldaps://, got {url!r}")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError(f"LDAP url must be ldap[s]://host[:port], got {url!r}")
    return scheme, parts.hostname, port or (636 if scheme == "ldaps" else 389)


def _valid_filter(text: str) -> bool:
    try:
        parse_filter(text, None, True, True, None, False)  # ldap3's own filter parser
    except LDAPException:
        return False
    return _balanced_filter(text)


def _balanced_filter(text: str) -> bool:
    text = text.strip()
    if not (text.startswith("(") and text.endswith(")")):
        return False
    depth = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0 or (depth == 0 and i != len(text) - 1):
                return False
    return depth == 0


def _describe(conn: Connection) -> str:
    result = conn.result or {}
    desc = result.get("description") or conn.last_error or "unknown error"
    message = (result.get("message") or "").strip()
    return f"{desc} ({message})" if message else str(desc)


def _entries(response: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    return [r for r in response or [] if r.get("type") == "searchResEntry" and r.get("dn")]


def _values(entry: dict[str, Any], attr: str) -> list[str]:
    """The string values of an attribute (attribute names are case-insensitive)."""
    attrs = entry.get("attributes") or {}
    for name, value in attrs.items():
        if name.lower() == attr.lower():
            values = value if isinstance(value, list) else [value]
            return [v for v in values if isinstance(v, str) and v]
    return []


_HEX_ESCAPE = re.compile(r"\\([0-9A-Fa-f]{2})|\\(.)")


def _unescape_dn_value(value: str) -> str:
    raw = bytearray()
    pos = 0
    for m in _HEX_ESCAPE.finditer(value):
        raw += value[pos : m.start()].encode()
        raw += bytes([int(m.group(1), 16)]) if m.group(1) else m.group(2).encode()
        pos = m.end()
    raw += value[pos:].encode()
    return raw.decode("utf-8", errors="replace")


def _clean_dn(dn: str) -> str:
    """The DN without the spaces RFC 4514 does not allow (`CN=x, DC=y`); ValueError if invalid."""
    try:
        parts = parse_dn(dn, strip=True)
    except (LDAPException, ValueError, IndexError):
        raise ValueError(f"invalid DN {dn!r}") from None
    return "".join(f"{attr}={value}{sep}" for attr, value, sep in parts)


def _dn_key(dn: str) -> tuple[tuple[tuple[str, str], ...], ...] | None:
    """A comparable form of a DN: case- and escaping-insensitive; None if it does not parse."""
    try:
        parts = parse_dn(dn, strip=True)
    except (LDAPException, ValueError, IndexError):
        return None
    rdns: list[tuple[tuple[str, str], ...]] = []
    current: list[tuple[str, str]] = []
    for attr, value, sep in parts:
        current.append((attr.strip().lower(), _unescape_dn_value(value).strip().casefold()))
        if sep != "+":
            rdns.append(tuple(sorted(current)))
            current = []
    if current:
        rdns.append(tuple(sorted(current)))
    return tuple(rdns)


def _is_under(key: tuple, base_key: tuple) -> bool:
    return len(key) >= len(base_key) and key[len(key) - len(base_key) :] == base_key
