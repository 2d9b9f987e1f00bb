"""Backup and restore benchmark: `wharf backup` and `wharf restore` wall time and peak memory
on a registry with 100,000 tags.

    uv run python bench/backup.py [--tags N] [--db sqlite,postgresql] [--out FILE]

The registry is populated straight through SQLAlchemy bulk inserts (as bench/gc.py does):
100 repositories x 1,000 tags, each tag its own image manifest (a config blob of its own and
two layers out of 20 shared per repository), so 100,000 manifests, 100,000 tags, 102,000
blobs and 300,000 manifest references, plus one small file per blob in storage (the restore
ends with `wharf storage check`, which looks each blob up). Then, for each store:

1. `wharf backup > backup.tar` and `wharf backup --encrypt` (passphrase from the
   environment), each timed with /usr/bin/time -v (wall time, peak RSS);
2. `wharf backup --verify < backup.tar`;
3. `wharf restore < backup.tar` into a fresh data directory (SQLite) or an empty database
   (PostgreSQL), with the same blob storage, including the storage check;
4. the restored store must hold the same number of rows in every table.

Results go to bench/results/backup-<date>.json; docs/benchmarks.md has the table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore
from wharf.registry.digest import parse_digest
from wharf.storage.paths import blob_path
from wharf.upgrade.engine import initialize

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PASSPHRASE = "benchmark passphrase"
REPOS = 100
SHARED = 20  # shared layers per repository


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def populate(url: str, storage: Path, tags: int) -> dict[str, int]:
    store = MetadataStore(url)
    store.migrate()
    initialize(store)
    now = dt.datetime.now(dt.UTC)
    per_repo = tags // REPOS
    blob_sizes: dict[str, int] = {}
    try:
        with store.engine.begin() as conn:
            conn.execute(
                t.repositories.insert(),
                [
                    {
                        "id": r + 1,
                        "name": f"bench/repo-{r:03d}",
                        "namespace": "bench",
                        "visibility": "private",
                        "created_at": now,
                    }
                    for r in range(REPOS)
                ],
            )
            manifest_id = 0
            for r in range(REPOS):
                shared = [(digest_of(f"layer-{r}-{i}"), 1000 + i) for i in range(SHARED)]
                blobs, links, manifests, refs, tag_rows = [], [], [], [], []
                for d, s in shared:
                    blobs.append({"digest": d, "size": s, "created_at": now, "touched_at": now})
                    links.append({"repository_id": r + 1, "digest": d, "created_at": now})
                for i in range(per_repo):
                    manifest_id += 1
                    config = (digest_of(f"config-{r}-{i}"), 200 + i % 50)
                    layers = [shared[i % SHARED], shared[(i * 7 + 3) % SHARED]]
                    blobs.append(
                        {
                            "digest": config[0],
                            "size": config[1],
                            "created_at": now,
                            "touched_at": now,
                        }
                    )
                    links.append({"repository_id": r + 1, "digest": config[0], "created_at": now})
                    body = json.dumps(
                        {
                            "schemaVersion": 2,
                            "mediaType": OCI_MANIFEST,
                            "config": {
                                "mediaType": "application/vnd.oci.image.config.v1+json",
                                "digest": config[0],
                                "size": config[1],
                            },
                            "layers": [
                                {
                                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                                    "digest": d,
                                    "size": s,
                                }
                                for d, s in layers
                            ],
                        },
                        separators=(",", ":"),
                    ).encode()
                    sha = "sha256:" + hashlib.sha256(body).hexdigest()
                    manifests.append(
                        {
                            "id": manifest_id,
                            "repository_id": r + 1,
                            "digest": sha,
                            "sha256": sha,
                            "sha512": "sha512:" + hashlib.sha512(body).hexdigest(),
                            "media_type": OCI_MANIFEST,
                            "size": len(body),
                            "content": body,
                            "created_at": now,
                            "image_size": len(body) + config[1] + sum(s for _, s in layers),
                        }
                    )
                    for d in {config[0], *(d for d, _ in layers)}:
                        refs.append({"manifest_id": manifest_id, "kind": "blob", "digest": d})
                    tag_rows.append(
                        {
                            "repository_id": r + 1,
                            "name": f"v{i}",
                            "manifest_id": manifest_id,
                            "updated_at": now,
                            "created_at": now,
                        }
                    )
                for b in blobs:
                    blob_sizes[b["digest"]] = b["size"]
                conn.execute(t.blobs.insert(), blobs)
                conn.execute(t.repository_blobs.insert(), links)
                conn.execute(t.manifests.insert(), manifests)
                conn.execute(t.manifest_references.insert(), refs)
                conn.execute(t.tags.insert(), tag_rows)
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT setval('manifests_id_seq', :v)"), {"v": manifest_id})
                conn.execute(text("SELECT setval('repositories_id_seq', :v)"), {"v": REPOS})
    finally:
        store.dispose()
    for d, size in blob_sizes.items():
        path = storage / blob_path(parse_digest(d))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    return counts(url)


def counts(url: str) -> dict[str, int]:
    store = MetadataStore(url)
    try:
        with store.engine.connect() as conn:
            return {
                table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                for table in t.metadata.sorted_tables
            }
    finally:
        store.dispose()


def timed(args: list[str], stdin: Path | None, stdout: Path | None, env: dict[str, str]) -> dict:
    """Run `wharf ARGS` under /usr/bin/time -v: wall seconds and peak RSS (MiB)."""
    log = Path(tempfile.mktemp(prefix="wharf-bench-time-"))
    cmd = ["/usr/bin/time", "-v", "-o", str(log), sys.executable, "-m", "wharf", *args]
    with (
        stdin.open("rb") if stdin else open(os.devnull, "rb") as fin,
        stdout.open("wb") if stdout else open(os.devnull, "wb") as fout,
    ):
        r = subprocess.run(cmd, stdin=fin, stdout=fout, stderr=subprocess.PIPE, env=env)
    report = log.read_text()
    log.unlink()
    if r.returncode != 0:
        raise RuntimeError(f"wharf {' '.join(args)} failed:\n{r.stderr.decode()}")
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", report)
    hours, minutes, seconds = (float(g) if g else 0.0 for g in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", report).group(1))
    return {
        "wall_s": round(hours * 3600 + minutes * 60 + seconds, 2),
        "peak_rss_mib": round(rss / 1024, 1),
    }


def pg_admin(admin_url: str, sql: str) -> None:
    engine = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def new_pg(admin_url: str, names: list[str]) -> str:
    name = f"wharf_backupbench_{secrets.token_hex(5)}"
    pg_admin(admin_url, f"CREATE DATABASE {name}")
    names.append(name)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def run_store(kind: str, tags: int, work: Path, pg_url: str, dbs: list[str]) -> dict[str, Any]:
    env = {**os.environ, "WHARF_BACKUP_PASSPHRASE": PASSPHRASE}
    source = work / f"{kind}-source"
    source.mkdir()
    storage = work / "storage"
    storage.mkdir(exist_ok=True)
    url = f"sqlite:///{source / 'wharf.db'}" if kind == "sqlite" else new_pg(pg_url, dbs)
    print(f"[{kind}] populating {tags} tags ...", flush=True)
    rows = populate(url, storage, tags)
    where = ["--data-dir", str(source), "--db", url]
    result: dict[str, Any] = {"rows": rows}
    plain, sealed = work / f"{kind}.tar", work / f"{kind}-encrypted.tar"
    print(f"[{kind}] backup ...", flush=True)
    result["backup"] = timed(["backup", *where], None, plain, env)
    result["backup_encrypted"] = timed(["backup", "--encrypt", *where], None, sealed, env)
    result["archive_mib"] = round(plain.stat().st_size / 2**20, 1)
    result["archive_encrypted_mib"] = round(sealed.stat().st_size / 2**20, 1)
    print(f"[{kind}] verify ...", flush=True)
    result["verify"] = timed(["backup", "--verify"], plain, None, env)
    for label, archive in (("restore", plain), ("restore_encrypted", sealed)):
        target = work / f"{kind}-{label}"
        db = [] if kind == "sqlite" else ["--db", new_pg(pg_url, dbs)]
        print(f"[{kind}] {label} ...", flush=True)
        args = ["restore", "--data-dir", str(target), "--http-addr", "127.0.0.1:1"]
        args += ["--storage", f"file://{storage}", *db]
        result[label] = timed(args, archive, None, env)
        restored = counts(db[1] if db else f"sqlite:///{target / 'wharf.db'}")
        # Not compared: the new replica (and the admin account and storage setting that the
        # first start of a registry populated this way, without them, adds).
        skip = ("replicas", "job_workers", "accounts", "settings")
        expected = {k: v for k, v in rows.items() if k not in skip}
        got = {k: v for k, v in restored.items() if k not in skip}
        if got != expected:
            raise RuntimeError(f"restored rows differ: {expected} != {got}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=100_000)
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--pg-url", default=os.environ.get("WHARF_BENCH_PG", DEFAULT_PG))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wharf-backup-bench-"))
    dbs: list[str] = []
    results: dict[str, Any] = {
        "tags": args.tags,
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "stores": {},
    }
    try:
        for kind in args.db.split(","):
            results["stores"][kind] = run_store(kind, args.tags, work, args.pg_url, dbs)
    finally:
        for name in dbs:
            try:
                pg_admin(args.pg_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except Exception as e:
                print(f"warning: could not drop {name}: {e}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = args.out or Path(__file__).parent / "results" / f"backup-{dt.date.today()}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    for kind, r in results["stores"].items():
        for step in ("backup", "backup_encrypted", "verify", "restore", "restore_encrypted"):
            print(
                f"{kind:10} {step:18} {r[step]['wall_s']:8.1f} s {r[step]['peak_rss_mib']:8.1f} MiB"
            )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
