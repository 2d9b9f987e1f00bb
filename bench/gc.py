"""Online garbage collection benchmark: GC time on a big registry, and push throughput while
the collection runs.

    uv run python bench/gc.py [--quick] [--db sqlite|postgresql] [--out FILE]

For every variant (see `variants()`: 100,000 blobs, 10% garbage; `--quick`: 10,000) the
script

1. populates a fresh data directory (and, with `--db postgresql`, a fresh database) straight
   through SQLAlchemy bulk inserts into a store made by `MetadataStore(url).migrate()`, plus
   one small file per blob at its `storage/paths.blob_path` (sizes match the rows, content
   matches the digest), everything created/touched two hours ago; then times and EXPLAINs
   the collector's own read queries on it, with no server running;
2. starts `wharf serve --workers 2` on it;
3. runs an `onlinegc` job (graceMinutes 0), created through `JobStore` on the server's store,
   with nothing else going on, and checks the result: exactly the garbage (blob rows,
   repository links, objects in storage, untagged manifests) is gone, everything else is
   still there, rows and objects agree, and the job's counts are right;
4. puts the same garbage back, measures push throughput (monolithic `POST ?digest=`,
   256 KiB blobs, 4 at a time) and tags the pushed blobs with a manifest so that they are
   not garbage;
5. runs the job again, pushing continuously from the moment it logged its cutoff until it
   ends, checks the result again, and measures push throughput once more (after the GC).

See docs/benchmarks.md, "Online garbage collection".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import procs
from procs import BenchError, Server
from sqlalchemy import event, func, select, text

from wharf.jobs.gc import BATCH, GarbageCollector
from wharf.jobs.store import FINISHED, JobStore
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore
from wharf.registry.digest import parse_digest
from wharf.storage.paths import blob_path

KiB = 1024
MiB = 1024 * KiB
USER = "admin"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
PUSH_REPO = "bench/push"
AGE = dt.timedelta(hours=2)  # populated rows are this old (any grace period has passed)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Variant:
    key: str
    title: str
    tagged: int  # tagged manifests, `per_manifest` distinct blobs each (kept)
    untagged: int  # untagged manifests, `per_untagged` distinct blobs each (garbage)
    unreferenced: int  # blobs linked into a repository, referenced by no manifest (garbage)
    per_manifest: int = 10
    per_untagged: int = 5

    @property
    def blobs(self) -> int:
        return (
            self.tagged * self.per_manifest + self.untagged * self.per_untagged + self.unreferenced
        )

    @property
    def garbage(self) -> int:
        return self.untagged * self.per_untagged + self.unreferenced


def variants(scale: int) -> list[Variant]:
    """scale 10: 100,000 blobs; scale 1: 10,000 (quick)."""
    return [
        Variant(
            "unreferenced",
            "10% garbage: unreferenced blobs",
            tagged=900 * scale,
            untagged=0,
            unreferenced=1000 * scale,
        ),
        Variant(
            "untagged",
            "10% garbage: half unreferenced, half behind untagged manifests",
            tagged=900 * scale,
            untagged=100 * scale,
            unreferenced=500 * scale,
        ),
    ]


@dataclass
class Cfg:
    db: str
    quick: bool
    scale: int
    repos: int
    blob_bytes: int  # size of each populated blob
    push_bytes: int  # size of each pushed blob
    push_n: int  # blobs per baseline measurement
    push_conc: int
    workers: int
    pg_url: str
    variants: list[str]
    keep: bool
    gc_timeout: float
    wait_quiet: float
    quiet_limit: float


# --------------------------------------------------------------------------- helpers


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(v: dt.datetime) -> dt.datetime:
    return v if v.tzinfo else v.replace(tzinfo=dt.UTC)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def pg_admin(admin_url: str, sql: str) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def pg_create_db(admin_url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"wharf_gcbench_{secrets.token_hex(5)}"
    pg_admin(admin_url, f"CREATE DATABASE {name}")
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def pg_drop_db(admin_url: str, name: str) -> None:
    for _ in range(20):  # a server that was just stopped may still be disconnecting
        try:
            pg_admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except Exception:
            time.sleep(0.25)
    print(f"warning: could not drop database {name}", file=sys.stderr)


def pg_cpu(db_name: str | None) -> float:
    """CPU seconds of the PostgreSQL backends serving `db_name`, its background processes,
    and the postmaster's exited children (a pool's closed connections)."""
    if not db_name:
        return 0.0
    cpu = procs.pg_cpu_by_db([db_name])
    return cpu[db_name] + cpu["bg"] + cpu["exited"]


def client_cpu() -> float:
    tm = os.times()
    return tm.user + tm.system


class CpuWindow:
    """Server / PostgreSQL / client / rest-of-machine CPU over a time window."""

    def __init__(self, server: Server, db_name: str | None) -> None:
        self.server, self.db_name = server, db_name

    def __enter__(self) -> CpuWindow:
        self.t0 = time.monotonic()
        self.s0, self.p0, self.c0 = self.server.cpu_s(), pg_cpu(self.db_name), client_cpu()
        self.m0, self.st0 = procs.system_cpu_s()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall = time.monotonic() - self.t0
        self.server_s = self.server.cpu_s() - self.s0
        self.pg_s = pg_cpu(self.db_name) - self.p0
        self.client_s = client_cpu() - self.c0
        m1, st1 = procs.system_cpu_s()
        self.other_s = max(0.0, (m1 - self.m0) - self.server_s - self.pg_s - self.client_s)
        self.steal_s = st1 - self.st0

    def as_dict(self) -> dict[str, float]:
        w = max(self.wall, 1e-9)
        return {
            "wall_s": round(self.wall, 3),
            "server_cpu_s": round(self.server_s, 3),
            "server_cpu_pct": round(100 * self.server_s / w, 1),
            "pg_cpu_s": round(self.pg_s, 3),
            "client_cpu_s": round(self.client_s, 3),
            "other_cores": round((self.other_s + self.steal_s) / w, 2),
        }


# --------------------------------------------------------------------------- populate


def manifest_doc(blobs: list[tuple[str, int]]) -> bytes:
    (cd, cs), layers = blobs[0], blobs[1:]
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
            "layers": [{"mediaType": OCI_LAYER, "digest": d, "size": s} for d, s in layers],
        },
        separators=(",", ":"),
    ).encode()


@dataclass
class FakeManifest:
    repo: str
    blobs: list[str]
    tag: str | None
    row: dict[str, Any]  # the manifests row, without repository_id


@dataclass
class Population:
    repos: list[str]
    contents: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes
    links: list[tuple[str, str]] = field(default_factory=list)  # (repository, digest)
    manifests: list[FakeManifest] = field(default_factory=list)
    kept: set[str] = field(default_factory=set)  # blob digests that must survive
    garbage: set[str] = field(default_factory=set)  # blob digests that must go
    tagged_ids: set[int] = field(default_factory=set)
    untagged_ids: set[int] = field(default_factory=set)


def generate(cfg: Cfg, v: Variant) -> Population:
    """Everything in memory: blobs (content matches the digest), manifests, tags, links."""
    rng = random.Random(f"{v.key}-{cfg.scale}")
    pop = Population([f"bench/gc-{i:03d}" for i in range(cfg.repos)])
    old = now_utc() - AGE

    def new_blob() -> tuple[str, int]:
        data = rng.randbytes(cfg.blob_bytes)
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        pop.contents[d] = data
        return d, len(data)

    for i in range(v.tagged + v.untagged):
        tagged = i < v.tagged
        repo = pop.repos[i % len(pop.repos)]
        blobs = [new_blob() for _ in range(v.per_manifest if tagged else v.per_untagged)]
        content = manifest_doc(blobs)
        sha256 = "sha256:" + hashlib.sha256(content).hexdigest()
        row = {
            "digest": sha256,
            "sha256": sha256,
            "sha512": "sha512:" + hashlib.sha512(content).hexdigest(),
            "media_type": OCI_MANIFEST,
            "size": len(content),
            "content": content,
            "created_at": old,
        }
        pop.manifests.append(
            FakeManifest(repo, [d for d, _ in blobs], f"v{i:06d}" if tagged else None, row)
        )
        (pop.kept if tagged else pop.garbage).update(d for d, _ in blobs)
        pop.links.extend((repo, d) for d, _ in blobs)
    for i in range(v.unreferenced):
        d, _ = new_blob()
        pop.garbage.add(d)
        pop.links.append((pop.repos[i % len(pop.repos)], d))
    assert len(pop.contents) == v.blobs and len(pop.garbage) == v.garbage
    return pop


def insert_rows(store: MetadataStore, pop: Population, only_garbage: bool) -> None:
    """Bulk inserts of the population's rows (or of its garbage only: to restore it after a
    collection), all created and touched AGE ago, in one transaction."""
    old = now_utc() - AGE
    chunk = 5000

    def bulk(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
        for i in range(0, len(rows), chunk):
            conn.execute(table.insert(), rows[i : i + chunk])

    keep = (lambda d: d in pop.garbage) if only_garbage else (lambda d: True)
    with store.engine.begin() as conn:
        if not only_garbage:
            conn.execute(
                t.repositories.insert(),
                [
                    {"name": r, "namespace": "bench", "visibility": "private", "created_at": old}
                    for r in pop.repos
                ],
            )
        repo_id = dict(conn.execute(select(t.repositories.c.name, t.repositories.c.id)).all())
        bulk(
            conn,
            t.blobs,
            [
                {"digest": d, "size": len(b), "created_at": old, "touched_at": old}
                for d, b in pop.contents.items()
                if keep(d)
            ],
        )
        bulk(
            conn,
            t.repository_blobs,
            [
                {"repository_id": repo_id[r], "digest": d, "created_at": old}
                for r, d in pop.links
                if keep(d)
            ],
        )
        todo = [m for m in pop.manifests if not (only_garbage and m.tag)]
        bulk(
            conn,
            t.manifests,
            [{"repository_id": repo_id[m.repo], **m.row, "created_at": old} for m in todo],
        )
        mid = {
            (r.repository_id, r.sha256): r.id
            for r in conn.execute(
                select(t.manifests.c.id, t.manifests.c.repository_id, t.manifests.c.sha256)
            )
        }
        refs, tags = [], []
        pop.untagged_ids = set()
        for m in todo:
            i = mid[(repo_id[m.repo], m.row["sha256"])]
            refs.extend({"manifest_id": i, "kind": "blob", "digest": d} for d in m.blobs)
            if m.tag:
                pop.tagged_ids.add(i)
                tags.append(
                    {
                        "repository_id": repo_id[m.repo],
                        "name": m.tag,
                        "manifest_id": i,
                        "updated_at": old,
                        "created_at": old,
                        "author": USER,
                    }
                )
            else:
                pop.untagged_ids.add(i)
        bulk(conn, t.manifest_references, refs)
        bulk(conn, t.tags, tags)


def write_files(storage_root: Path, items: list[tuple[str, bytes]]) -> None:
    """One file per blob at its blob_path (raw system calls: this disk manages ~5,000 file
    creations a second, and a 100,000-blob population is mostly that)."""
    for i in range(256):
        os.makedirs(storage_root / "blobs" / "sha256" / f"{i:02x}", exist_ok=True)

    def write(item: tuple[str, bytes]) -> None:
        path = storage_root / blob_path(parse_digest(item[0]))
        with contextlib.suppress(FileExistsError):  # a restore: GC leaves the directory
            os.mkdir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, item[1])
        finally:
            os.close(fd)

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(write, items, chunksize=512))


def populate(cfg: Cfg, v: Variant, url: str, storage_root: Path) -> tuple[Population, dict]:
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    pop = generate(cfg, v)
    timings["generate_s"] = time.monotonic() - t0
    store = MetadataStore(url)
    try:
        t1 = time.monotonic()
        store.migrate()
        timings["migrate_s"] = time.monotonic() - t1
        t1 = time.monotonic()
        insert_rows(store, pop, only_garbage=False)
        timings["rows_s"] = time.monotonic() - t1
        if store._dialect == "postgresql":
            # What autovacuum does to freshly loaded tables within a minute or so.
            t1 = time.monotonic()
            with store.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
            timings["vacuum_analyze_s"] = time.monotonic() - t1
    finally:
        store.dispose()
    t1 = time.monotonic()
    write_files(storage_root, list(pop.contents.items()))
    timings["files_s"] = time.monotonic() - t1
    timings["total_s"] = time.monotonic() - t0
    return pop, {k: round(x, 2) for k, x in timings.items()}


def restore_garbage(url: str, storage_root: Path, pop: Population) -> dict[str, float]:
    """Put the garbage back (rows, links, untagged manifests, objects) after a collection,
    so that a second collection has the same work to do."""
    t0 = time.monotonic()
    store = MetadataStore(url)
    try:
        insert_rows(store, pop, only_garbage=True)
    finally:
        store.dispose()
    t1 = time.monotonic()
    write_files(storage_root, [(d, pop.contents[d]) for d in sorted(pop.garbage)])
    return {"rows_s": round(t1 - t0, 2), "files_s": round(time.monotonic() - t1, 2)}


# --------------------------------------------------------------------------- query probes


def probe_queries(url: str) -> dict[str, Any]:
    """The collector's own read queries on the populated store, timed and EXPLAINed, with no
    server and no load: what each costs by itself. On PostgreSQL the blob queries are run a
    second time with hash/merge joins and sequential scans disabled, to compare the plan the
    planner picks with an index-driven one (evidence only; the collector is not changed)."""
    store = MetadataStore(url)
    out: dict[str, Any] = {}
    pg = store._dialect == "postgresql"
    forced = [f"SET LOCAL enable_{x} = off" for x in ("hashjoin", "mergejoin", "seqscan")]
    forced = forced if pg else []
    try:
        gc = GarbageCollector(store, storage=None)  # type: ignore[arg-type]
        cutoff = now_utc()
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if pg else "EXPLAIN QUERY PLAN "
        explaining = threading.local()

        @event.listens_for(store.engine, "before_cursor_execute", retval=True)
        def _explain(conn, cursor, statement, parameters, context, executemany):
            if getattr(explaining, "on", False):
                statement = prefix + statement
            return statement, parameters

        def run(query: Any, settings: list[str], explain: bool = False) -> Any:
            with store._read() as conn:
                for sql in settings:
                    conn.exec_driver_sql(sql)
                explaining.on = explain
                try:
                    return query(conn)
                finally:
                    explaining.on = False

        def plan(query: Any, settings: list[str]) -> list[str]:
            rows = run(query, settings, explain=True)
            return [" | ".join(str(x) for x in row)[:300] for row in rows]

        def scan(settings: list[str]) -> dict[str, Any]:
            """One pass over all garbage in batches, as the collector reads it."""
            t0 = time.monotonic()
            after, found, times, first_batch, afters = "", 0, [], [], []
            while True:
                b0 = time.monotonic()
                batch = run(lambda c, a=after: gc._garbage_blobs(c, cutoff, a, BATCH), settings)
                times.append(1000 * (time.monotonic() - b0))
                if not batch:
                    break
                afters.append(after)
                first_batch = first_batch or [row.digest for row in batch]
                found += len(batch)
                after = batch[-1].digest
            return {
                "total_s": round(time.monotonic() - t0, 3),
                "batches": len(times) - 1,
                "found": found,
                "batch_ms_first": round(times[0], 2),
                "batch_ms_p50": round(statistics.median(times), 2),
                "batch_ms_last": round(times[-2] if len(times) > 1 else times[0], 2),
                "batch_ms": [round(x, 1) for x in times],
                "_first_batch": first_batch,
                "_middle_after": afters[len(afters) // 2] if afters else "",
            }

        def recheck_ms(digests: list[str], settings: list[str]) -> float:
            times = []
            for _ in range(5):
                t0 = time.monotonic()
                run(lambda c: gc._recheck(c, digests, cutoff), settings)
                times.append(1000 * (time.monotonic() - t0))
            return round(statistics.median(times), 2)

        t0 = time.monotonic()
        doomed = gc._unkept_manifests(cutoff)
        out["unkept_manifests_s"] = round(time.monotonic() - t0, 3)
        out["unkept_manifests"] = len(doomed)

        out["garbage_scan"] = scan([])
        sample = out["garbage_scan"].pop("_first_batch")
        middle = out["garbage_scan"].pop("_middle_after")
        out["garbage_scan_plan_after"] = middle  # a batch half-way through the pass
        out["garbage_scan_plan"] = plan(lambda c: gc._garbage_blobs(c, cutoff, middle, BATCH), [])
        out["recheck_batch_ms"] = recheck_ms(sample, [])
        out["recheck_plan"] = plan(lambda c: gc._recheck(c, sample, cutoff), [])
        if forced:
            out["forced_index_settings"] = forced
            out["garbage_scan_forced_index"] = scan(forced)
            out["garbage_scan_forced_index"].pop("_first_batch")
            out["garbage_scan_forced_index"].pop("_middle_after")
            out["garbage_scan_forced_index_plan"] = plan(
                lambda c: gc._garbage_blobs(c, cutoff, middle, BATCH), forced
            )
            out["recheck_batch_ms_forced_index"] = recheck_ms(sample, forced)
            out["recheck_forced_index_plan"] = plan(
                lambda c: gc._recheck(c, sample, cutoff), forced
            )
        with store._read() as conn:
            out["rows"] = {
                name: conn.execute(
                    select(func.count()).select_from(t.metadata.tables[name])
                ).scalar_one()
                for name in ("blobs", "repository_blobs", "manifests", "manifest_references")
            }
        event.remove(store.engine, "before_cursor_execute", _explain)
    finally:
        store.dispose()
    return out


def disk_probe(where: Path) -> dict[str, float]:
    """What a durable commit and the collector's storage deletes cost on this disk: a 4 KiB
    write + fsync (median of 30), and unlinking 200 files laid out like blobs."""
    scratch = where / "disk-probe"
    scratch.mkdir()
    try:
        times = []
        fd = os.open(scratch / "f", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            for _ in range(30):
                t0 = time.perf_counter()
                os.pwrite(fd, os.urandom(4096), 0)
                os.fsync(fd)
                times.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        paths = []
        for i in range(BATCH):
            d = scratch / f"{i:02x}"[:2] / secrets.token_hex(32)
            d.mkdir(parents=True, exist_ok=True)
            (d / "data").write_bytes(b"x" * 64)
            paths.append(d / "data")
        os.sync()
        t0 = time.perf_counter()
        for path in paths:
            path.unlink()
        unlink = time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "fsync_4k_ms_p50": round(1000 * statistics.median(times), 2),
        f"unlink_{BATCH}_files_ms": round(1000 * unlink, 2),
    }


def busy_cores(seconds: float = 2.0) -> float:
    """Cores the whole machine kept busy (plus steal) over `seconds`."""
    b0, s0 = procs.system_cpu_s()
    time.sleep(seconds)
    b1, s1 = procs.system_cpu_s()
    return (b1 - b0 + s1 - s0) / seconds


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until the rest of the machine is quieter than `limit` cores
    (other benchmarks or test runs on this shared VM)."""
    t0 = time.monotonic()
    busy = busy_cores()
    while busy > limit and time.monotonic() - t0 < timeout:
        print(f"# machine busy ({busy:.2f} cores), waiting ...", flush=True)
        time.sleep(8)
        busy = busy_cores()
    return round(busy, 2)


