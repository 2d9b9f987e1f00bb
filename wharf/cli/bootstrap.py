"""The bootstrapper: `wharf install`, `join`, `status` (and, in time, `remove`, `destroy`,
`upgrade`): how a cluster and its replicas are created, inspected and removed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from wharf.cli.admin import (
    EXIT_FAILURE,
    EXIT_REFUSED,
    emit,
    installation_options,
    require_installation,
)
from wharf.cli.cluster import _probe, _storage_from
from wharf.config import ConfigError, load_settings, write_replica_config


@click.command("install")
@click.option("--db", help="Metadata store: sqlite:///path (default) or postgresql://...")
@click.option("--storage", help="Blob storage URL (default: the data directory).")
@click.option(
    "--storage-yaml",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Blob storage as a reference-registry YAML file (its `storage:` section).",
)
@click.option("--http-addr", default="127.0.0.1:5000", show_default=True)
@click.option("--non-interactive", is_flag=True, help="Never prompt (secrets from environment).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="WHARF_DATA_DIR",
    help="This replica's data directory (default ./wharf-data).",
)
def install(
    db: str | None,
    storage: str | None,
    storage_yaml: Path | None,
    http_addr: str,
    non_interactive: bool,
    data_dir: Path | None,
) -> None:
    """Create a new cluster and its first replica: metadata store, blob storage, first admin
    (password from WHARF_ADMIN_PASSWORD, or generated and saved 0600 in the data directory)."""
    from wharf.bootstrap import prepare
    from wharf.cluster import REPLICA_ID_FILE, registered_replicas
    from wharf.metadata.store import MetadataStore

    base = data_dir or Path("wharf-data")
    storage_url = _storage_from(storage, storage_yaml, base)
    try:
        settings = load_settings(
            None, {"data_dir": data_dir, "db": db, "storage": storage_url, "http_addr": http_addr}
        )
        settings.check()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if (settings.data_dir / REPLICA_ID_FILE).exists() or (settings.data_dir / "wharf.db").exists():
        click.echo(
            f"wharf: refused: {settings.data_dir} already holds an installation; give another "
            "--data-dir (or `wharf destroy` this one first)",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    if not settings.db_url.startswith("sqlite"):
        store = MetadataStore(settings.db_url)
        try:
            store.migrate()
            others = registered_replicas(store)
        except Exception as e:
            click.echo(f"wharf: cannot use the metadata store: {e}", err=True)
            sys.exit(EXIT_FAILURE)
        finally:
            store.dispose()
        if others:
            click.echo(
                f"wharf: refused: that database already holds a cluster (replica "
                f"{others[0]}); add this machine with `wharf join --existing-replica-id "
                f"{others[0]} --db ...`",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
    if storage_url:
        _probe(storage_url)
    prepare(settings)
    rid = (settings.data_dir / REPLICA_ID_FILE).read_text().strip()
    config = write_replica_config(
        settings.data_dir,
        {
            "data_dir": settings.data_dir.resolve(),
            "db": db,
            "storage": storage_url,
            "http_addr": http_addr,
        },
    )
    click.echo(f"installed replica {rid}")
    click.echo(f"start it with: wharf serve --config {config}")


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--storage", help="Blob storage URL (default: the installation's).")
@installation_options
def status(as_json: bool, **where: Any) -> None:
    """Replicas (ids, versions, health), the metadata store and the blob storage.
    Exits 1 when something is unhealthy."""
    from wharf.cluster import status as cluster_status
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.storage import open_storage
    from wharf.storage.config import StorageMismatch, load_credentials, resolve_storage_url

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    store = MetadataStore(settings.db_url)
    try:
        load_credentials(settings.data_dir)
        try:
            url = resolve_storage_url(settings, IdentityStore(store))
        except StorageMismatch as e:
            click.echo(f"wharf: {e}", err=True)
            sys.exit(EXIT_FAILURE)
        except Exception:
            url = settings.storage_url  # the store itself is down: status reports that
        report = cluster_status(store, open_storage(url))
    finally:
        store.dispose()
    if as_json:
        emit(report)
    else:
        db = report["database"]
        state = "healthy" if db.get("healthy") else f"UNHEALTHY: {db.get('error')}"
        kind = "embedded SQLite" if db.get("embedded") else db.get("dialect", "?")
        click.echo(f"metadata store  {kind}, schema {db.get('schemaRevision')}: {state}")
        st = report["storage"]
        state = "healthy" if st.get("healthy") else f"UNHEALTHY: {st.get('error')}"
        click.echo(f"blob storage    {st.get('url', '?')}: {state}")
        click.echo(f"replicas        {len(report['replicas'])}")
        for r in report["replicas"]:
            health = "healthy" if r["healthy"] else "UNHEALTHY"
            click.echo(
                f"  {r['id']}  {r['version']:<8} {r['address']:<28} {health:<9}"
                f" heartbeat {r['secondsSinceHeartbeat']:.0f}s ago on {r['hostname']}"
            )
    sys.exit(0 if report["healthy"] else EXIT_FAILURE)


@click.command("join")
@click.option("--existing-replica-id", required=True, help="Id of a replica of the cluster.")
@click.option("--db", help="The cluster's metadata store, postgresql://user@host/db.")
@click.option("--storage", help="The cluster's blob storage (default: the one it records).")
@click.option("--http-addr", default="127.0.0.1:5000", show_default=True)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="WHARF_DATA_DIR",
    help="This replica's data directory (default ./wharf-data).",
)
def join(
    existing_replica_id: str,
    db: str | None,
    storage: str | None,
    http_addr: str,
    data_dir: Path | None,
) -> None:
    """Add a replica to an existing cluster that shares a PostgreSQL metadata store.

    Checks the cluster (its store, the replica named, the software version), creates this
    replica's id and configuration (<data-dir>/wharf.toml), and registers it.
    """
    from wharf.bootstrap import advertised_address
    from wharf.cluster import REPLICA_ID_FILE, register, replica_id
    from wharf.cluster import status as cluster_status
    from wharf.metadata.store import MetadataStore

    try:
        settings = load_settings(
            None, {"data_dir": data_dir, "db": db, "storage": storage, "http_addr": http_addr}
        )
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if settings.db_url.startswith("sqlite"):
        click.echo(
            "wharf: refused: the cluster's metadata store is the embedded SQLite store, which "
            "serves exactly one replica. Move it to PostgreSQL first (stop the registry, run "
            "`wharf migrate-metadata --to postgresql://...`, start it with --db), then join "
            "with --db pointing at that database.",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    existing = settings.data_dir / REPLICA_ID_FILE
    if existing.exists():
        click.echo(
            f"wharf: refused: {settings.data_dir} already holds replica "
            f"{existing.read_text().strip()}; give another --data-dir",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    store = MetadataStore(settings.db_url)
    try:
        try:
            report = cluster_status(store, None)
        except Exception as e:
            click.echo(f"wharf: cannot read the cluster's metadata store: {e}", err=True)
            sys.exit(EXIT_FAILURE)
        if not report["database"].get("healthy"):
            click.echo(
                "wharf: refused: no Wharf cluster in that database "
                f"({report['database'].get('error')})",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        replicas = {r["id"]: r for r in report["replicas"]}
        peer = replicas.get(existing_replica_id)
        if peer is None:
            known = ", ".join(sorted(replicas)) or "none"
            click.echo(
                f"wharf: refused: the cluster has no replica {existing_replica_id!r} "
                f"(its replicas: {known}; `wharf status` lists them)",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        from wharf import __version__
        from wharf.metadata.identity import IdentityStore
        from wharf.storage.config import STORAGE_SETTING

        recorded = IdentityStore(store).get_setting(STORAGE_SETTING)
        if recorded == "":
            click.echo(
                "wharf: refused: the cluster keeps its blobs in its replica's own data "
                "directory, which no other replica can reach. Move them to shared storage "
                "first (`wharf reconfigure --storage s3://...|gs://...|az://...|file:///nfs/...` "
                "with --storage-migrated once copied), then join.",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        if storage and recorded and storage != recorded:
            click.echo(
                f"wharf: refused: the cluster's blob storage is {recorded}, not {storage}; "
                "every replica must use the same storage (leave out --storage to take it)",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        storage = storage or recorded

        if peer["version"] != __version__:
            click.echo(
                f"wharf: refused: the cluster runs Wharf {peer['version']} and this is "
                f"{__version__}. Join with the cluster's version, or upgrade the cluster first.",
                err=True,
            )
            sys.exit(EXIT_REFUSED)
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        rid = replica_id(settings.data_dir)
        register(store, rid, advertised_address(settings))
    finally:
        store.dispose()
    config = write_replica_config(
        settings.data_dir,
        {
            "data_dir": settings.data_dir.resolve(),
            "db": db,
            "storage": storage,
            "http_addr": http_addr,
        },
    )
    count = len(replicas) + 1
    click.echo(f"joined the cluster as replica {rid} ({count} replicas)")
    click.echo(f"start it with: wharf serve --config {config}")
    if count % 2 == 0:
        click.echo(
            f"warning: {count} replicas; an odd number (3, 5 or 7) is recommended for "
            "high availability",
            err=True,
        )


COMMANDS = (install, join, status)
