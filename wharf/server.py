"""Runs one replica: binds the listening sockets, then serves them from N worker processes.

Each worker runs the whole application (uvicorn on uvloop with httptools); the sockets are
bound once by the supervisor and shared, so the kernel spreads connections over the workers.
A worker that dies is replaced.

The process writes its pid to <data-dir>/wharf.pid once it serves. SIGHUP restarts it
gracefully: the listeners stop accepting, requests in flight finish, the job worker puts its
job back, then the process executes itself anew (same pid, new code, configuration re-read),
keeping the listening sockets whose address did not change, so that connections made
meanwhile wait in the backlog instead of being refused. A worker serving HTTPS switches to a
new certificate (the cluster's, from the metadata store, or its own files when they change)
without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import ssl
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wharf.config import Settings, split_addr

if TYPE_CHECKING:
    from wharf.metadata.identity import IdentityStore

log = logging.getLogger("wharf.server")

PID_FILE = "wharf.pid"
# Listening sockets handed to the re-executed process: "FD=ADDR,FD=ADDR".
LISTEN_FDS_ENV = "WHARF_LISTEN_FDS"
TLS_POLL_SECONDS = 2.0


class RestartFailed(RuntimeError):
    """The replica was asked to restart and did not come back in time (or exited)."""


@dataclass
class Listener:
    sock: socket.socket
    tls: bool
    addr: str = ""  # as configured; a restart keeps the socket when it is unchanged


# A restarting worker stops accepting, then waits this long before it shuts down.
DRAIN_SECONDS = 0.5
# Set by SIGHUP: once the process has stopped serving, it executes itself anew.
_restart = False


def bind(addr: str) -> socket.socket:
    host, port = split_addr(addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it, a response written as headers then body
    # waits for the client's delayed ACK (40 ms) under Nagle's algorithm.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> None:
    inherited = _inherited_sockets()
    listeners = []
    try:
        if settings.http_addr:
            sock = inherited.pop(settings.http_addr, None) or bind(settings.http_addr)
            listeners.append(Listener(sock, tls=False, addr=settings.http_addr))
        if settings.https_addr:
            sock = inherited.pop(settings.https_addr, None) or bind(settings.https_addr)
            listeners.append(Listener(sock, tls=True, addr=settings.https_addr))
    finally:
        for sock in inherited.values():  # an address that changed: its socket goes
            sock.close()
    for listener in listeners:
        host, port = listener.sock.getsockname()[:2]
        scheme = "https" if listener.tls else "http"
        role = " (redirects to HTTPS)" if not listener.tls and settings.redirect_http else ""
        print(f"Wharf listening on {scheme}://{host}:{port}{role}", file=sys.stderr, flush=True)
    # Until a handler is installed, a SIGHUP must not kill the replica (the default action).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        if settings.workers == 1:
            run_worker(settings, listeners)
        else:
            _supervise(settings, listeners)
    finally:
        if not _restart:
            remove_pid_file(settings.data_dir, os.getpid())
    if _restart:
        _reexec(listeners)


def _inherited_sockets() -> dict[str, socket.socket]:
    """The listening sockets a restarting process handed over, by configured address."""
    value = os.environ.pop(LISTEN_FDS_ENV, "")
    sockets: dict[str, socket.socket] = {}
    for item in filter(None, value.split(",")):
        fd, _, addr = item.partition("=")
        try:
            sock = socket.socket(fileno=int(fd))
        except (ValueError, OSError):
            log.warning("ignoring %s entry %r: not an open socket", LISTEN_FDS_ENV, item)
            continue
        if sock.type != socket.SOCK_STREAM or not sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_ACCEPTCONN
        ):
            sock.detach()  # not ours to close
            continue
        sock.set_inheritable(True)
        sockets[addr] = sock
    return sockets


def _reexec(listeners: list[Listener]) -> None:
    """Become a new `wharf serve` with the same arguments (same pid), handing the listening
    sockets over."""
    fds = []
    for listener in listeners:
        fd = listener.sock.fileno()
        os.set_inheritable(fd, True)  # clears FD_CLOEXEC
        fds.append(f"{fd}={listener.addr}")
    os.environ[LISTEN_FDS_ENV] = ",".join(fds)
    argv = [sys.executable, "-m", "wharf", *sys.argv[1:]]
    print("Wharf restarting (SIGHUP)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # SIG_IGN survives exec: a second SIGHUP during start-up does not kill the new process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.execv(sys.executable, argv)  # noqa: S606 - our own interpreter and arguments


def _request_restart(_signum: int, _frame: object) -> None:
    global _restart
    _restart = True


# -- the pid file, and restarting a running replica ------------------------------------------


def write_pid_file(data_dir: Path, pid: int) -> None:
    """<data-dir>/wharf.pid, atomically: written when the replica serves (again)."""
    path = data_dir / PID_FILE
    tmp = data_dir / f".{PID_FILE}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"{pid}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove_pid_file(data_dir: Path, pid: int) -> None:
    """Remove the pid file if it names `pid` (never another replica's)."""
    path = data_dir / PID_FILE
    if _read_pid(path) == pid:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(data_dir: Path) -> int | None:
    """The pid of the `wharf serve` that serves `data_dir`, or None when none does (no pid
    file, a dead process, or a pid now used by something else)."""
    pid = _read_pid(data_dir / PID_FILE)
    if pid is None or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return None if Path("/proc/self").exists() else pid  # no procfs: trust the file
    except OSError:
        return pid
    names = [a.decode(errors="replace") for a in args]
    is_wharf = any(
        n == "wharf" or n.endswith("/wharf") or n.endswith("wharf/__main__.py") for n in names
    )
    return pid if is_wharf and "serve" in names else None


def request_restart(data_dir: Path, timeout: float = 30) -> bool:
    """Ask the replica serving `data_dir` to restart gracefully (SIGHUP): it re-reads its
    configuration and loads the installed code, finishing requests in flight and keeping its
    listening sockets. Returns False when no replica runs there; True once it serves again
    (right after signalling when `timeout` is 0). Raises RestartFailed when it exits instead,
    or is not serving again within `timeout` seconds."""
    path = data_dir / PID_FILE
    pid = running_pid(data_dir)
    if pid is None:
        return False
    before = _stamp(path)
    try:
        os.kill(pid, signal.SIGHUP)
    except PermissionError:
        raise RestartFailed(
            f"not allowed to signal the replica (pid {pid}): run this as the user that runs "
            "`wharf serve`"
        ) from None
    except ProcessLookupError:
        return False
    if timeout <= 0:
        return True
    deadline = time.monotonic() + timeout
    while True:
        # The restarted process rewrites the pid file (a new file) once it serves again.
        stamp = _stamp(path)
        if stamp is not None and stamp != before and _read_pid(path) == pid:
            return True
        if not _alive(pid):
            raise RestartFailed(f"the replica (pid {pid}) exited while restarting: see its log")
        if time.monotonic() >= deadline:
            raise RestartFailed(
                f"the replica (pid {pid}) was asked to restart and is not serving again after "
                f"{timeout:g} s (requests in flight may still be finishing): see its log"
            )
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def run_worker(settings: Settings, listeners: list[Listener], supervised: bool = False) -> None:
    _tune_malloc()
    # Imported here: the supervisor process never needs the application's libraries.
    import uvicorn

    from wharf.app import create_app, redirect_to_https
    from wharf.cluster import heartbeat_forever, replica_id
    from wharf.connection import protocol_class
    from wharf.hosts import HostPolicy
    from wharf.jobs.runner import JobWorker
    from wharf.services import build_services

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    services = build_services(settings)
    services.policy.refresh()  # before serving: the epoch task keeps it fresh from then on
    certificates = (
        CertificateReloader(settings, services.identities if settings.tls_managed else None)
        if settings.https_addr
        else None
    )
    hosts = HostPolicy(settings, certificates.names if certificates else None)
    app = create_app(
        settings, services, ca_pem=certificates.ca_pem if certificates else None, hosts=hosts
    )
    rid = replica_id(settings.data_dir)
    servers = []
    for listener in listeners:
        config = uvicorn.Config(
            redirect_to_https(settings, app, hosts)
            if settings.redirect_http and not listener.tls
            else app,
            loop="uvloop",
            http=protocol_class(settings),  # httptools, with header deadlines and bounds
            lifespan="off",
            log_level=settings.log_level,
            access_log=settings.access_log,
            server_header=False,
            timeout_keep_alive=settings.keepalive_timeout,  # type: ignore[arg-type]
            # X-Forwarded-For/-Proto are believed only from the operator's proxies (uvicorn's
            # default believes any loopback peer): the client address is then the
            # right-most one in X-Forwarded-For that is not itself a trusted proxy.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies),
            ssl_certfile=str(settings.tls_cert) if listener.tls else None,
            ssl_keyfile=str(settings.tls_key) if listener.tls else None,
        )
        if listener.tls and certificates is not None:
            config.load()  # builds config.ssl, the context every new connection is wrapped by
            assert config.ssl is not None
            certificates.contexts.append(config.ssl)
        # uvicorn closes the sockets it is given when it shuts down; a restart keeps the
        # listening socket itself open (connections wait in its backlog), so it gets a copy.
        servers.append((uvicorn.Server(config), listener.sock.dup()))

    def stop_serving(_signum: int, _frame: object) -> None:
        for server, _ in servers:
            server.should_exit = True

    def restart(signum: int, frame: object) -> None:
        if not supervised:  # a supervised worker only drains; its supervisor re-executes
            _request_restart(signum, frame)
        # Stop accepting first, and let connections accepted a moment ago send their request
        # before uvicorn shuts down: it closes connections with no request in progress, and a
        # client that had just connected would see it disconnect without an answer. New
        # connections wait in the listening socket's backlog, which the restart keeps.
        for server, _ in servers:
            for listening in getattr(server, "servers", []):
                listening.close()
        asyncio.get_event_loop().call_later(DRAIN_SECONDS, stop_serving, signum, frame)

    # uvicorn restores the handlers it found and re-raises the signal once it has shut down;
    # with these in place, that no longer kills the process before the job worker has put
    # its running job back.
    signal.signal(signal.SIGTERM, stop_serving)
    signal.signal(signal.SIGINT, stop_serving)
    # A supervised worker gets SIGHUP from its supervisor when the replica restarts.
    signal.signal(signal.SIGHUP, restart)
    worker = JobWorker(services, rid)

    async def announce() -> None:
        # The pid file says "serving": written (anew, also after a restart) once every
        # listener accepts. Under a supervisor it names the supervisor.
        while not all(server.started for server, _ in servers):
            await asyncio.sleep(0.05)
        pid = os.getppid() if supervised else os.getpid()
        await asyncio.to_thread(write_pid_file, settings.data_dir, pid)

    async def main() -> None:
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        if supervised:
            tasks.append(asyncio.create_task(_parent_gone(os.getppid())))
        background = [
            asyncio.create_task(heartbeat_forever(services.store, rid, settings.data_dir)),
            asyncio.create_task(services.policy.refresh_forever()),
            asyncio.create_task(worker.run_forever()),
            asyncio.create_task(announce()),
        ]
        if certificates is not None:
            background.append(asyncio.create_task(certificates.run_forever()))
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for server, _ in servers:
            server.should_exit = True
        await worker.stop()
        for task in background:
            task.cancel()
        # One server saw the shutdown signal (only the last one installed holds the handler).
        for server, _ in servers:
            server.should_exit = True
        await asyncio.gather(*tasks[: len(servers)])

    import uvloop

    # uvicorn's `loop="uvloop"` only applies when uvicorn owns the loop; here we do.
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(main())
    services.close()


class CertificateReloader:
    """Keeps a worker's live SSL contexts on the current certificate, without a restart.

    Every TLS_POLL_SECONDS: when the replica serves the cluster's certificate
    (<data-dir>/tls/server.crt and server.key), the cluster's record is compared (by
    fingerprint) with the last one seen, and a new one is written to the files; then, in
    every case, when the files changed (inode, mtime, size), they are loaded into the live
    contexts, which the next handshakes use. The operator's own files are only read.

    Store and file reads run in a thread; `load_cert_chain` runs on the event loop, the only
    thread that uses the contexts, from one snapshot of the files that was first loaded into
    a scratch context: a certificate and key caught half-replaced never reach the live
    context (it would be left with a certificate and no key).
    """

    def __init__(self, settings: Settings, identities: IdentityStore | None) -> None:
        assert settings.tls_cert and settings.tls_key
        self.cert, self.key = settings.tls_cert, settings.tls_key
        self.data_dir = settings.data_dir
        self.identities = identities  # None: not the cluster's certificate
        self.contexts: list[ssl.SSLContext] = []
        self._stamp = self._files_stamp()
        self._seen: str | None = None  # the cluster record's fingerprint last acted on
        chain = self.cert.read_text()
        self._ca: str | None = self._read_ca(chain)
        self._names = self._read_names(chain)
        self.fingerprint: str | None = None

    def ca_pem(self) -> str | None:
        return self._ca

    def names(self) -> list[str]:
        """The names the served certificate is valid for (the Hosts it answers for)."""
        return self._names

    @staticmethod
    def _read_names(chain: str) -> list[str]:
        from wharf import tls

        return tls.certificate_names(chain)

    def _files_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [os.stat(p) for p in (self.cert, self.key)]
        except OSError:
            return None
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size) for st in stats)

    def _read_ca(self, chain: str) -> str | None:
        from wharf import tls

        if self.identities is not None:
            with contextlib.suppress(OSError):
                return tls.paths(self.data_dir)[2].read_text()
        return tls.last_certificate(chain)

    def poll(self) -> tuple[Any, ...] | None:
        """Blocking (a thread): a snapshot (stamp, chain, key, CA) of files that changed."""
        from wharf import tls

        if self.identities is not None:
            seen = tls.recorded_fingerprint(self.identities)
            if seen is not None and seen != self._seen:
                tls.sync_files(self.data_dir, self.identities)
                self._seen = seen
        stamp = self._files_stamp()
        if stamp is None or stamp == self._stamp:
            return None
        chain, key = self.cert.read_bytes(), self.key.read_bytes()
        return stamp, chain, key, self._read_ca(chain.decode(errors="replace"))

    def apply(self, snapshot: tuple[Any, ...]) -> bool:
        """On the event loop: load the snapshot into the live contexts."""
        stamp, chain, key, ca = snapshot
        with _pem_file(chain + b"\n" + key) as path:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(path)
            except ssl.SSLError as e:
                # Caught between two files being replaced, or a bad pair: keep serving the
                # current certificate, and look again at the next poll.
                log.warning("not loading the changed TLS files (%s); will retry", e.reason)
                return False
            for context in self.contexts:
                context.load_cert_chain(path)
        self._stamp, self._ca = stamp, ca
        self._names = self._read_names(chain.decode(errors="replace"))
        from wharf import tls

        self.fingerprint = tls.leaf_fingerprint(chain.decode(errors="replace"))
        log.info("serving the TLS certificate %s (no restart needed)", self.fingerprint)
        return True

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(TLS_POLL_SECONDS)
            try:
                snapshot = await asyncio.to_thread(self.poll)
                if snapshot is not None:
                    self.apply(snapshot)
            except Exception as e:
                from wharf.faults import log_failure  # a worker's: the supervisor stays lean

                log_failure(log, "could not check for a new TLS certificate", e)


