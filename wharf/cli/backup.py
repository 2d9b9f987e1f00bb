"""`wharf backup`, `wharf restore` and `wharf storage check`.

    wharf backup [--encrypt] > backup.tar     a consistent snapshot while the registry serves
    wharf backup --verify < backup.tar        check an archive without restoring it
    wharf restore [install flags] < backup.tar
    wharf storage check                       manifests whose blobs the storage lacks

The backup passphrase comes from WHARF_BACKUP_PASSPHRASE or a prompt on the terminal, never
from a flag. Exit codes: 0 success, 1 failure (a damaged archive, a wrong passphrase, missing
blobs for `storage check`), 2 bad usage, 3 refused by a rule (another minor version, an
existing installation).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import click

from wharf.cli.admin import EXIT_FAILURE, installation_options, require_installation
from wharf.cli.bootstrap import (
    ALL_INTERFACES,
    TLS_DIR,
    _listener_config,
    _probe,
    check_listener_flags,
    fail,
    refuse,
)
from wharf.cli.cluster import _storage_from, storage_group
from wharf.config import ConfigError, load_settings, read_replica_config, split_addr

PASSPHRASE_ENV = "WHARF_BACKUP_PASSPHRASE"  # noqa: S105 - a variable name
SHOWN_DAMAGED = 20  # manifests listed by a restore; `wharf storage check` lists them all
CARRIED = ("log_level", "workers", "access_log")  # replica options a restore keeps


def _passphrase(confirm: bool) -> str:
    """From WHARF_BACKUP_PASSPHRASE, else asked on the terminal (never standard input, which
    may be the archive)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    try:
        fd = os.open("/dev/tty", os.O_RDWR)
        os.close(fd)
    except OSError:
        raise click.UsageError(
            f"no terminal to ask for the passphrase on: set {PASSPHRASE_ENV}"
        ) from None
    import getpass

    value = getpass.getpass("Backup passphrase: ")
    if confirm and getpass.getpass("Again: ") != value:
        raise click.UsageError("the passphrases differ")
    if not value:
        raise click.UsageError("the passphrase is empty")
    return value


def _input() -> IO[bytes]:
    """Standard input as a seekable file: itself when it is one (`< backup.tar`), else
    (a pipe) copied to a private temporary file first, so that the archive can be verified
    completely before anything is restored from it."""
    if sys.stdin.isatty():
        raise click.UsageError("give the archive on standard input: wharf restore < backup.tar")
    mode = os.fstat(sys.stdin.fileno()).st_mode
    if stat.S_ISREG(mode):
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    spool = tempfile.TemporaryFile(prefix="wharf-restore-")  # noqa: SIM115 - returned
    shutil.copyfileobj(sys.stdin.buffer, spool, 1024 * 1024)
    spool.seek(0)
    return spool


def _without_password(url: str | None) -> str | None:
    if not url or url.startswith("sqlite"):
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=None).render_as_string(hide_password=False)


# -- backup -----------------------------------------------------------------------------------


@click.command("backup")
@click.option(
    "--encrypt",
    is_flag=True,
    help=f"Encrypt with a passphrase (from {PASSPHRASE_ENV} or a prompt).",
)
@click.option(
    "--verify",
    "verify_only",
    is_flag=True,
    help="Check the archive on standard input (checksums, authenticity, versions) and exit.",
)
@installation_options
def backup(encrypt: bool, verify_only: bool, **where: Any) -> None:
    """Write a backup of this installation's metadata, configuration, access control,
    certificates and keys to standard output, as a tar, while the registry keeps serving.
    Image contents (blob storage) and the vulnerability database are not in it."""
    if verify_only:
        if encrypt:
            raise click.UsageError("--verify reads an archive: leave out --encrypt")
        _verify_command()
        return
    from wharf.backup.create import backup as make_backup
    from wharf.metadata.store import MetadataStore
    from wharf.upgrade.engine import UpgradeRefused, check_start

    if sys.stdout.isatty():
        raise click.UsageError("the archive goes to standard output: wharf backup > backup.tar")
    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    passphrase = _passphrase(confirm=True) if encrypt else None
    if not encrypt:
        click.echo(
            "warning: this backup is NOT encrypted, and it holds the cluster's private keys "
            "(TLS, token signing), password hashes and the LDAP bind password: keep it as "
            f"safe as they are, or use --encrypt ({PASSPHRASE_ENV} or a prompt)",
            err=True,
        )
    store = MetadataStore(settings.db_url)
    try:
        try:
            check_start(store)
        except UpgradeRefused as e:
            refuse(f"this software cannot back up that cluster: {e}")
        own = read_replica_config(settings.data_dir)
        own = {k: str(v) if isinstance(v, Path) else v for k, v in own.items()}
        if "db" in own:
            own["db"] = _without_password(own["db"])
        try:
            manifest = make_backup(
                store,
                sys.stdout.buffer,
                data_dir=settings.data_dir,
                replica_config=own,
                passphrase=passphrase,
            )
        except BrokenPipeError:
            fail("the output was closed before the backup was complete")
        except Exception as e:
            fail(f"the backup failed, and what was written is incomplete: {e}")
        sys.stdout.buffer.flush()
    finally:
        store.dispose()
    rows = sum(m.get("rows", 0) for m in manifest["members"].values())
    kind = "encrypted" if manifest["encrypted"] else "not encrypted"
    click.echo(
        f"backed up Wharf {manifest['wharfVersion']} ({manifest['store']['dialect']} store, "
        f"{rows} rows, {len(manifest['members'])} members, {kind}) as of "
        f"{manifest['createdAt']}; not included: {'; '.join(manifest['excluded'])}",
        err=True,
    )