# --------------------------------------------------------------------------- server, pushes


def start_server(cfg: Cfg, work: Path, data: Path, url: str, password: str) -> Server:
    port = procs.free_port()
    cmd = [
        sys.executable,
        "-m",
        "wharf",
        "serve",
        "--data-dir",
        str(data),
        "--http-addr",
        f"127.0.0.1:{port}",
        "--workers",
        str(cfg.workers),
        "--db",
        url,
    ]
    env = dict(os.environ, WHARF_ADMIN_PASSWORD=password)
    log_path = work / "server.log"
    proc = procs._spawn(cmd, env, log_path, procs.REPO_ROOT)
    server = Server("wharf", "wharf", f"http://127.0.0.1:{port}", proc, work, log_path, cmd)
    server.wait_ready()
    return server


class Pusher:
    """Monolithic pushes (one `POST /v2/<repo>/blobs/uploads/?digest=` with the whole body)
    of distinct blobs: a fixed random prefix plus a fresh 32-byte suffix."""

    def __init__(self, base: str, password: str, size: int, conc: int) -> None:
        self.c = httpx.Client(
            base_url=base,
            auth=(USER, password),
            timeout=httpx.Timeout(120.0, connect=10.0),
            limits=httpx.Limits(max_connections=conc * 2, max_keepalive_connections=conc * 2),
        )
        self.conc = conc
        self.size = size
        self.prefix = os.urandom(size - 32)
        self._state = hashlib.sha256(self.prefix)

    def close(self) -> None:
        self.c.close()

    def push_one(self) -> dict[str, Any]:
        suffix = os.urandom(32)
        h = self._state.copy()
        h.update(suffix)
        digest = "sha256:" + h.hexdigest()
        t0 = time.time()
        r = self.c.post(
            f"/v2/{PUSH_REPO}/blobs/uploads/",
            params={"digest": digest},
            content=self.prefix + suffix,
            headers={"Content-Type": "application/octet-stream"},
        )
        t1 = time.time()
        if r.status_code != 201 or r.headers.get("Docker-Content-Digest") != digest:
            raise BenchError(f"push: {r.status_code} {r.headers} {r.text[:300]}")
        return {"digest": digest, "start": t0, "end": t1}

    def push_n(self, n: int) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(self.conc) as ex:
            return list(ex.map(lambda _: self.push_one(), range(n)))

    def push_until(self, stop: threading.Event) -> tuple[list[dict[str, Any]], list[str]]:
        done: list[dict[str, Any]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def loop() -> None:
            while not stop.is_set():
                try:
                    p = self.push_one()
                except Exception as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}"[:500])
                    time.sleep(0.05)
                    continue
                with lock:
                    done.append(p)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(self.conc)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return done, errors

    def tag(self, digests: list[str], tag: str) -> str:
        """Make pushed blobs non-garbage: one manifest (a fresh config + these as layers)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        cd = "sha256:" + hashlib.sha256(config).hexdigest()
        r = self.c.post(
            f"/v2/{PUSH_REPO}/blobs/uploads/",
            params={"digest": cd},
            content=config,
            headers={"Content-Type": "application/octet-stream"},
        )
        if r.status_code != 201:
            raise BenchError(f"push config: {r.status_code} {r.text[:300]}")
        body = manifest_doc([(cd, len(config)), *((d, self.size) for d in digests)])
        r = self.c.put(
            f"/v2/{PUSH_REPO}/manifests/{tag}", content=body, headers={"Content-Type": OCI_MANIFEST}
        )
        if r.status_code != 201:
            raise BenchError(f"PUT manifest: {r.status_code} {r.text[:300]}")
        return cd


def push_stats(pushes: list[dict[str, Any]], wall: float, size: int) -> dict[str, Any]:
    lat = [1000 * (p["end"] - p["start"]) for p in pushes]
    n = len(pushes)
    return {
        "blobs": n,
        "wall_s": round(wall, 3),
        "blobs_per_s": round(n / wall, 1) if wall > 0 else None,
        "mb_per_s": round(n * size / 1e6 / wall, 1) if wall > 0 else None,
        "latency_ms_p50": round(pct(lat, 50), 1) if lat else None,
        "latency_ms_p99": round(pct(lat, 99), 1) if lat else None,
        "latency_ms_max": round(max(lat), 1) if lat else None,
    }


def measure_pushes(cfg: Cfg, pusher: Pusher, server: Server, db_name: str | None) -> tuple:
    with CpuWindow(server, db_name) as cpu:
        t0 = time.monotonic()
        pushes = pusher.push_n(cfg.push_n)
        wall = time.monotonic() - t0
    return pushes, {**push_stats(pushes, wall, cfg.push_bytes), "cpu": cpu.as_dict()}


# --------------------------------------------------------------------------- the GC run


SUMMARY = re.compile(r"manifestsDeleted=(\d+) blobsDeleted=(\d+) bytesFreed=(\d+)")


def parse_time(s: str) -> float:
    return dt.datetime.fromisoformat(s).timestamp()


def phases_from_log(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Durations between the job's log lines (each line ends the phase it reports)."""
    names = [
        ("cutoff ", "start"),
        (" manifests are neither", "find unkept manifests"),
        ("manifests: ", "delete manifests"),
        ("blobs: ", "find + delete blobs"),
        ("manifestsDeleted=", "stale uploads + summary"),
    ]
    out = []
    prev = None
    for line in lines:
        ts = parse_time(line["time"])
        label = next((n for key, n in names if key in line["data"]), None)
        if prev is not None and label:
            out.append({"phase": label, "start": prev, "end": ts, "s": round(ts - prev, 3)})
        prev = ts
    return out