@contextlib.contextmanager
def _pem_file(data: bytes) -> Any:
    """A file holding `data` (a certificate chain and its key) for `load_cert_chain`, which
    only reads files: in memory (memfd) where the system has it, else a 0600 temporary."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("wharf-tls", os.MFD_CLOEXEC)
        try:
            os.write(fd, data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    import tempfile

    fd, name = tempfile.mkstemp(prefix="wharf-tls-")
    try:
        os.write(fd, data)
        os.close(fd)
        yield name
    finally:
        os.unlink(name)


def _tune_malloc() -> None:
    """Keep glibc's allocator from hoarding memory in a worker.

    Request bodies pass through 1 MiB buffers allocated on the event loop and freed in worker
    threads. With glibc's defaults each thread may get its own arena (up to 8 per core), and
    buffers freed there are rarely returned: RSS of a 2-worker server grew from 123 to
    338 MiB over a benchmark run. Two arenas stop that. The mmap threshold is pinned at
    4 MiB, above the buffer size: with a lower one every 1 MiB buffer was a fresh mmap,
    whose page faults doubled the CPU per GiB pushed or pulled.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    mallopt(m_arena_max, 2)
    mallopt(m_mmap_threshold, 4 << 20)
    mallopt(m_trim_threshold, 1 << 20)


async def _parent_gone(parent: int) -> None:
    # A worker whose supervisor was killed must not keep serving the port on its own.
    while os.getppid() == parent:
        await asyncio.sleep(1)
    log.warning("supervisor %s is gone; worker %s exits", parent, os.getpid())


def _supervise(settings: Settings, listeners: list[Listener]) -> None:
    # fork, not spawn: the supervisor is lean (no threads, none of the app's libraries), and
    # spawn would add a resource-tracker process and re-import everything.
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def start() -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=run_worker, args=(settings, listeners, True), daemon=False)
        proc.start()
        return proc

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if signum == signal.SIGHUP:
            _request_restart(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, stop)
    procs = [start() for _ in range(settings.workers)]
    while not stopping:
        wait([p.sentinel for p in procs], timeout=0.5)
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                log.warning("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
                procs[i] = start()
    for proc in procs:
        if proc.is_alive():
            # On a restart the workers drain (stop accepting, finish what they accepted).
            os.kill(proc.pid, signal.SIGHUP if _restart else signal.SIGTERM)
    for proc in procs:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
