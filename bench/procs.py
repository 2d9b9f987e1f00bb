"""Server processes for the benchmark: start/stop Wharf and the reference registry,
and sample memory / CPU of each server's whole process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent
# Launcher processes that are not part of the server proper (``uv run`` waits on its child).
LAUNCHER_COMMS = {"uv"}


class BenchError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --------------------------------------------------------------------------- /proc helpers


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    # Fields after the command name, which may contain spaces/parens.
    return data.rsplit(")", 1)[1].split()


def children_map() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        f = _stat_fields(int(name))
        if f is None:
            continue
        out.setdefault(int(f[1]), []).append(int(name))
    return out


def process_tree(root: int) -> list[int]:
    cmap = children_map()
    todo, seen = [root], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo.extend(cmap.get(p, []))
    return seen


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def read_mem_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB, or None if the process is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None
    return rss, hwm


def read_pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_cpu_s(pid: int) -> float | None:
    f = _stat_fields(pid)
    if f is None:
        return None
    # utime, stime, cutime, cstime are fields 14..17 (1-based) => 11..14 after the comm split.
    return sum(int(x) for x in f[11:15]) / CLK_TCK


def system_cpu_s() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK, v[7] / CLK_TCK


def reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # 5 = reset the peak resident set size (VmHWM)
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- sampling


@dataclass
class MemStats:
    """Memory of one server's process tree (launcher excluded)."""

    peak_rss_kb: int = 0  # max over samples of sum(VmRSS)
    peak_pss_kb: int = 0  # max over (less frequent) samples of sum(Pss)
    hwm_by_pid: dict[int, int] = field(default_factory=dict)  # max VmHWM seen per pid
    last_rss_kb: int = 0
    start_rss_kb: int = 0  # summed RSS when the phase started
    nprocs: int = 0

    def hwm_sum_kb(self) -> int:
        return sum(self.hwm_by_pid.values())