def run_gc(
    cfg: Cfg, jobs: JobStore, pusher: Pusher | None, server: Server, db_name: str | None
) -> dict[str, Any]:
    """One `onlinegc` job (graceMinutes 0), with pushes going on (`pusher`) or alone."""
    stop = threading.Event()
    result: dict[str, Any] = {}
    with CpuWindow(server, db_name) as cpu:
        job = jobs.create("onlinegc", {"graceMinutes": 0}, created_by="bench")
        enqueued = time.time()
        # Push only once the collector has fixed its cutoff: everything pushed from then on
        # is newer than the cutoff and must survive (graceMinutes 0).
        deadline = time.monotonic() + cfg.gc_timeout
        while not any(line["data"].startswith("cutoff ") for line in jobs.logs(job.id)):
            current = jobs.get(job.id)
            if current and current.state in FINISHED:
                raise BenchError(f"GC ended before logging a cutoff: {jobs.logs(job.id)}")
            if time.monotonic() > deadline:
                raise BenchError(f"GC did not start: {jobs.logs(job.id)}")
            time.sleep(0.01)
        push_start = time.time()
        box: dict[str, Any] = {"r": ([], [])}
        th = None
        if pusher is not None:
            th = threading.Thread(target=lambda: box.update(r=pusher.push_until(stop)), daemon=True)
            th.start()
        try:
            while True:
                current = jobs.get(job.id)
                assert current is not None
                if current.state in FINISHED:
                    break
                if time.monotonic() > deadline:
                    jobs.cancel(job.id)
                    raise BenchError(f"GC did not finish in {cfg.gc_timeout} s")
                time.sleep(0.05)
            observed_end = time.time()
        finally:
            stop.set()
            if th is not None:
                th.join()
    pushes, errors = box["r"]
    lines = jobs.logs(job.id, limit=100000)
    started, ended = aware(current.started_at), aware(current.ended_at)
    gc_wall = (ended - started).total_seconds()
    end_ts = ended.timestamp()
    during = [p for p in pushes if p["end"] <= end_ts]
    summary = next((SUMMARY.search(x["data"]) for x in lines if SUMMARY.search(x["data"])), None)
    phases = phases_from_log(lines)
    for ph in phases:  # push completions inside each phase
        n = sum(1 for p in pushes if ph["start"] <= p["end"] < ph["end"])
        ph["pushes"] = n
        ph["push_blobs_per_s"] = round(n / ph["s"], 1) if ph["s"] > 0 else None
    result.update(
        job_id=job.id,
        state=current.state,
        enqueue_to_start_s=round(started.timestamp() - enqueued, 3),
        gc_wall_s=round(gc_wall, 3),
        observed_end_lag_s=round(observed_end - end_ts, 3),
        manifests_deleted=int(summary.group(1)) if summary else None,
        blobs_deleted=int(summary.group(2)) if summary else None,
        bytes_freed=int(summary.group(3)) if summary else None,
        phases=[{k: v for k, v in ph.items() if k not in ("start", "end")} for ph in phases],
        log=[f"{x['time']} {x['data']}" for x in lines],
        cpu=cpu.as_dict(),
        push_errors=errors[:20],
        push_error_count=len(errors),
        all_pushed=[p["digest"] for p in pushes],
    )
    if pusher is not None:
        result["push_during"] = {
            **push_stats(during, end_ts - push_start, cfg.push_bytes),
            "window": "from the job's cutoff log line (push start) to the job's endedAt",
            "pushed_in_total": len(pushes),
        }
    if result["blobs_deleted"] is not None and gc_wall > 0:
        result["blobs_collected_per_s"] = round(result["blobs_deleted"] / gc_wall, 1)
    return result