def _open_verified(fileobj: IO[bytes]) -> Any:
    from wharf.backup.archive import ArchiveError
    from wharf.backup.restore import verify

    try:
        return verify(fileobj, lambda: _passphrase(confirm=False))
    except ArchiveError as e:
        fail(f"the archive cannot be used: {e}")


def _verify_command() -> None:
    from wharf.backup.restore import VersionRefused, check_version
    from wharf.upgrade.history import software_version

    with _input() as f:
        verified = _open_verified(f)
        m = verified.manifest
        rows = sum(info.get("rows", 0) for info in m["members"].values())
        click.echo(
            f"archive OK: Wharf {m['wharfVersion']}, {m['store']['dialect']} store at schema "
            f"{m['store']['schemaRevision']}, taken {m['createdAt']} on replica "
            f"{m.get('replicaId')}; {len(m['members'])} members, {rows} rows, "
            f"{'encrypted' if m['encrypted'] else 'not encrypted'}; not included: "
            f"{'; '.join(m['excluded'])}"
        )
        try:
            warning = check_version(verified.version, software_version())
        except VersionRefused as e:
            refuse(str(e))
        if warning:
            click.echo(f"warning: {warning}", err=True)


# -- restore ----------------------------------------------------------------------------------


@click.command("restore")
@click.option("--external-url", help="The URL clients use (default: the backup's).")
@click.option("--http-port", type=int, help="Plain HTTP port (default: the backup's, else 80).")
@click.option("--https-port", type=int, help="HTTPS port (default: the backup's, else 443).")
@click.option("--bind-address", help=f"Address the ports listen on (default {ALL_INTERFACES}).")
@click.option(
    "--http-addr",
    help="Plain HTTP HOST:PORT for a registry without TLS (loopback, or behind a TLS proxy); "
    "overrides the ports.",
)
@click.option("--cert-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--ca-file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--plain-http", is_flag=True, help="No TLS: serve plain HTTP on --http-port only.")
@click.option("--db", help="Metadata store to restore into (default: embedded SQLite).")
@click.option("--storage", help="Blob storage URL (default: the one the backup records).")
@click.option(
    "--storage-yaml",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Blob storage as a reference-registry YAML file.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    envvar="WHARF_DATA_DIR",
    help="The new replica's data directory (default ./wharf-data).",
)
def restore(**flags: Any) -> None:
    """Restore a backup (standard input) into a fresh installation: checks the whole archive
    first, then creates the installation, restores its configuration, then its metadata, then
    applies the flags given here; finally checks that the blob storage holds every blob."""
    _Restore(flags).run()


