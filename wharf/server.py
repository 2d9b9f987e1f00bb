"""Runs one replica: binds the listening sockets, then serves them from N worker processes.

Each worker runs the whole application (uvicorn on uvloop with httptools); the sockets are
bound once by the supervisor and shared, so the kernel spreads connections over the workers.
A worker that dies is replaced.
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
import sys
from dataclasses import dataclass
from multiprocessing.connection import wait

from wharf.config import Settings, split_addr

log = logging.getLogger("wharf.server")


@dataclass
class Listener:
    sock: socket.socket
    tls: bool


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
    listeners = []
    if settings.http_addr:
        listeners.append(Listener(bind(settings.http_addr), tls=False))
    if settings.https_addr:
        listeners.append(Listener(bind(settings.https_addr), tls=True))
    for listener in listeners:
        host, port = listener.sock.getsockname()[:2]
        scheme = "https" if listener.tls else "http"
        print(f"Wharf listening on {scheme}://{host}:{port}", file=sys.stderr, flush=True)
    if settings.workers == 1:
        run_worker(settings, listeners)
    else:
        _supervise(settings, listeners)


def run_worker(settings: Settings, listeners: list[Listener], supervised: bool = False) -> None:
    _tune_malloc()
    # Imported here: the supervisor process never needs the application's libraries.
    import uvicorn

    from wharf.app import create_app
    from wharf.cluster import heartbeat_forever, replica_id
    from wharf.jobs.runner import JobWorker
    from wharf.services import build_services

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )
    services = build_services(settings)
    services.policy.refresh()  # before serving: the epoch task keeps it fresh from then on
    app = create_app(settings, services)
    rid = replica_id(settings.data_dir)
    servers = []
    for listener in listeners:
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http="httptools",
            lifespan="off",
            log_level=settings.log_level,
            access_log=settings.access_log,
            server_header=False,
            timeout_keep_alive=30,
            ssl_certfile=str(settings.tls_cert) if listener.tls else None,
            ssl_keyfile=str(settings.tls_key) if listener.tls else None,
        )
        servers.append((uvicorn.Server(config), listener.sock))

    def stop_serving(_signum: int, _frame: object) -> None:
        for server, _ in servers:
            server.should_exit = True

    # uvicorn restores the handlers it found and re-raises the signal once it has shut down;
    # with these in place, that no longer kills the process before the job worker has put
    # its running job back.
    signal.signal(signal.SIGTERM, stop_serving)
    signal.signal(signal.SIGINT, stop_serving)
    worker = JobWorker(services, rid)

    async def main() -> None:
        tasks = [asyncio.create_task(server.serve(sockets=[sock])) for server, sock in servers]
        if supervised:
            tasks.append(asyncio.create_task(_parent_gone(os.getppid())))
        background = [
            asyncio.create_task(heartbeat_forever(services.store, rid)),
            asyncio.create_task(services.policy.refresh_forever()),
            asyncio.create_task(worker.run_forever()),
        ]
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

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    procs = [start() for _ in range(settings.workers)]
    while not stopping:
        wait([p.sentinel for p in procs], timeout=0.5)
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                log.warning("worker %s exited with %s; starting a new one", proc.pid, proc.exitcode)
                procs[i] = start()
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(15)
        if proc.is_alive():
            proc.kill()