# --------------------------------------------------------------------------- verification


def verify(
    url: str,
    storage_root: Path,
    pop: Population,
    pushed: set[str],
    baseline_manifests: int,
    gc: dict[str, Any],
    v: Variant,
    cfg: Cfg,
) -> dict[str, Any]:
    store = MetadataStore(url)
    try:
        with store._read() as conn:
            rows = set(conn.execute(select(t.blobs.c.digest)).scalars())
            linked = set(conn.execute(select(t.repository_blobs.c.digest)).scalars())
            manifest_ids = set(conn.execute(select(t.manifests.c.id)).scalars())
            refs = conn.execute(select(func.count()).select_from(t.manifest_references)).scalar()
    finally:
        store.dispose()
    files = {
        f"{p.parent.parent.parent.name}:{p.parent.name}"
        for p in (storage_root / "blobs").glob("*/*/*/data")
    }
    expected = pop.kept | pushed
    checks = {
        "kept_blob_rows_missing": len(pop.kept - rows),
        "garbage_blob_rows_left": len(pop.garbage & rows),
        "pushed_blob_rows_missing": len(pushed - rows),
        "unexpected_blob_rows": len(rows - expected - pop.garbage),
        "garbage_links_left": len(pop.garbage & linked),
        "kept_links_missing": len(pop.kept - linked),
        "kept_files_missing": len(pop.kept - files),
        "garbage_files_left": len(pop.garbage & files),
        "pushed_files_missing": len(pushed - files),
        "rows_without_file": len(rows - files),
        "files_without_row": len(files - rows),
        "tagged_manifests_missing": len(pop.tagged_ids - manifest_ids),
        "untagged_manifests_left": len(pop.untagged_ids & manifest_ids),
        "job_blobs_deleted_minus_expected": (gc["blobs_deleted"] or 0) - v.garbage,
        "job_manifests_deleted_minus_expected": (gc["manifests_deleted"] or 0) - v.untagged,
        "job_bytes_freed_minus_expected": (gc["bytes_freed"] or 0) - v.garbage * cfg.blob_bytes,
    }
    return {
        "ok": gc["state"] == "done" and all(x == 0 for x in checks.values()),
        "checks": checks,
        "blob_rows": len(rows),
        "blob_files": len(files),
        "manifests": len(manifest_ids),
        "manifest_references": refs,
        "expected_blob_rows": len(expected),
        "expected_manifests": len(pop.tagged_ids) + baseline_manifests,
    }


