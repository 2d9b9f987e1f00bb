"""Wharf's configuration: one typed tree with defaults, overridable by a TOML file, by
environment variables (WHARF_<FIELD>) and by command-line flags, in increasing precedence.

Secrets (the admin password) are never settings: they are read from the environment or a
prompt where they are needed, so they never end up in a file or a process listing.
"""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigError(ValueError):
    """A configuration that cannot work; the message says what to change."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHARF_", extra="forbid")

    data_dir: Path = Path("wharf-data")
    db: str | None = None  # default: sqlite:///<data_dir>/wharf.db
    storage: str | None = None  # default: file://<data_dir>/storage
    http_addr: str | None = "127.0.0.1:5000"
    https_addr: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plain_http: bool = False  # serve plain HTTP on a non-loopback address
    workers: int = 1
    log_level: str = "info"
    access_log: bool = False

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if not 1 <= v <= 64:
            raise ValueError("workers must be between 1 and 64")
        return v

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.data_dir.resolve() / 'wharf.db'}"

    @property
    def storage_url(self) -> str:
        return self.storage or f"file://{self.data_dir.resolve() / 'storage'}"

    def check(self) -> None:
        """Refuse combinations that cannot work or would be unsafe."""
        if not self.http_addr and not self.https_addr:
            raise ConfigError("nothing to listen on: give --http-addr and/or --https-addr")
        if self.http_addr:
            host, _ = split_addr(self.http_addr)
            if not _is_loopback(host) and not self.plain_http:
                raise ConfigError(
                    f"refusing to serve plain HTTP on {self.http_addr}: clients' credentials "
                    "would cross the network unencrypted. Serve HTTPS with --https-addr "
                    "--tls-cert --tls-key, or pass --plain-http if a TLS proxy is in front."
                )
        if self.https_addr:
            split_addr(self.https_addr)
            if not (self.tls_cert and self.tls_key):
                raise ConfigError("--https-addr needs --tls-cert and --tls-key")
            for path in (self.tls_cert, self.tls_key):
                if not path.is_file():
                    raise ConfigError(f"TLS file not found: {path}")


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            values.update(tomllib.loads(config_file.read_text()))
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config file {config_file}: {e}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"invalid address {addr!r}: expected HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit empty host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
