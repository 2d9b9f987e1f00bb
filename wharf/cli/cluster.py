"""Cluster-level operator commands: `wharf install` (the scale-out part: store and storage),
`wharf reconfigure` (storage changes that never lose data) and `wharf storage` (the reference
registry's YAML, in and out).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from wharf.cli.admin import EXIT_FAILURE, EXIT_REFUSED, installation_options, require_installation
from wharf.config import ConfigError, load_settings, read_replica_config, write_replica_config

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
@installation_options
def reconfigure(
    storage: str | None, storage_yaml: Path | None, storage_migrated: bool, **where: Any
) -> None:
    """Change the cluster's configuration without losing data.

    Changing the blob storage never touches metadata: if the registry holds blobs, the new
    storage must already have them (copy them first, then pass --storage-migrated); Wharf
    checks a sample before it switches. Replicas pick the new storage up when they restart.
    """
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.registry.digest import parse_digest
    from wharf.storage import open_storage
    from wharf.storage.config import (
        STORAGE_SETTING,
        StorageMismatch,
        load_credentials,
        resolve_storage_url,
    )
    from wharf.storage.paths import blob_path

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    new_url = _storage_from(storage, storage_yaml, settings.data_dir)
    if new_url is None:
        raise click.UsageError("nothing to change: give --storage or --storage-yaml")
    load_credentials(settings.data_dir)
    store = MetadataStore(settings.db_url)
    try:
        identities = IdentityStore(store)
        try:
            current = resolve_storage_url(settings, identities)
        except StorageMismatch:
            current = identities.get_setting(STORAGE_SETTING) or settings.storage_url
        if new_url == current:
            click.echo(f"the cluster already uses {new_url}; nothing to change")
            return
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
        identities.set_setting(STORAGE_SETTING, new_url)
    finally:
        store.dispose()
    own = read_replica_config(settings.data_dir)
    if own:
        own["storage"] = new_url
        write_replica_config(settings.data_dir, own)
    click.echo(f"the cluster's blob storage is now {new_url}")
    click.echo(
        "restart every replica to use it; a replica configured with the old --storage is "
        "refused at start until its configuration names the new one"
    )


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