class _Restore:
    def __init__(self, flags: dict[str, Any]) -> None:
        self.f = flags
        self.created: list[Path] = []  # to remove if anything fails
        self.created_dir: Path | None = None
        self.target: Any = None
        self.loaded = False

    # -- checks before anything is written ---------------------------------------------------

    def _usage(self) -> None:
        f = self.f
        check_listener_flags(
            **{k: f[k] for k in ("plain_http", "cert_file", "key_file", "ca_file")},
            http_port=f["http_port"],
            https_port=f["https_port"],
        )
        if f["http_addr"] and (f["http_port"] or f["https_port"] or f["bind_address"]):
            raise click.UsageError("--http-addr replaces --http-port/--https-port/--bind-address")

    def _listeners(self, old: dict[str, Any], external_url: str | None) -> dict[str, Any]:
        """Flags given here win; otherwise the backed-up replica's own listeners."""
        f, data_dir = self.f, self.data_dir
        if f["http_addr"]:
            split_addr(f["http_addr"])
            return {"http_addr": f["http_addr"]}
        old_http, old_https = old.get("http_addr"), old.get("https_addr")
        given = any(f[k] for k in ("http_port", "https_port", "bind_address", "plain_http"))
        if not given and (old_http or old_https):
            values = {k: old[k] for k in ("http_addr", "https_addr", "plain_http") if k in old}
            if old_https:
                tls = data_dir.resolve() / TLS_DIR
                values.update(tls_cert=tls / "server.crt", tls_key=tls / "server.key")
            return values

        def host_port(addr: str | None) -> tuple[str | None, int | None]:
            return split_addr(addr) if addr else (None, None)

        (http_host, old_http_port), (https_host, old_https_port) = (
            host_port(old_http),
            host_port(old_https),
        )
        bind = f["bind_address"] or https_host or http_host or ALL_INTERFACES
        http_port = f["http_port"] or old_http_port or 80
        if f["plain_http"]:
            https_port = None
        elif f["https_port"]:
            https_port = f["https_port"]
        elif old_https_port or not old_http:
            https_port = old_https_port or 443
        else:
            https_port = None  # the backed-up replica served plain HTTP
        if https_port == http_port:
            raise click.UsageError("--http-port and --https-port must differ")
        return _listener_config(data_dir, bind, http_port, https_port, external_url)

    def _check_target(self, settings: Any) -> None:
        from sqlalchemy import inspect

        from wharf.backup import archive as a
        from wharf.cluster import REPLICA_ID_FILE
        from wharf.metadata.store import MetadataStore

        data_dir = settings.data_dir
        for name in (REPLICA_ID_FILE, "wharf.db", "wharf.toml"):
            if (data_dir / name).exists():
                refuse(
                    f"{data_dir} already holds an installation ({name}); a restore makes a "
                    "fresh one: `wharf destroy` it first, or give another --data-dir"
                )
        if settings.db_url.startswith("sqlite:///"):
            path = Path(settings.db_url.removeprefix("sqlite:///"))
            if path.exists():
                refuse(f"the database {path} already exists; remove it or give another --db")
            return
        store = MetadataStore(settings.db_url)
        try:
            with store.engine.connect() as conn:
                present = set(inspect(conn).get_table_names())
        except Exception as e:
            fail(f"cannot use the metadata store: {str(e).splitlines()[0]}")
        finally:
            store.dispose()
        ours = present & ({t.name for t in a.tables()} | {"alembic_version"})
        if ours:
            refuse(
                "that database already holds a Wharf installation (tables "
                f"{', '.join(sorted(ours)[:4])}...); `wharf destroy` its replicas and drop the "
                "database (or give an empty one) first"
            )

    # -- the restore ----------------------------------------------------------------------

    def run(self) -> None:
        from wharf import tls
        from wharf.backup.archive import ArchiveError
        from wharf.backup.restore import VersionRefused, check_version
        from wharf.storage.config import STORAGE_SETTING
        from wharf.upgrade.engine import target_schema
        from wharf.upgrade.history import software_version

        f = self.f
        self._usage()
        base = f["data_dir"] or Path("wharf-data")
        self.data_dir = base
        if not base.exists():
            self.created_dir = base.resolve()  # removed again if the restore fails
        try:
            probe_settings = load_settings(None, {"data_dir": base.resolve(), "db": f["db"]})
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        self._check_target(probe_settings)
        source = _input()
        verified = _open_verified(source)
        m = verified.manifest
        software = software_version()
        try:
            warning = check_version(verified.version, software)
        except VersionRefused as e:
            refuse(str(e))
        if warning:
            click.echo(f"warning: {warning}", err=True)
        wanted = target_schema(software)
        revision = m["store"]["schemaRevision"]
        if wanted != "head" and revision != wanted:
            refuse(
                f"the backup's schema revision is {revision}, and Wharf {software} runs on "
                f"{wanted}; restore it with Wharf {verified.version}"
            )
        try:
            old = verified.replica_config()
            cluster = verified.setting("cluster") or {}
            recorded_storage = verified.setting(STORAGE_SETTING)
            has_tls = verified.setting(tls.CLUSTER_TLS_SETTING) is not None
        except ArchiveError as e:
            fail(f"the archive cannot be used: {e}")
        external_url = f["external_url"] or old.get("external_url") or cluster.get("externalUrl")
        material = None
        try:
            if f["cert_file"] and f["key_file"]:
                material = tls.from_files(f["cert_file"], f["key_file"], f["ca_file"])
            elif not has_tls and not f["plain_http"] and not f["http_addr"]:
                material = tls.self_signed(tls.names_for(external_url))
            elif external_url:
                tls.names_for(external_url)
        except tls.TLSError as e:
            raise click.UsageError(str(e)) from None
        storage_flag = _storage_from(f["storage"], f["storage_yaml"], base)
        storage_url = storage_flag or recorded_storage or None
        values: dict[str, Any] = {
            "data_dir": base.resolve(),
            "db": f["db"],
            "storage": storage_url,
            **{k: old[k] for k in CARRIED if k in old},
            **self._listeners(old, external_url),
        }
        values["external_url"] = external_url
        try:
            settings = load_settings(None, {**values, "tls_cert": None, "tls_key": None})
        except ConfigError as e:
            raise click.UsageError(str(e)) from None
        if storage_flag:
            _probe(storage_flag)
        try:
            self._create(verified, settings, values, material, storage_flag, cluster)
        except BaseException:
            self._undo(settings)
            raise
        finally:
            source.close()
        self._check_storage(settings)

    def _create(
        self,
        verified: Any,
        settings: Any,
        values: dict[str, Any],
        material: Any,
        storage_flag: str | None,
        cluster: dict[str, Any],
    ) -> None:
        from wharf import tls
        from wharf.backup.restore import load
        from wharf.bootstrap import prepare
        from wharf.cluster import REPLICA_ID_FILE
        from wharf.config import write_replica_config
        from wharf.metadata.identity import IdentityStore
        from wharf.metadata.store import MetadataStore, utcnow
        from wharf.storage.config import CREDENTIALS_FILE, STORAGE_SETTING
        from wharf.upgrade.engine import CLUSTER_SETTING, _get, _set, run_data_steps
        from wharf.upgrade.history import software_version

        m = verified.manifest
        data_dir = settings.data_dir
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        embedded = settings.db_url.startswith("sqlite:///")
        final_db = Path(settings.db_url.removeprefix("sqlite:///")) if embedded else None
        if final_db is not None:
            staging = final_db.with_name(final_db.name + ".restoring")
            for leftover in (staging, *(Path(f"{staging}-{s}") for s in ("wal", "shm"))):
                leftover.unlink(missing_ok=True)  # a restore killed before, never visible
            self.created += [staging, final_db, Path(f"{final_db}-wal"), Path(f"{final_db}-shm")]
            url = f"sqlite:///{staging}"
        else:
            url = settings.db_url
        self.target = MetadataStore(url)
        now = utcnow().isoformat()
        repairs: list[str] = []

        def adjust(conn: Any) -> None:
            # A backup of an earlier patch: that patch's data steps, as its upgrade would.
            repairs[:] = run_data_steps(conn, m["wharfVersion"], software_version())
            record = dict(_get(conn, CLUSTER_SETTING) or cluster)
            record["version"] = software_version()
            if values.get("external_url"):
                record["externalUrl"] = values["external_url"]
            record["restoredAt"] = now
            record["restoredFrom"] = {
                "replicaId": m.get("replicaId"),
                "backupCreatedAt": m["createdAt"],
                "wharfVersion": m["wharfVersion"],
                "store": m["store"]["dialect"],
            }
            _set(self.target, conn, CLUSTER_SETTING, record)
            if storage_flag:
                _set(self.target, conn, STORAGE_SETTING, storage_flag)

        click.echo(f"restoring a backup of Wharf {m['wharfVersion']} taken {m['createdAt']} ...")
        report = load(verified, self.target, adjust=adjust)
        self.loaded = True
        for line in repairs:
            click.echo(f"  {line}")
        if final_db is not None:
            with self.target.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            self.target.dispose()
            wal = Path(f"{staging}-wal")
            if wal.exists() and wal.stat().st_size:
                raise RuntimeError(f"{wal} could not be checkpointed into {staging}")
            for leftover in (wal, Path(f"{staging}-shm")):
                leftover.unlink(missing_ok=True)
            os.replace(staging, final_db)
            self.target = MetadataStore(settings.db_url)
        identities = IdentityStore(self.target)
        if material is not None:
            tls.save(identities, material)
        self.target.dispose()
        name = verified.find("config", CREDENTIALS_FILE)
        self.created += [data_dir / n for n in (REPLICA_ID_FILE, "wharf.toml", TLS_DIR)]
        path = data_dir / CREDENTIALS_FILE
        # Credentials given to this restore (--storage-yaml) win over the backed-up ones.
        if name and not path.exists():
            self.created.append(path)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(verified.member_bytes(name))
        prepare(settings)  # registers this replica (a new id), writes the TLS files
        config = write_replica_config(data_dir, values)
        rid = (data_dir / REPLICA_ID_FILE).read_text().strip()
        where = "the embedded store" if final_db else "the database"
        click.echo(
            f"restored {report.total} rows into {where} as replica {rid} (the backup's "
            "replicas are not restored: join new ones with `wharf join`)"
        )
        if report.requeued_jobs:
            click.echo(
                f"{report.requeued_jobs} jobs were running at backup time: put back as after "
                "a worker stopped (retried while retries are left)"
            )
        click.echo(f"start it with: wharf serve --config {config}")

    def _undo(self, settings: Any) -> None:
        """Leave nothing behind: no rows, no files, no data directory we made."""
        from wharf.backup.restore import drop_everything

        if self.target is not None:
            try:
                if self.loaded and not settings.db_url.startswith("sqlite"):
                    drop_everything(self.target)
            except Exception as e:
                click.echo(f"warning: could not drop the restored tables: {e}", err=True)
            self.target.dispose()
        for path in self.created:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if self.created_dir is not None:
            shutil.rmtree(self.created_dir, ignore_errors=True)

    def _check_storage(self, settings: Any) -> None:
        click.echo("checking the blob storage for every manifest's blobs ...")
        try:
            report, shown = _run_storage_check(settings, None, limit=SHOWN_DAMAGED)
        except Exception as e:
            click.echo(f"warning: could not check the blob storage: {e}", err=True)
            return
        if report.ok:
            click.echo(report.summary())
            return
        hidden = report.damaged_manifests - shown
        if hidden > 0:
            click.echo(f"  ... and {hidden} more (`wharf storage check` lists them all)", err=True)
        click.echo(f"warning: {report.summary()}", err=True)


