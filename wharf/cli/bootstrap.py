"""The bootstrapper: `wharf install`, `join`, `remove`, `destroy`, `upgrade` and `status`: how
a cluster and its replicas are created, grown, upgraded, inspected and taken apart.

Exit codes (PRODUCT.md): 0 success, 1 failure, 2 bad usage, 3 refused by a rule; every
refusal says why and what to do instead.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
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
from wharf.config import ConfigError, load_settings, read_replica_config, write_replica_config

TLS_DIR = "tls"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a registry serves the network; HTTPS by default


def refuse(message: str) -> None:
    click.echo(f"wharf: refused: {message}", err=True)
    sys.exit(EXIT_REFUSED)


def fail(message: str) -> None:
    click.echo(f"wharf: {message}", err=True)
    sys.exit(EXIT_FAILURE)


def _port(value: int, flag: str) -> int:
    if not 1 <= value <= 65535:
        raise click.UsageError(f"{flag} must be a port number from 1 to 65535")
    return value


def _listener_config(
    data_dir: Path, bind: str, http_port: int, https_port: int | None, external_url: str | None
) -> dict[str, Any]:
    """A replica's listeners: HTTPS with the cluster's certificate and plain HTTP that only
    redirects to it; or, without https_port (a TLS proxy in front), plain HTTP that serves."""
    host = f"[{bind}]" if ":" in bind else bind
    values: dict[str, Any] = {"http_addr": f"{host}:{http_port}", "external_url": external_url}
    if https_port is None:
        values["plain_http"] = True
    else:
        tls = data_dir.resolve() / TLS_DIR
        values.update(
            https_addr=f"{host}:{https_port}",
            tls_cert=tls / "server.crt",
            tls_key=tls / "server.key",
        )
    return values


def check_listener_flags(
    *,
    plain_http: bool,
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    http_port: int | None,
    https_port: int | None,
) -> None:
    """Usage errors (exit 2) in the listener and certificate flags of install and restore."""
    if plain_http and (cert_file or key_file or ca_file):
        raise click.UsageError("--plain-http serves no TLS: leave out the certificate files")
    if bool(cert_file) != bool(key_file):
        raise click.UsageError("--cert-file and --key-file go together")
    if ca_file and not cert_file:
        raise click.UsageError("--ca-file needs --cert-file and --key-file")
    if http_port is not None:
        _port(http_port, "--http-port")
    if https_port is not None:
        _port(https_port, "--https-port")
    if http_port is not None and http_port == https_port:
        raise click.UsageError("--http-port and --https-port must differ")


def _interactive(non_interactive: bool) -> bool:
    return not non_interactive and sys.stdin.isatty()


@click.command("install")
@click.option(
    "--external-url",
    help="The URL clients use, e.g. https://registry.example.com (default https://<hostname>); "
    "the certificate is made for its host.",
)
@click.option("--http-port", type=int, help="Plain HTTP port (redirects to HTTPS; default 80).")
@click.option("--https-port", type=int, help="HTTPS port (default 443).")
@click.option(
    "--bind-address", default=ALL_INTERFACES, show_default=True, help="Address the ports listen on."
)
@click.option("--cert-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--ca-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option(
    "--plain-http",
    is_flag=True,
    help="No TLS: serve plain HTTP on --http-port only (a TLS proxy terminates in front).",
)
@click.option("--db", help="Metadata store: sqlite:///path (default: embedded) or postgresql://...")
@click.option("--storage", help="Blob storage URL (default: the data directory).")
@click.option(
    "--storage-yaml",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Blob storage as a reference-registry YAML file (its `storage:` section).",
)
@click.option("--non-interactive", is_flag=True, help="Never prompt (secrets from environment).")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="WHARF_DATA_DIR",
    help="This replica's data directory (default ./wharf-data).",
)
def install(
    external_url: str | None,
    http_port: int | None,
    https_port: int | None,
    bind_address: str,
    cert_file: Path | None,
    key_file: Path | None,
    ca_file: Path | None,
    plain_http: bool,
    db: str | None,
    storage: str | None,
    storage_yaml: Path | None,
    non_interactive: bool,
    data_dir: Path | None,
) -> None:
    """Create a new cluster and its first replica: replica id, configuration, a self-signed
    CA and server certificate for --external-url (or the operator's certificate), ports,
    metadata store, blob storage and the first admin (password from WHARF_ADMIN_PASSWORD or a
    prompt; generated and saved 0600 in the data directory when neither is available).

    On a terminal, every value not given as a flag is asked for; --non-interactive never
    asks."""
    from wharf import tls
    from wharf.bootstrap import ADMIN_PASSWORD_ENV, prepare
    from wharf.cluster import REPLICA_ID_FILE
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.upgrade.engine import initialize, read_state

    ask = _interactive(non_interactive)
    hostname = socket.getfqdn() or socket.gethostname()
    if external_url is None and ask:
        scheme = "http" if plain_http else "https"
        external_url = click.prompt("External URL", default=f"{scheme}://{hostname}")
    if http_port is None:
        http_port = click.prompt("HTTP port", default=80, type=int) if ask else 80
    if https_port is None and not plain_http:
        https_port = click.prompt("HTTPS port", default=443, type=int) if ask else 443
    if db is None and ask:
        db = click.prompt("Metadata store (sqlite:///... or postgresql://...)", default="embedded")
        db = None if db == "embedded" else db
    if storage is None and storage_yaml is None and ask:
        storage = click.prompt("Blob storage URL", default="local")
        storage = None if storage == "local" else storage
    check_listener_flags(
        plain_http=plain_http,
        cert_file=cert_file,
        key_file=key_file,
        ca_file=ca_file,
        http_port=http_port,
        https_port=https_port,
    )
    if not os.environ.get(ADMIN_PASSWORD_ENV) and ask:
        password = click.prompt(
            "Password for the first admin (admin)", hide_input=True, confirmation_prompt=True
        )
        os.environ[ADMIN_PASSWORD_ENV] = password  # read by prepare(); never a command line

    # Everything is checked before anything is written.
    material = None
    try:
        if cert_file and key_file:
            material = tls.from_files(cert_file, key_file, ca_file)
        elif not plain_http:
            material = tls.self_signed(tls.names_for(external_url))
        else:
            tls.names_for(external_url)  # validates the URL
    except tls.TLSError as e:
        raise click.UsageError(str(e)) from None
    base = data_dir or Path("wharf-data")
    storage_url = _storage_from(storage, storage_yaml, base)
    values = {
        "data_dir": base.resolve(),
        "db": db,
        "storage": storage_url,
        **_listener_config(base, bind_address, http_port, https_port, external_url),
    }
    try:
        settings = load_settings(None, {**values, "tls_cert": None, "tls_key": None})
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if (settings.data_dir / REPLICA_ID_FILE).exists() or (settings.data_dir / "wharf.db").exists():
        refuse(
            f"{settings.data_dir} already holds an installation; give another --data-dir "
            "(or `wharf destroy` this one first)"
        )
    created = not settings.data_dir.exists()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        store = MetadataStore(settings.db_url)
        try:
            try:
                existing = read_state(store)
            except Exception as e:
                fail(f"cannot use the metadata store: {str(e).splitlines()[0]}")
            if existing.version is not None:
                from wharf.cluster import registered_replicas

                others = registered_replicas(store) if existing.schema else []
                peer = others[0] if others else "ID"
                refuse(
                    f"that database already holds a Wharf {existing.version} cluster (replica "
                    f"{peer}); add this machine with `wharf join --existing-replica-id {peer} "
                    "--db ...`"
                )
            if storage_url:
                _probe(storage_url)
            initialize(store, {"externalUrl": external_url})
            if material is not None:
                tls.save(IdentityStore(store), material)
        finally:
            store.dispose()
        prepare(settings)
    except BaseException:
        if created:  # a refused or failed install leaves no directory behind
            shutil.rmtree(settings.data_dir, ignore_errors=True)
        raise
    rid = (settings.data_dir / REPLICA_ID_FILE).read_text().strip()
    config = write_replica_config(settings.data_dir, values)
    click.echo(f"installed replica {rid} of a new cluster at {external_url or 'this machine'}")
    if material is not None:
        kind = "self-signed (a new CA)" if material.self_signed else "yours"
        click.echo(
            f"TLS certificate: {kind}, valid until {material.not_after():%Y-%m-%d}; clients "
            f"trust the CA served at {external_url or 'https://<host>'}/ca "
            f"(also in {settings.data_dir.resolve() / TLS_DIR / 'ca.crt'})"
        )
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
        cluster = report.get("cluster", {})
        click.echo(f"cluster version {cluster.get('version')}")
        cert = cluster.get("certificate")
        if cert:
            kind = "self-signed CA" if cert["selfSigned"] else "operator's"
            click.echo(f"certificate     {kind}, valid until {cert['notAfter'][:10]}")
        if cluster.get("upgrade"):
            u = cluster["upgrade"]
            click.echo(f"UPGRADE IN PROGRESS from {u['from']} to {u['to']}: run `wharf upgrade`")
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
        count = len(report["replicas"])
        if count > 1 and count % 2 == 0:
            click.echo(
                f"warning: {count} replicas; an odd number (3, 5 or 7) is recommended", err=True
            )
    sys.exit(0 if report["healthy"] else EXIT_FAILURE)


@click.command("join")
@click.option("--existing-replica-id", required=True, help="Id of a replica of the cluster.")
@click.option("--db", help="The cluster's metadata store, postgresql://user@host/db.")
@click.option("--storage", help="The cluster's blob storage (default: the one it records).")
@click.option("--http-port", type=int, help="Plain HTTP port (default 80).")
@click.option("--https-port", type=int, help="HTTPS port (default 443).")
@click.option(
    "--bind-address", default=ALL_INTERFACES, show_default=True, help="Address the ports listen on."
)
@click.option(
    "--http-addr",
    help="Plain HTTP HOST:PORT for a cluster without TLS (one served behind a TLS proxy, or "
    "loopback only); overrides the ports.",
)
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
    http_port: int | None,
    https_port: int | None,
    bind_address: str,
    http_addr: str | None,
    data_dir: Path | None,
) -> None:
    """Add a replica to an existing cluster that shares a PostgreSQL metadata store.

    Checks the cluster (its store, the replica named, its version against this software's,
    its storage), creates this replica's id, certificate files and configuration
    (<data-dir>/wharf.toml), and registers it."""
    from wharf import tls
    from wharf.bootstrap import advertised_address
    from wharf.cluster import REPLICA_ID_FILE, register, replica_id
    from wharf.cluster import status as cluster_status
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.storage.config import STORAGE_SETTING
    from wharf.upgrade.engine import UpgradeRefused, check_start, cluster_record
    from wharf.upgrade.history import software_version

    try:
        settings = load_settings(None, {"data_dir": data_dir, "db": db, "storage": storage})
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if settings.db_url.startswith("sqlite"):
        refuse(
            "the cluster's metadata store is the embedded SQLite store, which serves exactly "
            "one replica. Move it to PostgreSQL first (stop the registry, run `wharf "
            "migrate-metadata --to postgresql://...`, start it with --db), then join with --db "
            "pointing at that database."
        )
    existing = settings.data_dir / REPLICA_ID_FILE
    if existing.exists():
        refuse(
            f"{settings.data_dir} already holds replica {existing.read_text().strip()}; give "
            "another --data-dir"
        )
    store = MetadataStore(settings.db_url)
    try:
        try:
            report = cluster_status(store, None)
        except Exception as e:
            fail(f"cannot read the cluster's metadata store: {e}")
        if not report["database"].get("healthy"):
            refuse(f"no Wharf cluster in that database ({report['database'].get('error')})")
        replicas = {r["id"]: r for r in report["replicas"]}
        if existing_replica_id not in replicas:
            known = ", ".join(sorted(replicas)) or "none"
            refuse(
                f"the cluster has no replica {existing_replica_id!r} (its replicas: {known}; "
                "`wharf status` lists them)"
            )
        try:
            check_start(store)
        except UpgradeRefused as e:
            refuse(f"this replica could not start: {e}")
        identities = IdentityStore(store)
        recorded = identities.get_setting(STORAGE_SETTING)
        if recorded == "":
            refuse(
                "the cluster keeps its blobs in its replica's own data directory, which no "
                "other replica can reach. Move them to shared storage first (`wharf reconfigure "
                "--storage s3://...|gs://...|az://...|file:///nfs/...` with --storage-migrated "
                "once copied), then join."
            )
        if storage and recorded and storage != recorded:
            refuse(
                f"the cluster's blob storage is {recorded}, not {storage}; every replica must "
                "use the same storage (leave out --storage to take it)"
            )
        storage = storage or recorded
        cluster = cluster_record(store)
        material = tls.load(identities)
        if http_addr:
            listeners: dict[str, Any] = {"http_addr": http_addr}
        else:
            listeners = _listener_config(
                settings.data_dir,
                bind_address,
                _port(http_port or 80, "--http-port"),
                _port(https_port or 443, "--https-port") if material else None,
                cluster.get("externalUrl"),
            )
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        rid = replica_id(settings.data_dir)
        values = {
            "data_dir": settings.data_dir.resolve(),
            "db": db,
            "storage": storage,
            **listeners,
        }
        joined = load_settings(None, {**values, "tls_cert": None, "tls_key": None})
        register(store, rid, advertised_address(joined))
        tls.sync_files(settings.data_dir, identities)
    finally:
        store.dispose()
    config = write_replica_config(settings.data_dir, values)
    count = len(replicas) + 1
    click.echo(
        f"joined the cluster as replica {rid} ({count} replicas, Wharf {software_version()})"
    )
    click.echo(f"start it with: wharf serve --config {config}")
    _warn_even(count)


def _warn_even(count: int) -> None:
    if count > 1 and count % 2 == 0:
        click.echo(
            f"warning: {count} replicas; an odd number (3, 5 or 7) is recommended for high "
            "availability (a majority must stay healthy)",
            err=True,
        )


def _open_store(where: dict[str, Any]) -> tuple[Any, Any]:
    from wharf.metadata.store import MetadataStore

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    return settings, MetadataStore(settings.db_url)


@click.command("remove")
@click.option("--replica-id", required=True, help="The replica to take out of the cluster.")
@installation_options
def remove(replica_id: str, **where: Any) -> None:
    """Remove a replica from the cluster. It stops serving within seconds and may not start
    again (destroy its data directory, or join anew). Refused for the cluster's last healthy
    replica."""
    from wharf.cluster import RemoveRefused
    from wharf.cluster import remove as remove_replica

    _, store = _open_store(where)
    try:
        remaining = remove_replica(store, replica_id)
    except RemoveRefused as e:
        refuse(str(e))
    finally:
        store.dispose()
    click.echo(f"removed replica {replica_id}; {len(remaining)} remain")
    click.echo(f"its data directory can now be deleted: wharf destroy --replica-id {replica_id}")
    _warn_even(len(remaining))


@click.command("destroy")
@click.option("--replica-id", required=True, help="The replica whose data is removed.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@installation_options
def destroy(replica_id: str, force: bool, **where: Any) -> None:
    """Remove all data of one replica: its data directory (with the embedded store and local
    blobs, when it has them). Blob storage and a PostgreSQL store that other replicas share
    are left alone. The replica must be stopped."""
    from wharf.cluster import REPLICA_ID_FILE, RemoveRefused, registered_replicas
    from wharf.cluster import remove as remove_replica
    from wharf.metadata.store import MetadataStore
    from wharf.server import running_pid

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    data_dir = settings.data_dir.resolve()
    try:
        found = (data_dir / REPLICA_ID_FILE).read_text().strip()
    except OSError:
        fail(f"no replica in {data_dir} (no {REPLICA_ID_FILE} file); give --data-dir")
    if found != replica_id:
        refuse(f"{data_dir} holds replica {found}, not {replica_id}")
    pid = running_pid(data_dir)
    if pid is not None:
        refuse(f"replica {replica_id} is running (pid {pid}); stop it first")
    own = read_replica_config(data_dir)  # what install or join wrote for this replica
    db_url = settings.db if settings.db else own.get("db") or settings.db_url
    storage = settings.storage or own.get("storage")
    shared = not db_url.startswith("sqlite")
    local_storage = storage is None or str(storage).startswith(f"file://{data_dir}")
    what = f"every file of replica {replica_id} in {data_dir}"
    kept = []
    if shared:
        kept.append("the shared metadata store")
    if not local_storage:
        kept.append(f"the blob storage {storage}")
    if not force:
        if not sys.stdin.isatty():
            raise click.UsageError("not on a terminal: give --force to destroy without asking")
        suffix = f" ({' and '.join(kept)} will be kept)" if kept else ""
        click.confirm(f"Delete {what}{suffix}?", abort=True)
    if shared:
        store = MetadataStore(db_url)
        try:
            if replica_id in registered_replicas(store):
                remove_replica(store, replica_id)
                click.echo(f"removed replica {replica_id} from the cluster")
        except RemoveRefused:
            click.echo(
                f"replica {replica_id} was the cluster's last; its metadata stays in the "
                "shared store (drop that database to delete it)"
            )
        except Exception as e:  # the store is gone: the local data still goes
            click.echo(f"warning: could not reach the metadata store ({e})", err=True)
        finally:
            store.dispose()
    shutil.rmtree(data_dir)
    click.echo(f"destroyed {what}")
    for item in kept:
        click.echo(f"kept {item}")


@click.command("upgrade")
@click.option(
    "--plan", "plan_only", is_flag=True, help="Only say whether --from -> --to is supported."
)
@click.option("--from", "from_version", help="With --plan: the version upgraded from.")
@click.option("--to", "to_version", help="With --plan: the version upgraded to.")
@click.option(
    "--no-restart", is_flag=True, help="Upgrade the metadata but leave the local replica running."
)
@installation_options
def upgrade(
    plan_only: bool,
    from_version: str | None,
    to_version: str | None,
    no_restart: bool,
    **where: Any,
) -> None:
    """Upgrade the cluster to the software version installed here, then restart this
    machine's replica on it (a few seconds without accepting; no connection refused).
    Resumable: run it again after a failure or interruption and it continues. Then, on each
    other machine, install the same version and run `wharf upgrade` there: replicas are
    replaced one at a time.

    `--plan --from X --to Y` answers for any pair: exit 0 when the path is supported, 3 when
    not (with the reason and the path to take instead)."""
    from wharf.upgrade.engine import UpgradeRefused, read_state
    from wharf.upgrade.engine import upgrade as run_upgrade
    from wharf.upgrade.history import software_version
    from wharf.upgrade.versions import VersionError, plan

    if plan_only:
        if not from_version:
            raise click.UsageError("--plan needs --from (and --to, default this software)")
        try:
            answer = plan(from_version, to_version or software_version())
        except VersionError as e:
            raise click.UsageError(str(e)) from None
        click.echo(answer.explain())
        sys.exit(0 if answer.supported else EXIT_REFUSED)
    if from_version or to_version:
        raise click.UsageError("--from and --to go with --plan")
    settings, store = _open_store(where)
    try:
        try:
            outcome = run_upgrade(store, say=click.echo)
        except UpgradeRefused as e:
            refuse(str(e))
        if outcome.already:
            click.echo(f"the cluster already runs {outcome.target}")
        state = read_state(store)
        _restart_local(settings, store, outcome.target, no_restart)
        from wharf.cluster import status as cluster_status

        behind = [
            r for r in cluster_status(store, None)["replicas"] if r["version"] != state.version
        ]
    finally:
        store.dispose()
    for r in behind:
        click.echo(
            f"replica {r['id']} on {r['hostname']} still runs {r['version']}: install Wharf "
            f"{state.version} there and run `wharf upgrade`"
        )


def _restart_local(settings: Any, store: Any, version: str, no_restart: bool) -> None:
    """Restart this machine's replica on the new software and wait until it reports it."""
    from sqlalchemy import select

    from wharf.cluster import REPLICA_ID_FILE
    from wharf.metadata import schema as t

    rid_file = settings.data_dir / REPLICA_ID_FILE
    if not rid_file.exists():
        return
    rid = rid_file.read_text().strip()

    def registered_version() -> str | None:
        with store.engine.connect() as conn:
            return conn.execute(select(t.replicas.c.version).where(t.replicas.c.id == rid)).scalar()

    if registered_version() == version:
        return
    if no_restart:
        click.echo(f"replica {rid} still runs the old version: restart it to finish")
        return
    from wharf.server import RestartFailed, request_restart

    try:
        restarted = request_restart(settings.data_dir, timeout=120)
    except RestartFailed as e:
        fail(f"replica {rid} did not restart: {e}")
    if not restarted:
        click.echo(f"replica {rid} is not running here; it starts on {version} next time")
        return
    click.echo(f"restarting replica {rid} on {version} ...")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if registered_version() == version:
            click.echo(f"replica {rid} runs {version}")
            return
        time.sleep(0.5)
    fail(f"replica {rid} did not come back on {version} within 120 s; see its log")


COMMANDS = (install, join, remove, destroy, upgrade, status)
