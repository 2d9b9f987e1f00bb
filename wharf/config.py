"""Wharf's configuration: one typed tree with defaults, overridable by a TOML file, by
environment variables (WHARF_<FIELD>) and by command-line flags, in increasing precedence.

Secrets (the admin password) are never settings: they are read from the environment or a
prompt where they are needed, so they never end up in a file or a process listing.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


@dataclass(frozen=True)
class Settings:
    """Every setting of a replica. A plain dataclass rather than pydantic-settings: pydantic
    costs ~30 MiB of memory in each worker process for a dozen fields."""

    data_dir: Path = Path("wharf-data")
    db: str | None = None  # default: sqlite:///<data_dir>/wharf.db
    storage: str | None = None  # default: file://<data_dir>/storage
    http_addr: str | None = "127.0.0.1:5000"
    https_addr: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Serve the registry over plain HTTP. Without it, when there is an HTTPS listener, the
    # plain one only redirects to HTTPS (and serves /ca), on any address.
    plain_http: bool = False
    # How clients reach the registry (https://registry.example.com): where the plain
    # listener redirects to, and the name a generated certificate is made for.
    external_url: str | None = None
    workers: int = 1
    log_level: str = "info"
    access_log: bool = False
    # Proxies (IP addresses or CIDR networks) whose X-Forwarded-For and X-Forwarded-Proto
    # are believed; from any other peer those headers are ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Host names (or addresses) the registry answers for besides its own (see hosts.py);
    # "*" answers for any. Unused with an external URL, which every built URL then uses.
    allowed_hosts: tuple[str, ...] = ()
    # Slow clients: a request's headers must arrive within header_timeout seconds and hold
    # at most max_header_bytes; an idle keep-alive connection is closed after
    # keepalive_timeout seconds.
    header_timeout: float = 30.0
    keepalive_timeout: float = 30.0
    max_header_bytes: int = 65536

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir.resolve() / 'wharf.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage or f"file://{self.data_dir.resolve() / 'storage'}"

    @property
    def redirect_http(self) -> bool:
        """The plain-HTTP listener only redirects to HTTPS (and serves /ca)."""
        return bool(self.https_addr) and not self.plain_http

    @property
    def tls_managed(self) -> bool:
        """The TLS files are the cluster's certificate as this replica keeps it
        (<data-dir>/tls/server.crt and server.key), written from the metadata store at
        every start and whenever the cluster's certificate changes. Otherwise they are the
        operator's own, never written by Wharf."""
        if not (self.tls_cert and self.tls_key):
            return False
        tls = (self.data_dir / "tls").resolve()
        return (self.tls_cert.resolve(), self.tls_key.resolve()) == (
            tls / "server.crt",
            tls / "server.key",
        )

    def check(self) -> None:
        """Refuse combinations that cannot work or would be unsafe."""
        if not self.http_addr and not self.https_addr:
            raise ConfigError("nothing to listen on: give --http-addr and/or --https-addr")
        if self.http_addr:
            host, _ = split_addr(self.http_addr)
            if not _is_loopback(host) and not self.plain_http and not self.https_addr:
                raise ConfigError(
                    f"refusing to serve plain HTTP on {self.http_addr}: clients' credentials "
                    "would cross the network unencrypted. Serve HTTPS with --https-addr "
                    "--tls-cert --tls-key (plain HTTP then only redirects to it), or pass "
                    "--plain-http if a TLS proxy is in front."
                )
        if self.https_addr:
            split_addr(self.https_addr)
            if not (self.tls_cert and self.tls_key):
                raise ConfigError("--https-addr needs --tls-cert and --tls-key")
            if self.http_addr and split_addr(self.http_addr) == split_addr(self.https_addr):
                raise ConfigError("--http-addr and --https-addr must differ")
            # The cluster's own certificate files are (re)written from the metadata store
            # when the replica starts; the operator's must exist already.
            if not self.tls_managed:
                for path in (self.tls_cert, self.tls_key):
                    if not path.is_file():
                        raise ConfigError(f"TLS file not found: {path}")


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "data_dir": Path,
    "tls_cert": Path,
    "tls_key": Path,
    "workers": int,
    "plain_http": lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes"),
    "access_log": lambda v: v if isinstance(v, bool) else str(v).lower() in ("1", "true", "yes"),
    "trusted_proxies": lambda v: tuple(_networks(_items(v))),
    "allowed_hosts": lambda v: tuple(_host_patterns(_items(v))),
    "header_timeout": float,
    "keepalive_timeout": float,
    "max_header_bytes": int,
}
LOG_LEVELS = ("debug", "info", "warning", "error")