# -- storage check ----------------------------------------------------------------------------


def _run_storage_check(
    settings: Any, storage: str | None, *, limit: int | None = None, as_json: bool = False
) -> tuple[Any, int]:
    import json

    from wharf.backup.storagecheck import check_storage
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore
    from wharf.storage import open_storage
    from wharf.storage.config import load_credentials, resolve_storage_url

    load_credentials(settings.data_dir)
    store = MetadataStore(settings.db_url)
    shown = 0

    def damaged(d: Any) -> None:
        nonlocal shown
        if limit is not None and shown >= limit:
            return
        shown += 1
        if as_json:
            click.echo(json.dumps({"damaged": d.to_dict()}, sort_keys=True))
        else:
            click.echo(f"missing: {d.describe()}", err=limit is not None)

    try:
        url = storage or resolve_storage_url(settings, IdentityStore(store))
        report = check_storage(store, open_storage(url), on_damaged=damaged)
    finally:
        store.dispose()
    return report, shown


@click.command("check")
@click.option("--storage", help="Check this storage instead of the cluster's (before a switch).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: damaged manifests, summary.")
@installation_options
def storage_check(storage: str | None, as_json: bool, **where: Any) -> None:
    """Check that the blob storage holds every blob of every manifest, with its recorded size.
    Lists the manifests (repository, digest, tags) with blobs missing; exits 1 if any."""
    import json

    from wharf.storage.config import StorageMismatch

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    try:
        report, _ = _run_storage_check(settings, storage, as_json=as_json)
    except StorageMismatch as e:
        fail(str(e))
    if as_json:
        click.echo(json.dumps({"summary": report.to_dict()}, sort_keys=True))
    else:
        click.echo(report.summary())
    sys.exit(0 if report.ok else EXIT_FAILURE)


storage_group.add_command(storage_check)

COMMANDS = (backup, restore)