class Sampler(threading.Thread):
    """Background sampler of RSS (every `interval` s) and PSS (every 10th tick)."""

    def __init__(self, servers: list[Server], interval: float = 0.05):
        super().__init__(daemon=True, name="mem-sampler")
        self.servers = servers
        self.interval = interval
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.samples = 0

    def run(self) -> None:
        tick = 0
        while not self.stop_event.is_set():
            for s in self.servers:
                if tick % 10 == 0 or not s.tree:
                    s.refresh_tree()
                s.sample(with_pss=tick % 10 == 0, lock=self.lock)
            self.samples += 1
            tick += 1
            self.stop_event.wait(self.interval)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    kind: str  # "wharf" | "reference"
    url: str
    proc: subprocess.Popen
    workdir: Path
    log_path: Path
    cmd: list[str]
    notes: list[str] = field(default_factory=list)
    tree: list[int] = field(default_factory=list)
    run_mem: MemStats = field(default_factory=MemStats)
    phase_mem: MemStats | None = None
    cpu_by_pid: dict[int, float] = field(default_factory=dict)

    # -- lifecycle
    def wait_ready(self, timeout: float = 120.0) -> float:
        t0 = time.monotonic()
        with httpx.Client(timeout=2.0) as c:
            while time.monotonic() - t0 < timeout:
                if self.proc.poll() is not None:
                    raise BenchError(
                        f"{self.name}: server exited with {self.proc.returncode} during "
                        f"startup; log tail:\n{self.log_tail()}"
                    )
                try:
                    r = c.get(self.url + "/v2/")
                    if r.status_code in (200, 401):
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        raise BenchError(f"{self.name}: not ready after {timeout}s; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # our own session/process group
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # Make sure nothing of the group survived (e.g. uvicorn workers).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    # -- sampling
    def refresh_tree(self) -> None:
        if self.proc.poll() is not None:
            self.tree = []
            return
        self.tree = [p for p in process_tree(self.proc.pid) if comm(p) not in LAUNCHER_COMMS]

    def sample(self, with_pss: bool, lock: threading.Lock) -> None:
        rss_sum, pss_sum, n = 0, 0, 0
        hwms: dict[int, int] = {}
        for pid in self.tree:
            m = read_mem_kb(pid)
            if m is None:
                continue
            n += 1
            rss_sum += m[0]
            hwms[pid] = m[1]
            if with_pss:
                pss_sum += read_pss_kb(pid)
        with lock:
            for st in (self.run_mem, self.phase_mem):
                if st is None:
                    continue
                st.last_rss_kb = rss_sum
                st.nprocs = n
                st.peak_rss_kb = max(st.peak_rss_kb, rss_sum)
                st.peak_pss_kb = max(st.peak_pss_kb, pss_sum)
                for pid, h in hwms.items():
                    st.hwm_by_pid[pid] = max(st.hwm_by_pid.get(pid, 0), h)

    def phase_start(self, sampler: Sampler) -> None:
        """Start a memory phase: reset VmHWM of every process (after recording it)."""
        self.refresh_tree()
        self.sample(with_pss=True, lock=sampler.lock)  # fold current HWMs into run stats
        ok = all(reset_hwm(p) for p in self.tree)
        if not ok:
            self.notes.append("could not reset VmHWM (clear_refs); phase HWM is since start")
        with sampler.lock:
            self.phase_mem = MemStats()
        self.sample(with_pss=True, lock=sampler.lock)
        with sampler.lock:
            self.phase_mem.start_rss_kb = self.phase_mem.last_rss_kb

    def phase_end(self, sampler: Sampler) -> MemStats:
        self.sample(with_pss=True, lock=sampler.lock)
        with sampler.lock:
            st, self.phase_mem = self.phase_mem, None
        assert st is not None
        return st

    def cpu_s(self) -> float:
        """CPU seconds consumed so far by the server tree (dead pids keep their last value)."""
        for pid in process_tree(self.proc.pid) if self.proc.poll() is None else []:
            if comm(pid) in LAUNCHER_COMMS:
                continue
            v = read_cpu_s(pid)
            if v is not None:
                self.cpu_by_pid[pid] = v
        return sum(self.cpu_by_pid.values())

    def mem_summary(self, st: MemStats) -> dict:
        return {
            "peak_rss_sampled_mib": round(st.peak_rss_kb / 1024, 1),
            "peak_pss_sampled_mib": round(st.peak_pss_kb / 1024, 1),
            "hwm_sum_mib": round(st.hwm_sum_kb() / 1024, 1),
            "rss_at_start_mib": round(st.start_rss_kb / 1024, 1),
            "nprocs": st.nprocs,
        }


def _spawn(cmd: list[str], env: dict, log_path: Path, cwd: Path) -> subprocess.Popen:
    log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group => we can stop exactly this tree
        )
    finally:
        log.close()


def start_wharf(
    name: str,
    workdir: Path,
    user: str,
    password: str,
    workers: int,
    extra_args: list[str] | tuple[str, ...] = (),
) -> Server:
    """`wharf serve` with its own data dir in `workdir`; `extra_args` are appended (e.g.
    `--db URL --storage file:///dir` for a replica of a shared registry)."""
    if user != "admin":
        raise BenchError("Wharf's bootstrap user is 'admin'")
    data = workdir / "data"
    data.mkdir(parents=True)
    port = free_port()
    cmd = [
        "uv",
        "run",
        "--no-sync",
        "wharf",
        "serve",
        "--data-dir",
        str(data),
        "--http-addr",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        *extra_args,
    ]
    env = dict(os.environ, WHARF_ADMIN_PASSWORD=password)
    log_path = workdir / "server.log"
    proc = _spawn(cmd, env, log_path, REPO_ROOT)
    return Server(name, "wharf", f"http://127.0.0.1:{port}", proc, workdir, log_path, cmd)