# --------------------------------------------------------------------------- one variant


def run_variant(cfg: Cfg, v: Variant, root: Path) -> dict[str, Any]:
    work = root / v.key
    data = work / "data"
    data.mkdir(parents=True)
    storage_root = data / "storage"
    db_name = None
    if cfg.db == "postgresql":
        db_name, url = pg_create_db(cfg.pg_url)
    else:
        url = f"sqlite:///{(data / 'wharf.db').resolve()}"
    out: dict[str, Any] = {
        "variant": v.key,
        "title": v.title,
        "blobs": v.blobs,
        "garbage_blobs": v.garbage,
        "tagged_manifests": v.tagged,
        "untagged_manifests": v.untagged,
        "unreferenced_blobs": v.unreferenced,
    }

    def say(msg: str) -> None:
        print(f"[{v.key}] {msg}", flush=True)

    def report_gc(key: str, gc: dict[str, Any]) -> None:
        say(
            f"GC {key}: {gc['state']} in {gc['gc_wall_s']} s, {gc['blobs_deleted']} blobs, "
            f"{gc['manifests_deleted']} manifests; phases "
            f"{[(p['phase'], p['s']) for p in gc['phases']]}"
        )

    def check(key: str, pushed: set[str], bench_manifests: int) -> None:
        res = verify(url, storage_root, pop, pushed, bench_manifests, out[key], v, cfg)
        out[key]["verify"] = res
        bad = {k: x for k, x in res["checks"].items() if x}
        say(f"verify after GC {key}: {'OK' if res['ok'] else 'FAILED'} {bad or ''}")

    server = None
    try:
        quiet = out["busy_cores_before"] = {}

        def settle(key: str) -> None:
            if cfg.wait_quiet > 0:
                quiet[key] = wait_quiet(cfg.quiet_limit, cfg.wait_quiet)

        settle("populate")
        say(f"populating {v.blobs:,} blobs ({v.garbage:,} garbage) ...")
        pop, out["populate"] = populate(cfg, v, url, storage_root)
        say(f"  {out['populate']}")
        out["probe"] = pr = probe_queries(url)
        out["disk"] = disk_probe(work)
        say(f"disk: {out['disk']}")
        say(f"queries alone: {probe_line(pr)}")
        password = secrets.token_urlsafe(16)
        server = start_server(cfg, work, data, url, password)
        pusher = Pusher(server.url, password, cfg.push_bytes, cfg.push_conc)
        store = MetadataStore(url)
        jobs = JobStore(store)
        try:
            # Warm-up (connections, the password cache, the repository row). Blobs pushed
            # before a collection are tagged, so that the garbage is exactly the populated one.
            warm = {p["digest"] for p in pusher.push_n(cfg.push_conc * 4)}
            pushed = warm | {pusher.tag(sorted(warm), "warmup")}
            settle("idle")

            # 1. The collection alone, on the fresh population.
            out["idle"] = run_gc(cfg, jobs, None, server, db_name)
            out["idle"].pop("all_pushed")
            report_gc("idle", out["idle"])
            check("idle", pushed, 1)

            # 2. The same garbage again, and the collection while pushes go on.
            out["restore"] = restore_garbage(url, storage_root, pop)
            say(f"garbage restored: {out['restore']}")
            settle("load")
            before, out["push_before"] = measure_pushes(cfg, pusher, server, db_name)
            say(f"push before GC: {fmt_push(out['push_before'])}")
            mine = {p["digest"] for p in before}
            pushed |= mine | {pusher.tag(sorted(mine), "before")}
            time.sleep(1.0)
            out["load"] = gc = run_gc(cfg, jobs, pusher, server, db_name)
            pushed |= set(gc.pop("all_pushed"))
            report_gc("under load", gc)
            say(f"push during GC: {fmt_push(gc['push_during'])}")
            check("load", pushed, 2)

            _, out["push_after"] = measure_pushes(cfg, pusher, server, db_name)
            say(f"push after GC: {fmt_push(out['push_after'])}")
            b, d = out["push_before"]["blobs_per_s"], gc["push_during"]["blobs_per_s"]
            a = out["push_after"]["blobs_per_s"]
            out["push_ratio_during_before"] = round(d / b, 2) if b and d else None
            # Against the mean of the measurements before and after: their spread is the noise.
            out["push_ratio_during_baseline"] = round(2 * d / (b + a), 2) if b and a and d else None
            if gc["gc_wall_s"] and out["idle"]["gc_wall_s"]:
                out["gc_slowdown_under_load"] = round(gc["gc_wall_s"] / out["idle"]["gc_wall_s"], 2)
        finally:
            pusher.close()
            store.dispose()
    finally:
        if server is not None:
            server.stop()
            out["server_log_tail"] = server.log_tail(15)
        if db_name:
            pg_drop_db(cfg.pg_url, db_name)
        if not cfg.keep:
            t0 = time.monotonic()
            shutil.rmtree(work, ignore_errors=True)
            out["cleanup_s"] = round(time.monotonic() - t0, 1)
    return out


