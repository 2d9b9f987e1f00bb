"""Scale-out benchmark: Wharf replicas on one PostgreSQL database, and PostgreSQL vs SQLite.

    uv run python bench/scale.py [--quick] [--out bench/results/scale-xxx.json]

Setups (all started at the beginning, measured alternately, stopped at the end):

  pg-1x1      1 replica  x --workers 1, PostgreSQL metadata, shared file storage
  pg-3x1      3 replicas x --workers 1, one PostgreSQL database, one shared file storage
  pg-1x3      1 replica  x --workers 3 (same process count as pg-3x1, for fairness)
  sqlite-1x1  1 replica  x --workers 1, embedded SQLite (same storage flag)

Every PostgreSQL setup gets a fresh database (dropped at the end). The client spreads
requests over the replicas round-robin, per request for the Python client (a blob's POST
and its PUT usually land on different replicas) and per connection for wrk (thread i
connects to replica i mod n, like an L4 balancer). See docs/benchmarks.md, "Scale-out"."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import loadgen
import procs
from procs import BenchError, Server
from regclient import (
    MANIFEST_ACCEPT,
    OCI_MANIFEST,
    BaseFile,
    Blob,
    Registry,
    expect,
)
from run import ensure_tools, loadavg, machine_info, manifest_template, pmap, small_image

MiB = 1024 * 1024
GiB = 1024 * MiB
USER = "admin"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- configuration


@dataclass
class Cfg:
    quick: bool
    n_blobs: int
    blob_size: int
    blob_conc: int
    duration: int  # whole seconds: wrk and ab take no fractions
    repeat: int
    read_conc: int = 30  # wrk connections for GET (divisible by 3: 10 per replica)
    # ... and a second GET run with one connection per wrk thread: at most 3 requests at a
    # time per process, within the PostgreSQL connection pool (5), so no pool overflow
    low_conc: int = 3
    head_conc: int = 32  # ab -c for HEAD (single replica only)
    put_conc: int = 9  # wrk connections for manifest PUT (3 per replica)
    put_repos: int = 8  # PUTs go to these many repositories in turn (writers of one
    # repository are serialised by a row lock on PostgreSQL)
    wrk_threads: int = 3  # a multiple of the replica count; the same for every setup
    warmup: int = 1  # seconds of unmeasured load before the first run of a setup


@dataclass
class SetupSpec:
    key: str
    db: str  # "postgresql" | "sqlite"
    replicas: int
    workers: int

    @property
    def title(self) -> str:
        return (
            f"{self.key} ({self.replicas} replica{'s' if self.replicas > 1 else ''} x "
            f"{self.workers} worker{'s' if self.workers > 1 else ''}, {self.db})"
        )


SETUPS = {
    s.key: s
    for s in (
        SetupSpec("pg-1x1", "postgresql", 1, 1),
        SetupSpec("pg-3x1", "postgresql", 3, 1),
        SetupSpec("pg-1x3", "postgresql", 1, 3),
        SetupSpec("sqlite-1x1", "sqlite", 1, 1),
    )
}


@dataclass
class Setup:
    spec: SetupSpec
    servers: list[Server]
    regs: list[Registry]
    storage: Path
    db_name: str | None
    db_url: str
    rr: Iterator[int] = field(default_factory=itertools.count)
    state: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.spec.key

    def next_reg(self) -> Registry:
        """The replica for the next request (round-robin; next() on count is atomic)."""
        return self.regs[next(self.rr) % len(self.regs)]

    def addrs(self) -> list[tuple[str, int]]:
        out = []
        for s in self.servers:
            u = httpx.URL(s.url)
            out.append((u.host, u.port or 80))
        return out


# --------------------------------------------------------------------------- PostgreSQL


def _pg_engine(admin_url: str):  # -> sqlalchemy Engine
    from sqlalchemy import create_engine

    return create_engine(
        admin_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )


def pg_admin(admin_url: str, sql: str) -> list:
    from sqlalchemy import text

    engine = _pg_engine(admin_url)
    try:
        with engine.connect() as conn:
            r = conn.execute(text(sql))
            return list(r) if r.returns_rows else []
    finally:
        engine.dispose()


def pg_create_db(admin_url: str) -> tuple[str, str]:
    from sqlalchemy.engine import make_url

    name = f"wharf_bench_{secrets.token_hex(5)}"
    pg_admin(admin_url, f"CREATE DATABASE {name}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return name, url


def pg_drop_db(admin_url: str, name: str) -> None:
    for _ in range(20):  # replicas that were just stopped may still be disconnecting
        try:
            pg_admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            return
        except Exception:
            time.sleep(0.25)
    print(f"warning: could not drop database {name}", file=sys.stderr)


def pg_db_stats(admin_url: str, name: str) -> dict:
    cols = ("sessions", "xact_commit", "xact_rollback", "tup_returned", "tup_fetched")
    time.sleep(0.5)
    rows = pg_admin(
        admin_url, f"SELECT {', '.join(cols)} FROM pg_stat_database WHERE datname = '{name}'"
    )
    return dict(zip(cols, rows[0], strict=True)) if rows else {}


# --------------------------------------------------------------------------- measurement


def _client_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Timing:
    wall_s: float = 0.0
    wharf_cpu_s: float = 0.0
    wharf_cpu_by_replica: list[float] = field(default_factory=list)
    pg_cpu_s: float = 0.0  # live backends of this setup's database
    pg_exited_cpu_s: float = 0.0  # backends that exited meanwhile (see pg_cpu_by_db)
    pg_sessions: int = 0  # connections opened to this setup's database (pg_stat_database)
    pg_waits: dict | None = None  # with --pg-waits: WaitSampler.stop()
    pg_bg_cpu_s: float = 0.0  # PostgreSQL background processes (shared by all setups)
    pg_other_cpu_s: float = 0.0  # backends of other databases (other users of the server)
    client_cpu_s: float = 0.0
    other_cpu_s: float = 0.0
    steal_s: float = 0.0

    def as_dict(self) -> dict:
        w = self.wall_s or 1e-9
        return {
            "wall_s": round(self.wall_s, 3),
            "wharf_cpu_s": round(self.wharf_cpu_s, 2),
            "wharf_cpu_pct": round(100 * self.wharf_cpu_s / w, 1),
            "wharf_cpu_pct_by_replica": [round(100 * c / w, 1) for c in self.wharf_cpu_by_replica],
            "pg_cpu_s": round(self.pg_cpu_s, 2),
            "pg_exited_cpu_s": round(self.pg_exited_cpu_s, 2),
            # live + exited backends; exited ones may include other databases' (rare)
            "pg_cpu_pct": round(100 * max(0.0, self.pg_cpu_s + self.pg_exited_cpu_s) / w, 1),
            "pg_sessions_opened": self.pg_sessions,
            **({"pg_waits": self.pg_waits} if self.pg_waits else {}),
            "pg_bg_cpu_s": round(self.pg_bg_cpu_s, 2),
            "pg_other_dbs_cpu_s": round(self.pg_other_cpu_s, 2),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "client_cpu_pct": round(100 * self.client_cpu_s / w, 1),
            "other_cpu_s": round(self.other_cpu_s, 2),
            "steal_s": round(self.steal_s, 2),
            "noise_cores": round((self.other_cpu_s + self.steal_s) / w, 2),
        }


class WaitSampler(threading.Thread):
    """Samples pg_stat_activity of one database every `interval` s while a measurement
    runs: what its busy backends are waiting for (Lock/tuple, IO/WALSync, Client/ClientRead
    = waiting for Wharf, "running" = on CPU)."""

    def __init__(self, engine, db: str, interval: float = 0.1):  # engine: sqlalchemy Engine
        super().__init__(daemon=True, name="pg-waits")
        self.engine, self.db, self.interval = engine, db, interval
        self.counts: dict[str, int] = {}
        self.samples = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        from sqlalchemy import text

        q = text(
            "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
            "WHERE datname = :d AND state NOT IN ('idle') AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while not self.stop_event.is_set():
                for state, wtype, wevent in conn.execute(q, {"d": self.db}):
                    key = f"{wtype}/{wevent}" if wtype else "running"
                    if state and state.startswith("idle in transaction"):
                        key = f"idle in transaction ({key})"
                    self.counts[key] = self.counts.get(key, 0) + 1
                conn.rollback()
                self.samples += 1
                self.stop_event.wait(self.interval)

    def stop(self) -> dict:
        self.stop_event.set()
        self.join(5)
        top = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return {"samples": self.samples, "interval_s": self.interval, "counts": dict(top)}


class Ctx:
    def __init__(
        self, cfg: Cfg, setups: list[Setup], work: Path, pg_url: str, pg_waits: bool = False
    ):
        self.pg = _pg_engine(pg_url) if any(s.db_name for s in setups) else None
        self.pg_waits = pg_waits
        self.cfg = cfg
        self.setups = setups
        self.work = work
        self.db_names = [s.db_name for s in setups if s.db_name]
        self.base = BaseFile(work / "base.bin", cfg.blob_size)
        with open(self.base.path, "rb") as f:
            self.prefix = f.read(cfg.blob_size - 32)

    def pg_sessions(self, db: str) -> int:
        """Sessions ever opened to `db`. A backend reports its stats when it exits (or
        idle, with a delay), so connections opened and closed again are counted at once."""
        from sqlalchemy import text

        assert self.pg is not None
        with self.pg.connect() as conn:
            q = "SELECT sessions FROM pg_stat_database WHERE datname = :d"
            return int(conn.execute(text(q), {"d": db}).scalar() or 0)

    def close(self) -> None:
        if self.pg is not None:
            self.pg.dispose()

    @contextlib.contextmanager
    def timed(self, st: Setup) -> Iterator[Timing]:
        tm = Timing()
        os.sync()  # no page-cache write-back pending from the previous measurement
        sessions0 = self.pg_sessions(st.db_name) if st.db_name else 0
        w0 = [s.cpu_s() for s in st.servers]
        pg0 = procs.pg_cpu_by_db(self.db_names)
        sys0, steal0 = procs.system_cpu_s()
        waits = None
        if self.pg_waits and st.db_name:
            assert self.pg is not None
            waits = WaitSampler(self.pg, st.db_name)
            waits.start()
        cl0 = _client_cpu()
        t0 = time.perf_counter()
        yield tm
        tm.wall_s = time.perf_counter() - t0
        if waits is not None:
            tm.pg_waits = waits.stop()
        cl1 = _client_cpu()
        sys1, steal1 = procs.system_cpu_s()
        pg1 = procs.pg_cpu_by_db(self.db_names)
        w1 = [s.cpu_s() for s in st.servers]
        tm.wharf_cpu_by_replica = [b - a for a, b in zip(w0, w1, strict=True)]
        tm.wharf_cpu_s = sum(tm.wharf_cpu_by_replica)
        if st.db_name:
            tm.pg_cpu_s = pg1[st.db_name] - pg0[st.db_name]
            tm.pg_exited_cpu_s = pg1["exited"] - pg0["exited"]
            tm.pg_sessions = self.pg_sessions(st.db_name) - sessions0
        tm.pg_bg_cpu_s = pg1["bg"] - pg0["bg"]
        tm.pg_other_cpu_s = pg1["other"] - pg0["other"]
        tm.client_cpu_s = cl1 - cl0
        # "other": everything else on the machine (including other databases' backends
        # and the idle replicas of the other setups).
        ours = tm.wharf_cpu_s + tm.client_cpu_s + tm.pg_bg_cpu_s
        ours += max(0.0, tm.pg_cpu_s + tm.pg_exited_cpu_s)
        tm.other_cpu_s = max(0.0, (sys1 - sys0) - ours)
        tm.steal_s = steal1 - steal0


# --------------------------------------------------------------------------- scenarios


def _push_blob(ctx: Ctx, st: Setup, repo: str, b: Blob) -> None:
    """POST on one replica, monolithic PUT on the next (as a round-robin balancer would)."""
    loc = st.next_reg().start_upload(repo)
    u = httpx.URL(loc)
    path = u.raw_path.decode()
    path += ("&" if "?" in path else "?") + "digest=" + b.digest
    reg = st.next_reg()
    r = reg.c.put(
        path,
        content=ctx.prefix + b.suffix,
        headers={"Content-Type": "application/octet-stream"},
    )
    expect(r, 201, f"monolithic PUT via {reg.base}")
    got = r.headers.get("Docker-Content-Digest")
    if got is not None and got != b.digest:
        raise BenchError(f"PUT via {reg.base}: Docker-Content-Digest {got} != {b.digest}")


def sc_push(ctx: Ctx, st: Setup, rep: int) -> dict:
    c = ctx.cfg
    repo = "bench/scale-blobs"
    blobs = [ctx.base.blob(c.blob_size) for _ in range(c.n_blobs)]
    with ctx.timed(st) as tm:
        pmap(lambda b: _push_blob(ctx, st, repo, b), blobs, c.blob_conc)
    # Every replica sees every blob (size + digest), whichever replica took it.
    pmap(lambda b: st.next_reg().head_blob(repo, b.digest, b.size), blobs, c.blob_conc)
    st.state["blobs"] = blobs
    total = sum(b.size for b in blobs)
    return {"value": total / MiB / tm.wall_s, "bytes": total, **tm.as_dict()}


def sc_pull(ctx: Ctx, st: Setup, rep: int) -> dict:
    c = ctx.cfg
    repo = "bench/scale-blobs"
    blobs = st.state.get("blobs")
    if blobs is None:
        blobs = [ctx.base.blob(c.blob_size) for _ in range(c.n_blobs)]
        pmap(lambda b: _push_blob(ctx, st, repo, b), blobs, c.blob_conc)
        st.state["blobs"] = blobs
    with ctx.timed(st) as tm:
        sizes = pmap(lambda b: st.next_reg().pull_blob(repo, b.digest, b.size), blobs, c.blob_conc)
    return {"value": sum(sizes) / MiB / tm.wall_s, "bytes": sum(sizes), **tm.as_dict()}


def _ensure_small_manifest(st: Setup) -> str:
    repo = "bench/small"
    if "small_manifest" not in st.state:
        reg0 = st.regs[0]
        body = (manifest_template(*small_image(reg0, repo)) % "latest").encode()
        reg0.put_manifest(repo, "latest", body)
        for reg in st.regs:  # the manifest pushed through replica 1 is served by all
            reg.check_manifest(repo, "latest", body)
        st.state["small_manifest"] = body
    return f"{st.servers[0].url}/v2/{repo}/manifests/latest"


def _warm(ctx: Ctx, st: Setup, key: str, run: Callable[[int], dict]) -> None:
    if ctx.cfg.warmup > 0 and not st.state.get(f"warm:{key}"):
        run(ctx.cfg.warmup)  # connection pools, auth cache, PostgreSQL plan caches
        st.state[f"warm:{key}"] = True


def sc_manifest_get(ctx: Ctx, st: Setup, rep: int) -> dict:
    return _manifest_get(ctx, st, ctx.cfg.read_conc)


def sc_manifest_get_low(ctx: Ctx, st: Setup, rep: int) -> dict:
    return _manifest_get(ctx, st, ctx.cfg.low_conc)


def _manifest_get(ctx: Ctx, st: Setup, conc: int) -> dict:
    c = ctx.cfg
    url = _ensure_small_manifest(st)
    hdrs = {"Authorization": st.regs[0].auth_header, "Accept": MANIFEST_ACCEPT}
    script = loadgen.get_script(hdrs, st.addrs())

    def run(d: int) -> dict:
        return loadgen.run_wrk(url, script, d, conc, c.wrk_threads)

    _warm(ctx, st, "get", run)
    with ctx.timed(st) as tm:
        res = run(c.duration)
    expect_bytes = len(st.state["small_manifest"]) * res["requests"]
    if res["bytes"] < expect_bytes:
        raise BenchError(f"manifest GET: {res['bytes']} bytes read < {expect_bytes} body bytes")
    return {"value": res["rps"], **res, **tm.as_dict()}


def sc_manifest_head(ctx: Ctx, st: Setup, rep: int) -> dict:
    c = ctx.cfg
    if len(st.servers) != 1:
        raise BenchError("HEAD (ab) drives one server only")
    url = _ensure_small_manifest(st)
    hdrs = {"Authorization": st.regs[0].auth_header, "Accept": MANIFEST_ACCEPT}

    def run(d: int) -> dict:
        return loadgen.run_ab_head(url, hdrs, d, c.head_conc)

    _warm(ctx, st, "head", run)
    with ctx.timed(st) as tm:
        res = run(c.duration)
    return {"value": res["rps"], **res, **tm.as_dict()}


def put_script(
    repos: list[str],
    tag_prefix: str,
    template: str,
    headers: dict[str, str],
    addrs: list[tuple[str, int]],
) -> str:
    """wrk Lua: every request PUTs a distinct manifest (tag <prefix>-<thread>-<n>, which is
    also in the body) into one of `repos`, taken in turn."""
    lua = loadgen.lua_str
    hdr = ", ".join(f"[ {lua(k)} ] = {lua(v)}" for k, v in headers.items())
    paths = ", ".join(lua(f"/v2/{r}/manifests/") for r in repos)
    return f"""