def make_htpasswd(path: Path, user: str, password: str, cost: int) -> str:
    """Write a bcrypt htpasswd file. Returns the tool used."""
    if shutil.which("htpasswd"):
        out = subprocess.run(
            ["htpasswd", "-nbB", "-C", str(cost), user, password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        path.write_text(out + "\n")
        return "htpasswd (apache2-utils)"
    try:
        import bcrypt  # type: ignore[import-not-found]
    except ImportError as e:
        raise BenchError(
            "neither `htpasswd` (apt-get install apache2-utils) nor python bcrypt is available; "
            "use --ref-auth none"
        ) from e
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    path.write_text(f"{user}:{h}\n")
    return "python bcrypt"


def start_reference(
    name: str, workdir: Path, user: str, password: str, auth: bool, bcrypt_cost: int
) -> Server:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        raise BenchError(
            "docker-registry not found: apt-get install -y --no-install-recommends docker-registry"
        )
    data = workdir / "data"
    data.mkdir(parents=True)
    port = free_port()
    notes = []
    cfg = [
        "version: 0.1",
        "log:",
        # No per-request logging, like Wharf's default (--no-access-log, info level):
        # distribution logs 2 lines per request at info plus an access-log line.
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  cache:",  # as in the Debian package's and upstream's default config
        "    blobdescriptor: inmemory",
        "  filesystem:",
        f"    rootdirectory: {data}",
        "  delete:",
        "    enabled: true",
        "http:",
        f"  addr: 127.0.0.1:{port}",
    ]
    if auth:
        tool = make_htpasswd(workdir / "htpasswd", user, password, bcrypt_cost)
        cfg += [
            "auth:",
            "  htpasswd:",
            "    realm: wharf-bench",
            f"    path: {workdir / 'htpasswd'}",
        ]
        notes.append(f"htpasswd auth, bcrypt cost {bcrypt_cost}, generated with {tool}")
    else:
        notes.append("NO auth (Authorization header is sent but ignored)")
    (workdir / "config.yml").write_text("\n".join(cfg) + "\n")
    cmd = [binary, "serve", str(workdir / "config.yml")]
    log_path = workdir / "server.log"
    proc = _spawn(cmd, dict(os.environ), log_path, workdir)
    return Server(
        name, "reference", f"http://127.0.0.1:{port}", proc, workdir, log_path, cmd, notes
    )


def reference_version() -> str:
    binary = shutil.which("docker-registry") or shutil.which("registry")
    if not binary:
        return "missing"
    try:
        return subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def ensure_port_5000_free() -> None:
    """The Debian package may auto-start a service on :5000; stop it if so."""
    if not port_in_use(5000):
        return
    print("port 5000 busy; trying to stop the packaged docker-registry service", file=sys.stderr)
    for cmd in (
        ["systemctl", "stop", "docker-registry"],
        ["service", "docker-registry", "stop"],
    ):
        if shutil.which(cmd[0]):
            subprocess.run(cmd, check=False, capture_output=True)
    time.sleep(1)
    if port_in_use(5000):
        print("warning: port 5000 still in use (benchmark uses other ports)", file=sys.stderr)


_PG_TITLE = re.compile(r"^postgres: (?:[^:]+: )?(.*)$")


def pg_cpu_by_db(db_names: list[str]) -> dict[str, float]:
    """utime+stime of every PostgreSQL process, grouped: one entry per database of ours
    (client backends and autovacuum workers whose title names it), "bg" (postmaster,
    checkpointer, walwriter, ...), "other" (backends of other databases) and "exited":
    the postmaster's cutime+cstime, i.e. the CPU of backends that have exited (of any
    database: connections that a pool opens and closes again show up only there)."""
    out = dict.fromkeys([*db_names, "bg", "other", "exited"], 0.0)
    ours = set(db_names)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if not comm(pid).startswith("postgres"):
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        f = _stat_fields(pid)
        if f is None:
            continue
        cpu = (int(f[11]) + int(f[12])) / CLK_TCK
        if not title.startswith("postgres:"):  # the postmaster: /usr/lib/.../postgres -D ...
            out["exited"] += (int(f[13]) + int(f[14])) / CLK_TCK
        m = _PG_TITLE.match(title)
        words = set(m.group(1).split()) if m else set()
        hit = ours & words
        if hit:
            out[hit.pop()] += cpu
        elif m and "(" in m.group(1) and ")" in m.group(1):  # "user db host(port) state"
            out["other"] += cpu
        else:
            out["bg"] += cpu
    return out