# --------------------------------------------------------------------------- report


def fmt_push(p: dict[str, Any]) -> str:
    return (
        f"{p['blobs']} blobs in {p['wall_s']} s = {p['blobs_per_s']} blobs/s, "
        f"{p['mb_per_s']} MB/s, p50 {p['latency_ms_p50']} ms, p99 {p['latency_ms_p99']} ms"
    )


def probe_line(pr: dict[str, Any]) -> str:
    def scan(g: dict[str, Any]) -> str:
        return (
            f"{g['total_s']} s in {g['batches']} batches of {BATCH} (ms per batch: first "
            f"{g['batch_ms_first']}, median {g['batch_ms_p50']}, last {g['batch_ms_last']})"
        )

    line = (
        f"unkept manifests {pr['unkept_manifests_s']} s; garbage scan "
        f"{scan(pr['garbage_scan'])}; recheck {pr['recheck_batch_ms']} ms/batch"
    )
    if "garbage_scan_forced_index" in pr:
        line += (
            f"; with an index plan forced: scan {scan(pr['garbage_scan_forced_index'])}, recheck "
            f"{pr['recheck_batch_ms_forced_index']} ms/batch"
        )
    return line


def variant_ok(r: dict[str, Any]) -> bool:
    return all(r.get(k, {}).get("verify", {}).get("ok", False) for k in ("idle", "load"))


