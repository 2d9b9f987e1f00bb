"""Cluster-level operator commands: `wharf reconfigure` (certificates, system settings,
this replica's addresses and options, and storage changes that never lose data) and
`wharf storage` (the reference registry's YAML, in and out).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from wharf.cli.admin import EXIT_FAILURE, EXIT_REFUSED, installation_options, require_installation
from wharf.config import (
    LOG_LEVELS,
    ConfigError,
    load_settings,
    read_replica_config,
    write_replica_config,
)
from wharf.storage.config import STORAGE_SETTING

SAMPLE = 200  # blobs checked in the new storage before a switch is accepted


def _storage_from(storage: str | None, storage_yaml: Path | None, data_dir: Path) -> str | None:
    """The storage URL given as a flag or as a reference-registry YAML file; the YAML's
    credentials are saved to <data-dir>/storage.env, never echoed."""
    from wharf.storage import StorageURLError, parse_storage_url
    from wharf.storage.config import save_credentials
    from wharf.storage.yamlconf import from_yaml

    if storage and storage_yaml:
        raise click.UsageError("give --storage or --storage-yaml, not both")
    try:
        if storage:
            parse_storage_url(storage)
            return storage
        if storage_yaml is None:
            return None
        imported = from_yaml(storage_yaml.read_text())
    except StorageURLError as e:
        raise click.UsageError(str(e)) from None
    for option in imported.ignored:
        click.echo(f"note: {option} has no meaning for Wharf and was ignored", err=True)
    if imported.secrets:
        path = save_credentials(data_dir, imported.secrets)
        names = ", ".join(sorted(imported.secrets))
        click.echo(f"saved the YAML's credentials ({names}) to {path} (mode 0600)", err=True)
    return imported.url


def _probe(url: str) -> None:
    """Exit 1 unless the storage can be written, read back and deleted."""
    from wharf.cluster import storage_probe
    from wharf.storage import open_storage

    try:
        result = storage_probe(open_storage(url))
    except Exception as e:  # a driver that cannot even start (credentials, endpoint)
        result = {"healthy": False, "error": str(e).splitlines()[0]}
    if not result.get("healthy"):
        click.echo(f"wharf: the storage {url} does not work: {result.get('error')}", err=True)
        sys.exit(EXIT_FAILURE)


@click.command("reconfigure")
@click.option("--storage", help="New blob storage URL for the whole cluster.")
@click.option(
    "--storage-yaml",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="New blob storage as a reference-registry YAML file.",
)
@click.option(
    "--storage-migrated",
    is_flag=True,
    help="The new storage already holds every blob (copied with the storage's own tools).",
)
@click.option(
    "--external-url",
    help="How clients reach the registry (https://HOST[:PORT]); this replica's.",
)
@click.option("--http-port", type=click.IntRange(1, 65535), help="This replica's HTTP port.")
@click.option("--https-port", type=click.IntRange(1, 65535), help="This replica's HTTPS port.")
@click.option(
    "--cert-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The cluster's new server certificate (PEM; then any intermediates).",
)
@click.option(
    "--key-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Its private key (PEM, unencrypted).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The CA that issued it, which clients trust (default: the chain's last certificate).",
)
@click.option(
    "--regenerate-certs",
    is_flag=True,
    help="A new self-signed CA and server certificate for the external URL's name.",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), help="This replica's log level.")
@click.option(
    "--trusted-proxies",
    metavar="ADDRS",
    help="This replica's trusted proxies (IP addresses or CIDR networks, comma-separated; "
    "'' for none): only they may set X-Forwarded-For/-Proto.",
)
@click.option(
    "--allowed-hosts",
    metavar="NAMES",
    help="Host names this replica answers for besides its own (comma-separated; '' for none).",
)
@click.option(
    "--setting",
    "system_settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A system setting (as in /api/v0/meta/settings); VALUE is read as JSON, else as "
    "text. Repeatable.",
)
@installation_options
def reconfigure(
    storage: str | None,
    storage_yaml: Path | None,
    storage_migrated: bool,
    external_url: str | None,
    http_port: int | None,
    https_port: int | None,
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    regenerate_certs: bool,
    log_level: str | None,
    trusted_proxies: str | None,
    allowed_hosts: str | None,
    system_settings: tuple[str, ...],
    **where: Any,
) -> None:
    """Change the cluster's configuration without losing data.

    Cluster-wide: the certificate (--cert-file/--key-file/--ca-file or --regenerate-certs;
    running replicas switch to it within seconds, without a restart), system settings
    (--setting) and the blob storage. This replica's own (<data-dir>/wharf.toml): the
    external URL, ports, log level, trusted proxies and allowed hosts; a running replica is
    restarted gracefully to apply them. Everything is checked before anything is changed.

    Changing the blob storage never touches metadata: if the registry holds blobs, the new
    storage must already have them (copy them first, then pass --storage-migrated); Wharf
    checks a sample before it switches. Replicas pick the new storage up when they restart.
    """
    from wharf import tls
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.settings import Policy
    from wharf.storage.config import load_credentials

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    data_dir = settings.data_dir

    # -- check everything, change nothing ------------------------------------------------
    setting_changes = _parse_system_settings(system_settings)
    lists = {"trusted_proxies": trusted_proxies, "allowed_hosts": allowed_hosts}
    replica_changes, own = _replica_changes(
        data_dir, external_url, http_port, https_port, log_level, lists
    )
    material = _new_certificate(
        cert_file, key_file, ca_file, regenerate_certs, own, replica_changes
    )
    new_url = _storage_from(storage, storage_yaml, data_dir)
    for_replica = any(
        v is not None
        for v in (external_url, http_port, https_port, log_level, trusted_proxies, allowed_hosts)
    )
    if not (setting_changes or for_replica or material or new_url):
        raise click.UsageError(
            "nothing to change: give --storage, --external-url, --http-port, --https-port, "
            "--cert-file/--key-file, --regenerate-certs, --log-level, --trusted-proxies, "
            "--allowed-hosts or --setting"
        )

    if setting_changes or material or new_url:
        load_credentials(data_dir)
        store = MetadataStore(settings.db_url)
        try:
            identities = IdentityStore(store)
            policy = Policy(identities)
            if setting_changes:
                try:
                    policy.settings().updated(setting_changes)
                except ValueError as e:
                    raise click.UsageError(f"--setting: {e}{_known_settings()}") from None
            switch = (
                _check_storage(store, identities, settings, new_url, storage_migrated)
                if new_url
                else None
            )
            # -- apply -------------------------------------------------------------------
            if setting_changes:
                policy.update_settings(setting_changes)
                for key, value in setting_changes.items():
                    click.echo(f"system setting {key} = {json.dumps(value)}")
            if material is not None:
                tls.save(identities, material)
                tls.sync_files(data_dir, identities)
                _report_certificate(material, own)
            if switch:
                identities.set_setting(STORAGE_SETTING, switch)
        finally:
            store.dispose()
        if new_url and switch:
            if own:
                own["storage"] = switch
                write_replica_config(data_dir, own)
            click.echo(f"the cluster's blob storage is now {switch}")
            click.echo(
                "restart every replica to use it; a replica configured with the old --storage "
                "is refused at start until its configuration names the new one"
            )
    if for_replica:
        if "external_url" in replica_changes:
            # The cluster's record is what `join` gives new replicas.
            from wharf.upgrade.engine import update_cluster

            store = MetadataStore(settings.db_url)
            try:
                update_cluster(store, externalUrl=replica_changes["external_url"])
            finally:
                store.dispose()
        _apply_replica_changes(data_dir, own, replica_changes)


def _parse_system_settings(pairs: tuple[str, ...]) -> dict[str, Any]:
    from wharf.settings import SystemSettings

    changes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.UsageError(f"--setting {pair!r}: expected KEY=VALUE")
        try:
            changes[key] = json.loads(raw)
        except ValueError:
            changes[key] = raw
    if changes:
        try:
            SystemSettings().updated(changes)  # again against the stored ones, later
        except ValueError as e:
            raise click.UsageError(f"--setting: {e}{_known_settings()}") from None
    return changes


def _replica_changes(
    data_dir: Path,
    external_url: str | None,
    http_port: int | None,
    https_port: int | None,
    log_level: str | None,
    lists: dict[str, str | None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The changes to this replica's wharf.toml, checked: (changes, the current file)."""
    from wharf.config import parse_external_url, split_addr

    own = read_replica_config(data_dir)
    changes: dict[str, Any] = {}
    if external_url is not None:
        try:
            changes["external_url"] = parse_external_url(external_url)
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
    if log_level is not None:
        changes["log_level"] = log_level
    for key, value in lists.items():
        if value is not None:
            try:  # normalised (and checked) as `wharf serve` reads it
                parsed = load_settings(None, {key: value}, environ={})
            except ConfigError as e:
                raise click.UsageError(str(e)) from None
            changes[key] = list(getattr(parsed, key))
    toml = data_dir / "wharf.toml"
    if (changes or http_port or https_port) and not toml.is_file():
        click.echo(
            f"wharf: refused: this replica has no {toml} (it was not set up by `wharf "
            "install` or `wharf join`), so its addresses and options come from its command "
            "line: change them there",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    if not (changes or http_port or https_port):
        return {}, own
    try:
        current = load_settings(toml, {}, environ={})
    except ConfigError as e:
        raise click.UsageError(f"this replica's configuration: {e}") from None
    for flag, key, port in (
        ("--http-port", "http_addr", http_port),
        ("--https-port", "https_addr", https_port),
    ):
        if port is None:
            continue
        addr = getattr(current, key)
        if not addr:
            raise click.UsageError(
                f"{flag}: this replica has no {key.replace('_addr', '').upper()} listener"
            )
        host = split_addr(addr)[0]
        changes[key] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    new = {**own, **changes}
    try:
        checked = load_settings(None, {"data_dir": current.data_dir, **new}, environ={})
        checked.check()
    except (ConfigError, TypeError) as e:
        raise click.UsageError(f"the new configuration would not work: {e}") from None
    return {k: v for k, v in changes.items() if own.get(k) != v}, own


def _new_certificate(
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    regenerate: bool,
    own: dict[str, Any],
    replica_changes: dict[str, Any],
) -> Any:
    """The cluster's new certificate, checked (exit 3 with the reason when it cannot be
    used), or None when none is asked for."""
    from wharf import tls
    from wharf.config import split_addr

    if regenerate and (cert_file or key_file or ca_file):
        raise click.UsageError("give --regenerate-certs or --cert-file/--key-file, not both")
    if ca_file and not cert_file:
        raise click.UsageError("--ca-file goes with --cert-file and --key-file")
    if bool(cert_file) != bool(key_file):
        raise click.UsageError("--cert-file and --key-file go together")
    try:
        if cert_file and key_file:
            return tls.from_files(cert_file, key_file, ca_file)
        if regenerate:
            external = replica_changes.get("external_url", own.get("external_url"))
            extra = []
            if own.get("https_addr"):
                host = split_addr(str(own["https_addr"]))[0]
                if host not in ("0.0.0.0", "::"):  # noqa: S104 - compared, not bound
                    extra.append(host)
            return tls.self_signed(tls.names_for(external, extra))
    except tls.TLSError as e:
        click.echo(f"wharf: refused: {e}", err=True)
        sys.exit(EXIT_REFUSED)
    return None


def _report_certificate(material: Any, own: dict[str, Any]) -> None:
    kind = "a new self-signed CA" if material.self_signed else "your CA"
    click.echo(
        f"the cluster's certificate is now {material.fingerprint} (issued by {kind}, valid "
        f"until {material.not_after():%Y-%m-%d}); running replicas switch to it within a few "
        "seconds, without a restart"
    )
    if material.self_signed:
        click.echo("clients must trust the new CA: it is served at /ca on every replica")
    if own.get("tls_cert") and Path(str(own["tls_cert"])).parent.name != "tls":
        click.echo(
            f"note: this replica serves its own certificate files ({own['tls_cert']}), not "
            "the cluster's",
            err=True,
        )


def _apply_replica_changes(data_dir: Path, own: dict[str, Any], changes: dict[str, Any]) -> None:
    from wharf.server import RestartFailed, request_restart

    if not changes:
        click.echo("this replica's configuration already says so; nothing to change")
        return
    write_replica_config(data_dir, {**own, **changes})
    for key, value in changes.items():
        click.echo(f"{key} = {value}")
    try:
        restarted = request_restart(data_dir)
    except RestartFailed as e:
        click.echo(f"wharf: the configuration is written, but {e}", err=True)
        sys.exit(EXIT_FAILURE)
    if restarted:
        click.echo("restarted this replica gracefully: the change is in effect")
    else:
        click.echo("this replica is not running: the change takes effect at its next start")


def _check_storage(
    store: Any, identities: Any, settings: Any, new_url: str, storage_migrated: bool
) -> str | None:
    """The storage to switch to, once checked (exit 3 when refused); None when the cluster
    already uses it."""
    from wharf.registry.digest import parse_digest
    from wharf.storage import open_storage
    from wharf.storage.config import StorageMismatch, resolve_storage_url
    from wharf.storage.paths import blob_path

    try:
        current = resolve_storage_url(settings, identities)
    except StorageMismatch:
        current = identities.get_setting(STORAGE_SETTING) or settings.storage_url
    if new_url == current:
        click.echo(f"the cluster already uses {new_url}; nothing to change")
        return None
    _probe(new_url)
    blobs = store.count("blobs")
    if blobs and not storage_migrated:
        click.echo(
            f"wharf: refused: the registry holds {blobs} blobs in {current}, and switching "
            f"to {new_url} without them would leave every image unpullable (metadata is "
            "never deleted, so nothing would be lost, but nothing would work). Copy the "
            "blobs first with the storage's own tools (for example `aws s3 sync`, "
            "`gsutil rsync`, `azcopy` or `rclone`), keeping the same paths, then run this "
            "command again with --storage-migrated.",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    if blobs:
        target = open_storage(new_url)
        sample = store.sample_blobs(SAMPLE)
        missing = [
            digest
            for digest, size in sample
            if target.stat(blob_path(parse_digest(digest))) != size
        ]
        if missing:
            click.echo(
                f"wharf: refused: --storage-migrated, but {len(missing)} of {len(sample)} "
                f"blobs checked are missing from {new_url} (for example {missing[0]}). "
                "Finish copying, then run this command again.",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        click.echo(f"checked {len(sample)} of {blobs} blobs in {new_url}: all present")
    return new_url


def _known_settings() -> str:
    from dataclasses import fields

    from wharf.settings import SystemSettings

    return " (known settings: " + ", ".join(f.name for f in fields(SystemSettings)) + ")"


@click.group("storage")
def storage_group() -> None:
    """The cluster's blob storage configuration."""


@storage_group.command("export-yaml")
@installation_options
def export_yaml(**where: Any) -> None:
    """Print the storage configuration in the reference registry's `storage:` YAML schema
    (credentials are never printed)."""
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.storage.config import StorageMismatch, resolve_storage_url
    from wharf.storage.yamlconf import to_yaml

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    store = MetadataStore(settings.db_url)
    try:
        url = resolve_storage_url(settings, IdentityStore(store))
    except StorageMismatch as e:
        click.echo(f"wharf: {e}", err=True)
        sys.exit(EXIT_FAILURE)
    finally:
        store.dispose()
    click.echo(to_yaml(url), nl=False)


COMMANDS = (reconfigure, storage_group)