def load_settings(
    config_file: Path | None, overrides: dict[str, Any], environ: Mapping[str, str] = os.environ
) -> Settings:
    """Defaults < TOML file < WHARF_* environment < flags (`overrides`)."""
    names = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            from_file = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {config_file}: {e}") from None
        unknown = sorted(set(from_file) - names)
        if unknown:
            raise ConfigError(f"unknown settings in {config_file}: {', '.join(unknown)}")
        values.update(from_file)
    for name in names:
        env = environ.get(f"WHARF_{name.upper()}")
        if env is not None:
            values[name] = env
    values.update({k: v for k, v in overrides.items() if v is not None})
    converted = {}
    for name, value in values.items():
        try:
            converted[name] = _CONVERT.get(name, str)(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: invalid value {value!r}") from None
    settings = Settings(**converted)
    if not 1 <= settings.workers <= 64:
        raise ConfigError("workers must be between 1 and 64")
    for name in ("header_timeout", "keepalive_timeout"):
        if not 0 < getattr(settings, name) <= 3600:
            raise ConfigError(f"{name} must be more than 0 and at most 3600 seconds")
    if not 1024 <= settings.max_header_bytes <= 1 << 20:
        raise ConfigError("max_header_bytes must be between 1024 and 1048576")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if settings.external_url is not None:
        settings = replace(settings, external_url=parse_external_url(settings.external_url))
    return settings


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")

_PORT = re.compile(r"[0-9]{1,5}")


def parse_external_url(value: str) -> str:
    """The URL clients reach the registry at, normalised to `scheme://host[:port]`:
    http or https, a DNS name or IP address, no path, query, fragment or credentials."""
    problem = f"external_url {value!r}: expected https://HOST[:PORT] (or http://)"
    try:
        url = urlsplit(value.strip())
        port = url.port
    except ValueError:
        raise ConfigError(f"{problem}: it is not a valid URL") from None
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError(problem)
    if url.username is not None or url.password is not None:
        # Not echoed: the value holds a password.
        raise ConfigError("external_url must not hold credentials: expected https://HOST[:PORT]")
    if url.path not in ("", "/") or url.query or url.fragment or "?" in value or "#" in value:
        raise ConfigError(f"{problem}, without a path, query or fragment")
    host = url.hostname.lower()
    try:
        ip = ipaddress.ip_address(host)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        if len(host) > 253 or not _HOSTNAME.fullmatch(host):
            raise ConfigError(f"{problem}: {url.hostname!r} is not a valid host name") from None
        host = host.rstrip(".")
    default = 443 if url.scheme == "https" else 80
    if port == 0:
        raise ConfigError(f"{problem}: port 0")
    return f"{url.scheme}://{host}" + (f":{port}" if port not in (None, default) else "")


def _items(value: Any) -> list[str]:
    """A list setting: a TOML array, or a string of items separated by commas or spaces."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v for v in re.split(r"[,\s]+", str(value)) if v]


def _networks(items: list[str]) -> list[str]:
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ConfigError(
                f"trusted_proxies: {item!r} is not an IP address or CIDR network"
            ) from None
    return networks


def _host_patterns(items: list[str]) -> list[str]:
    hosts = []
    for item in items:
        name = item.lower().strip("[]").rstrip(".")
        bare = name[2:] if name.startswith("*.") else name
        if name != "*":
            try:
                ipaddress.ip_address(bare)
            except ValueError:
                if not _HOSTNAME.fullmatch(bare):
                    raise ConfigError(
                        f"allowed_hosts: {item!r} is not a host name, an address, *.DOMAIN or *"
                    ) from None
        hosts.append(name)
    return hosts


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    # ASCII digits only: str.isdigit() is true for "²", which int() refuses.
    if not sep or not _PORT.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ConfigError(f"invalid address {addr!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit empty host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_replica_config(data_dir: Path, values: Mapping[str, Any]) -> Path:
    """Write (atomically, mode 0600) the replica's own configuration, <data-dir>/wharf.toml,
    which `wharf serve --config` reads. Values that are None are left out."""
    import json

    path = data_dir / "wharf.toml"
    tmp = data_dir / "wharf.toml.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        for name, value in values.items():
            if value is not None:
                # JSON strings (and arrays of them) are valid TOML.
                if isinstance(value, (list, tuple)):
                    value = [str(v) for v in value]
                elif not isinstance(value, bool):
                    value = str(value)
                f.write(f"{name} = {json.dumps(value)}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_replica_config(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "wharf.toml"
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