def print_report(out: dict[str, Any]) -> None:
    print()
    print(f"Online GC benchmark, {out['config']['db']}, {out['machine']['cpus']} CPUs")
    hdr = (
        "| variant | blobs | garbage | populate s | GC alone s | blobs/s | GC under load s | "
        "push before blobs/s | during | after | during / mean(before, after) | "
        "p99 ms before → during | ok |"
    )
    print(hdr)
    print("|---" * (hdr.count("|") - 1) + "|")
    for r in out["results"]:
        if "error" in r:
            print(f"| {r['variant']} | FAILED: {r['error'][:100]} |")
            continue
        i, g = r["idle"], r["load"]
        b, d, a = r["push_before"], g["push_during"], r["push_after"]
        print(
            f"| {r['variant']} | {r['blobs']:,} | {r['garbage_blobs']:,} | "
            f"{r['populate']['total_s']} | {i['gc_wall_s']} | {i.get('blobs_collected_per_s')} | "
            f"{g['gc_wall_s']} | {b['blobs_per_s']} | {d['blobs_per_s']} | {a['blobs_per_s']} | "
            f"{r['push_ratio_during_baseline']} | {b['latency_ms_p99']} → {d['latency_ms_p99']} | "
            f"{'yes' if variant_ok(r) else 'NO'} |"
        )
    print()
    for r in out["results"]:
        if "load" not in r:
            continue
        print(f"{r['variant']}: GC phases (job log timestamps): alone, under load, pushes/s")
        for pi, pl in zip(r["idle"]["phases"], r["load"]["phases"], strict=False):
            print(
                f"  {pi['phase']:<24} {pi['s']:>8.3f} s {pl['s']:>8.3f} s  "
                f"{pl['push_blobs_per_s']} blobs/s"
            )
        print(f"  queries alone (no server): {probe_line(r['probe'])}")