local counter = 0
local tid = 0
local nextid = 1
local paths = {{ {paths} }}
local tag_prefix = {lua(tag_prefix)}
local template = {lua(template)}
local headers = {{{hdr}}}
{loadgen.addr_lua(addrs)}
setup = function(thread)
  pick_addr(thread)
  thread:set("id", nextid)
  nextid = nextid + 1
end

init = function(args)
  tid = id or 0
end

request = function()
  counter = counter + 1
  local tag = string.format("%s-%d-%d", tag_prefix, tid, counter)
  local path = paths[((counter + tid) % #paths) + 1]
  return wrk.format("PUT", path .. tag, headers, string.format(template, tag))
end
{loadgen.DONE_LUA}
"""


def sc_manifest_put(ctx: Ctx, st: Setup, rep: int) -> dict:
    c = ctx.cfg
    repos = [f"bench/manifests-{i}" for i in range(c.put_repos)]
    if "manifest_tmpl" not in st.state:
        # The same config and layer in every repository (same digests, one template).
        tmpls = {manifest_template(*small_image(st.regs[0], r)) for r in repos}
        assert len(tmpls) == 1
        st.state["manifest_tmpl"] = tmpls.pop()
    tmpl = st.state["manifest_tmpl"]
    hdrs = {"Authorization": st.regs[0].auth_header, "Content-Type": OCI_MANIFEST}

    def run(d: int, prefix: str) -> dict:
        script = put_script(repos, prefix, tmpl, hdrs, st.addrs())
        return loadgen.run_wrk(st.servers[0].url + "/", script, d, c.put_conc, c.wrk_threads)

    _warm(ctx, st, "put", lambda d: run(d, "warm"))
    prefix = f"r{rep}"
    with ctx.timed(st) as tm:
        res = run(c.duration, prefix)
    # Every completed PUT created a tag, listed and served by any replica.
    tags = [
        (repo, x)
        for repo in repos
        for x in st.next_reg().list_tags(repo)
        if x.startswith(prefix + "-")
    ]
    if len(tags) < res["requests"]:
        raise BenchError(
            f"manifest PUT: wrk counted {res['requests']} 2xx PUTs but the tags/list of "
            f"{len(repos)} repositories have only {len(tags)} tags with prefix {prefix}-"
        )
    for repo, tag in random.sample(tags, min(25, len(tags))):
        st.next_reg().check_manifest(repo, tag, (tmpl % tag).encode())
    return {"value": res["rps"], "tags_created": len(tags), **res, **tm.as_dict()}


@dataclass
class Scenario:
    key: str
    title: str
    unit: str
    fn: Callable[[Ctx, Setup, int], dict]
    applies: Callable[[SetupSpec], bool] = lambda s: True


def scenarios(cfg: Cfg) -> list[Scenario]:
    n, size, c = cfg.n_blobs, cfg.blob_size // MiB, cfg.blob_conc
    return [
        Scenario("push", f"push {n} x {size} MiB blobs, c={c}", "MiB/s", sc_push),
        Scenario("pull", f"pull {n} x {size} MiB blobs, c={c}", "MiB/s", sc_pull),
        Scenario("manifest_get", f"manifest GET, wrk c={cfg.read_conc}", "req/s", sc_manifest_get),
        Scenario(
            "manifest_get_low",
            f"manifest GET, wrk c={cfg.low_conc}",
            "req/s",
            sc_manifest_get_low,
        ),
        Scenario(
            "manifest_head",
            f"manifest HEAD, ab c={cfg.head_conc}",
            "req/s",
            sc_manifest_head,
            lambda s: s.replicas == 1 and s.workers == 1,
        ),
        Scenario(
            "manifest_put",
            f"manifest PUT, {cfg.put_repos} repo{'s' if cfg.put_repos > 1 else ''}, "
            f"wrk c={cfg.put_conc}",
            "req/s",
            sc_manifest_put,
        ),
    ]


# --------------------------------------------------------------------------- setups


def start_setups(
    specs: list[SetupSpec], work: Path, password: str, pg_admin_url: str, created: list[str]
) -> list[Setup]:
    out: list[Setup] = []
    try:
        for spec in specs:
            sdir = work / spec.key
            storage = sdir / "shared-storage"
            storage.mkdir(parents=True)
            db_name, db_url = None, ""
            extra = ["--storage", f"file://{storage}"]
            if spec.db == "postgresql":
                db_name, db_url = pg_create_db(pg_admin_url)
                created.append(db_name)
                extra = ["--db", db_url, *extra]
            servers: list[Server] = []
            st = Setup(spec, servers, [], storage, db_name, db_url)
            out.append(st)
            for i in range(spec.replicas):
                name = f"{spec.key}/r{i + 1}"
                wd = sdir / f"r{i + 1}"
                wd.mkdir()
                servers.append(procs.start_wharf(name, wd, USER, password, spec.workers, extra))
                if i == 0:  # the first replica migrates the schema and creates the admin
                    st.state["startup_s"] = [round(servers[0].wait_ready(), 2)]
            for s in servers[1:]:
                st.state["startup_s"].append(round(s.wait_ready(), 2))
            st.regs.extend(Registry(s.url, USER, password) for s in servers)
            for reg in st.regs:
                r = reg.c.get("/v2/")
                if r.status_code != 200:
                    raise BenchError(f"{spec.key}: GET /v2/ with credentials -> {r.status_code}")
    except BaseException:
        stop_setups(out)
        raise
    return out


def stop_setups(setups: list[Setup]) -> None:
    for st in setups:
        for s in st.servers:
            s.stop()
        for reg in st.regs:
            reg.close()


# --------------------------------------------------------------------------- running


def run_one(
    sc: Scenario, ctx: Ctx, st: Setup, rep: int, limit: float, retries: int, quiet_s: float
) -> dict:
    """One measurement; repeated (up to `retries` times) when other processes used more
    than `limit` cores meanwhile, keeping the quietest attempt. Before a repetition, wait
    up to `quiet_s` seconds for the machine to calm down."""
    best: dict | None = None
    for attempt in range(retries + 1):
        if attempt and quiet_s > 0:
            wait_quiet(limit, quiet_s)
        r = sc.fn(ctx, st, rep)
        r["rep"], r["attempt"] = rep, attempt
        pg_s = r["pg_cpu_pct"] * r["wall_s"] / 100  # live + exited backends
        if r.get("requests"):
            r["wharf_cost"] = round(1000 * r["wharf_cpu_s"] / r["requests"], 3)  # ms/req
            r["pg_cost"] = round(1000 * pg_s / r["requests"], 3)
            r["pg_conn_per_1k_req"] = round(1000 * r["pg_sessions_opened"] / r["requests"], 1)
        elif r.get("bytes"):
            r["wharf_cost"] = round(r["wharf_cpu_s"] / (r["bytes"] / GiB), 3)  # s/GiB
            r["pg_cost"] = round(pg_s / (r["bytes"] / GiB), 3)
        noise = r["noise_cores"]
        by = "/".join(f"{x:.0f}" for x in r["wharf_cpu_pct_by_replica"])
        print(
            f"  {sc.key:<13} {st.key:<11} rep {rep}: {r['value']:>9.1f} {sc.unit:<6}"
            f" wharf {r['wharf_cpu_pct']:.0f}% ({by}) pg {r['pg_cpu_pct']:.0f}%"
            + (f" ({r['pg_sessions_opened']} new conn)" if st.db_name else "")
            + f" client {r['client_cpu_pct']:.0f}% other {noise:.2f} cores"
            + ("  NOISY" if noise > limit else ""),
            flush=True,
        )
        if r.get("pg_waits"):
            w = r["pg_waits"]
            top = ", ".join(f"{k} {v}" for k, v in list(w["counts"].items())[:4])
            print(f"{'':<17}pg backends busy, {w['samples']} samples: {top}", flush=True)
        if best is None or noise < best["noise_cores"]:
            best = r
        if noise <= limit:
            break
    assert best is not None
    best["noisy"] = best["noise_cores"] > limit
    return best


def med(rs: list[dict], k: str) -> float | None:
    vals = [r[k] for r in rs if r.get(k) is not None]
    return round(statistics.median(vals), 3) if vals else None


def summarize(sc: Scenario, runs: dict[str, list[dict]]) -> dict:
    return {
        "title": sc.title,
        "unit": sc.unit,
        "cost_unit": "CPU ms/req" if sc.unit == "req/s" else "CPU s/GiB",
        "median": {k: med(rs, "value") for k, rs in runs.items()},
        "wharf_cpu_pct": {k: med(rs, "wharf_cpu_pct") for k, rs in runs.items()},
        "pg_cpu_pct": {k: med(rs, "pg_cpu_pct") for k, rs in runs.items()},
        "client_cpu_pct": {k: med(rs, "client_cpu_pct") for k, rs in runs.items()},
        "wharf_cost": {k: med(rs, "wharf_cost") for k, rs in runs.items()},
        "pg_cost": {k: med(rs, "pg_cost") for k, rs in runs.items()},
        "pg_conn_per_1k_req": {k: med(rs, "pg_conn_per_1k_req") for k, rs in runs.items()},
        "noisy_runs": {k: sum(1 for r in rs if r.get("noisy")) for k, rs in runs.items()},
        "runs": runs,
    }


RATIOS = [  # (name, numerator setup, denominator setup)
    ("3 replicas / 1 replica (x1 worker)", "pg-3x1", "pg-1x1"),
    ("3 replicas / 1 replica x 3 workers", "pg-3x1", "pg-1x3"),
    ("1 replica: 3 workers / 1 worker", "pg-1x3", "pg-1x1"),
    ("PostgreSQL / SQLite (1 replica x 1)", "pg-1x1", "sqlite-1x1"),
]


def ratios(results: dict) -> dict:
    out: dict[str, dict] = {}
    for name, a, b in RATIOS:
        row = {}
        for key, r in results.items():
            x, y = r["median"].get(a), r["median"].get(b)
            if x and y:
                row[key] = round(x / y, 3)
        if row:
            out[name] = row
    return out


def fmt(v: float | None, none: str = "-") -> str:
    if v is None:
        return none
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}" if v >= 10 else f"{v:.2f}"


def print_report(out: dict, scs: list[Scenario]) -> None:
    keys = out["setups_order"]
    res = out["results"]
    scs = [s for s in scs if s.key in res]
    w = max(len(s.title) for s in scs) + 2
    cw = 12
    print()
    print(f"{'throughput (median)':<{w}}{'unit':<7}" + "".join(f"{k:>{cw}}" for k in keys))
    for s in scs:
        r = res[s.key]
        line = f"{s.title:<{w}}{s.unit:<7}" + "".join(
            f"{fmt(r['median'].get(k)):>{cw}}" for k in keys
        )
        if any(r["noisy_runs"].values()):
            line += "  (noisy)"
        print(line)
    print()
    rt = out["ratios"]
    if rt:
        rw = max(len(n) for n in rt) + 2
        print(f"{'ratios':<{rw}}" + "".join(f"{s.key:>18}" for s in scs))
        for name, row in rt.items():
            print(f"{name:<{rw}}" + "".join(f"{fmt(row.get(s.key)):>18}" for s in scs))
        print()
    print("CPU, % of one core (median): wharf (all replicas) / postgres backends / client")
    print(f"{'':<{w}}" + "".join(f"{k:>18}" for k in keys))
    for s in scs:
        r = res[s.key]
        line = f"{s.title:<{w}}"
        for k in keys:
            if r["median"].get(k) is None:
                line += f"{'-':>18}"
                continue
            cell = f"{fmt(r['wharf_cpu_pct'][k])}/{fmt(r['pg_cpu_pct'][k])}/"
            cell += fmt(r["client_cpu_pct"][k])
            line += f"{cell:>18}"
        print(line)
    print()
    print("server CPU cost (median): wharf + postgres backends")
    print(f"{'':<{w}}{'unit':<11}" + "".join(f"{k:>16}" for k in keys))
    for s in scs:
        r = res[s.key]
        line = f"{s.title:<{w}}{r['cost_unit']:<11}"
        for k in keys:
            if r["median"].get(k) is None:
                line += f"{'-':>16}"
                continue
            line += f"{fmt(r['wharf_cost'][k]) + ' + ' + fmt(r['pg_cost'][k]):>16}"
        print(line)
    pg_keys = [k for k in keys if out["setups"][k]["db"] == "postgresql"]
    rate = [s for s in scs if s.unit == "req/s"]
    if pg_keys and rate:
        print()
        print("PostgreSQL connections opened per 1,000 requests (median; pool churn)")
        for s in rate:
            r = res[s.key]
            line = f"{s.title:<{w}}{'':<11}"
            line += "".join(f"{fmt(r['pg_conn_per_1k_req'].get(k)):>16}" for k in pg_keys)
            print(line)
    if out["failures"]:
        print(f"\n!! {len(out['failures'])} failure(s):")
        for f in out["failures"]:
            print(f"!! [{f['scenario']} on {f['setup']}] {f['error'].splitlines()[0]}")


def source_digest() -> str:
    """A digest of wharf/**/*.py as the replicas loaded it (the tree may change between
    runs while others work on it; this tells two runs of the same code apart)."""
    import hashlib

    h = hashlib.sha256()
    root = procs.REPO_ROOT / "wharf"
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def busy_cores(seconds: float = 2.0) -> float:
    """Cores the whole machine kept busy (plus steal) over `seconds`."""
    b0, s0 = procs.system_cpu_s()
    time.sleep(seconds)
    b1, s1 = procs.system_cpu_s()
    return (b1 - b0 + s1 - s0) / seconds


def wait_quiet(limit: float, timeout: float) -> float:
    """Wait (up to `timeout` s) until the machine is quieter than `limit` cores."""
    t0 = time.monotonic()
    busy = busy_cores()
    while busy > limit and time.monotonic() - t0 < timeout:
        print(f"# machine busy ({busy:.2f} cores), waiting ...", flush=True)
        time.sleep(8)
        busy = busy_cores()
    return busy


def make_cfg(a: argparse.Namespace) -> Cfg:
    quick = Cfg(True, n_blobs=16, blob_size=1 * MiB, blob_conc=8, duration=2, repeat=1)
    full = Cfg(False, n_blobs=64, blob_size=4 * MiB, blob_conc=8, duration=5, repeat=3)
    c = quick if a.quick else full
    if a.duration:
        c.duration = a.duration
    if a.repeat:
        c.repeat = a.repeat
    if a.blobs:
        c.n_blobs = a.blobs
    if a.blob_mib:
        c.blob_size = a.blob_mib * MiB
    for k in ("blob_conc", "read_conc", "low_conc", "head_conc", "put_conc", "put_repos"):
        if getattr(a, k):
            setattr(c, k, getattr(a, k))
    return c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="16 x 1 MiB blobs, 2 s load runs, 1 rep")
    ap.add_argument(
        "--out", type=Path, help="JSON output (default bench/results/scale[-quick]-<utc>.json)"
    )
    ap.add_argument(
        "--setups",
        type=lambda s: s.split(","),
        default=list(SETUPS),
        help=f"comma list of {','.join(SETUPS)} (default all)",
    )
    ap.add_argument("--only", type=lambda s: s.split(","), help="comma list of scenario keys")
    ap.add_argument("--repeat", type=int, help="repetitions per scenario (default 3; quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per wrk/ab run (default 5; quick 2)")
    ap.add_argument("--blobs", type=int, help="blobs per push/pull (default 64; quick 16)")
    ap.add_argument("--blob-conc", type=int, help="concurrent blob transfers (default 8)")
    ap.add_argument("--read-conc", type=int, help="wrk connections for GET (default 30)")
    ap.add_argument("--low-conc", type=int, help="wrk connections, 2nd GET run (default 3)")
    ap.add_argument("--head-conc", type=int, help="ab connections for HEAD (default 32)")
    ap.add_argument("--put-conc", type=int, help="wrk connections for PUT (default 9)")
    ap.add_argument(
        "--put-repos", type=int, help="repositories the manifest PUTs go to, in turn (default 8)"
    )
    ap.add_argument("--blob-mib", type=int, help="blob size in MiB (default 4; quick 1)")
    ap.add_argument(
        "--pg",
        default=os.environ.get("WHARF_BENCH_PG", DEFAULT_PG),
        help=f"PostgreSQL admin URL; a database is created per setup and dropped (default "
        f"$WHARF_BENCH_PG or {DEFAULT_PG})",
    )
    ap.add_argument("--noise-limit", type=float, default=0.25)
    ap.add_argument("--noise-retries", type=int, help="default 1; quick 0")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="S",
        help="before starting, and before repeating a noisy measurement, wait up to S "
        "seconds for the machine to be idle (< --noise-limit cores busy)",
    )
    ap.add_argument(
        "--pg-waits",
        action="store_true",
        help="sample pg_stat_activity every 0.1 s during PostgreSQL measurements and print "
        "what the backends wait for (costs a little CPU, counted as noise)",
    )
    ap.add_argument("--tmpdir", type=Path)
    ap.add_argument("--keep", action="store_true", help="keep data dirs and server logs")
    a = ap.parse_args()
    cfg = make_cfg(a)
    unknown = set(a.setups) - set(SETUPS)
    if unknown:
        ap.error(f"unknown setups {unknown}; known: {list(SETUPS)}")
    specs = [SETUPS[k] for k in a.setups]
    if a.noise_retries is None:
        a.noise_retries = 0 if a.quick else 1
    scs = scenarios(cfg)
    if a.only:
        scs = [s for s in scs if s.key in a.only]
    ensure_tools(["wharf"])
    try:
        pg_admin(a.pg, "SELECT 1")
    except Exception as e:
        if any(s.db == "postgresql" for s in specs):
            raise SystemExit(f"PostgreSQL not reachable at {a.pg}: {e}") from e
    if a.out is None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
        name = f"scale-{'quick-' if a.quick else ''}{stamp}.json"
        a.out = Path(__file__).resolve().parent / "results" / name

    password = secrets.token_urlsafe(18)
    work = Path(tempfile.mkdtemp(prefix="wharf-scale-", dir=a.tmpdir))
    meta = machine_info()
    meta.pop("reference", None)
    meta["wharf_source_sha256"] = source_digest()
    with contextlib.suppress(Exception):
        meta["postgresql"] = pg_admin(a.pg, "SHOW server_version")[0][0]
        meta["postgresql_settings"] = {
            k: pg_admin(a.pg, f"SHOW {k}")[0][0]
            for k in ("max_connections", "shared_buffers", "synchronous_commit", "fsync")
        }
    print(f"# wharf scale bench {'(quick) ' if cfg.quick else ''}{meta['date_utc']}  work {work}")
    print(
        f"# {meta['cpu']} x{meta['cpus']}, {meta['mem_mib']} MiB RAM, load "
        f"{meta['loadavg_start']}, PostgreSQL {meta.get('postgresql', '?')}"
    )
    t_start = time.monotonic()
    created: list[str] = []
    setups: list[Setup] = []
    results: dict[str, dict] = {}
    failures: list[dict] = []
    ctx: Ctx | None = None
    try:
        setups = start_setups(specs, work, password, a.pg, created)
        for st in setups:
            print(
                f"# {st.spec.title}: {', '.join(s.url for s in st.servers)} "
                f"(ready in {st.state['startup_s']} s)",
                flush=True,
            )
        ctx = Ctx(cfg, setups, work, a.pg, a.pg_waits)
        busy = wait_quiet(a.noise_limit, a.wait_quiet)
        meta["busy_cores_at_start"] = round(busy, 2)
        note = "  WARNING: busy machine, expect noisy numbers" if busy > a.noise_limit else ""
        print(f"# machine busy at start (replicas idle): {busy:.2f} cores{note}", flush=True)
        for sc in scs:
            todo = [st for st in setups if sc.applies(st.spec)]
            runs: dict[str, list[dict]] = {st.key: [] for st in todo}
            t_sc = time.monotonic()
            for rep in range(cfg.repeat):
                for st in todo if rep % 2 == 0 else todo[::-1]:
                    if st.state.get(f"failed:{sc.key}"):
                        continue
                    try:
                        runs[st.key].append(
                            run_one(sc, ctx, st, rep, a.noise_limit, a.noise_retries, a.wait_quiet)
                        )
                    except Exception as e:
                        st.state[f"failed:{sc.key}"] = True
                        msg = str(e) if isinstance(e, BenchError) else traceback.format_exc()
                        failures.append({"scenario": sc.key, "setup": st.key, "error": msg})
                        print(f"!! {sc.key} FAILED on {st.key}:\n{msg}", file=sys.stderr)
                        for s in st.servers:
                            if s.proc.poll() is not None:
                                print(f"!! {s.name} died:\n{s.log_tail()}", file=sys.stderr)
            print(f"  ({sc.key}: {time.monotonic() - t_sc:.0f} s)", flush=True)
            results[sc.key] = summarize(sc, runs)
    finally:
        stop_setups(setups)
        if ctx is not None:
            ctx.close()
        for st in setups:  # every backend has exited, so its statistics are in
            if st.db_name:
                with contextlib.suppress(Exception):
                    st.state["pg_stats"] = pg_db_stats(a.pg, st.db_name)
        for name in created:
            pg_drop_db(a.pg, name)

    meta["loadavg_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out = {
        "meta": meta,
        "config": vars(cfg) | {"noise_limit": a.noise_limit, "noise_retries": a.noise_retries},
        "setups_order": [st.key for st in setups],
        "setups": {
            st.key: {
                "db": st.spec.db,
                "replicas": st.spec.replicas,
                "workers": st.spec.workers,
                "startup_s": st.state.get("startup_s"),
                "cmds": [s.cmd for s in st.servers],
                "log_bytes": [
                    s.log_path.stat().st_size if s.log_path.exists() else 0 for s in st.servers
                ],
                "client_warnings": sorted({w for reg in st.regs for w in reg.warnings}),
                "pg_stats_whole_run": st.state.get("pg_stats"),
            }
            for st in setups
        },
        "results": results,
        "ratios": ratios(results),
        "failures": failures,
    }
    print_report(out, scs)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"# wrote {a.out} ({meta['elapsed_s']:.0f} s)")
    if a.keep:
        print(f"# kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