# --------------------------------------------------------------------------- main


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "date_utc": now_utc().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_start": load,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 blobs instead of 100,000")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--pg-url", default=os.environ.get("WHARF_BENCH_PG", DEFAULT_PG))
    ap.add_argument("--out", type=Path, help="JSON output (default bench/results/gc-<db>.json)")
    ap.add_argument("--variants", default="unreferenced,untagged")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--push-n", type=int, default=500, help="blobs per baseline measurement")
    ap.add_argument("--push-kib", type=int, default=256)
    ap.add_argument("--push-conc", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directories")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=120.0,
        metavar="S",
        help="before each measurement wait up to S s for the machine to be quiet (0: never)",
    )
    ap.add_argument("--quiet-limit", type=float, default=0.3, metavar="CORES")
    a = ap.parse_args()
    scale = 1 if a.quick else 10
    cfg = Cfg(
        db=a.db,
        quick=a.quick,
        scale=scale,
        repos=10 * scale,
        blob_bytes=64,
        push_bytes=a.push_kib * KiB,
        push_n=a.push_n,
        push_conc=a.push_conc,
        workers=a.workers,
        pg_url=a.pg_url,
        variants=a.variants.split(","),
        keep=a.keep,
        gc_timeout=600.0,
        wait_quiet=a.wait_quiet,
        quiet_limit=a.quiet_limit,
    )
    chosen = [v for v in variants(scale) if v.key in cfg.variants]
    if not chosen:
        ap.error(f"no such variant; choose from {[v.key for v in variants(scale)]}")
    out_path = a.out or procs.REPO_ROOT / "bench" / "results" / f"gc-{a.db}.json"
    root = Path(tempfile.mkdtemp(prefix="wharf-gcbench-"))
    t0 = time.monotonic()
    out: dict[str, Any] = {
        "machine": machine_info(),
        "config": {k: v for k, v in cfg.__dict__.items() if k != "pg_url"},
        "batch": BATCH,
        "results": [],
    }
    failed = False
    try:
        for v in chosen:
            try:
                out["results"].append(run_variant(cfg, v, root))
                failed |= not variant_ok(out["results"][-1])
            except Exception as e:
                traceback.print_exc()
                out["results"].append({"variant": v.key, "error": f"{type(e).__name__}: {e}"})
                failed = True
    finally:
        if cfg.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    out["total_s"] = round(time.monotonic() - t0, 1)
    with open("/proc/loadavg") as f:
        out["machine"]["loadavg_end"] = f.read().split()[:3]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print_report(out)
    print(f"\nwrote {out_path} ({out['total_s']} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
