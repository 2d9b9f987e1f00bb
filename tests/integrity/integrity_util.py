"""Helpers shared by the data-integrity tests: registry calls, on-disk checks, /proc probes."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

MiB = 1 << 20
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def error_codes(response: httpx.Response) -> list[str]:
    try:
        return [e["code"] for e in response.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        return []


# -- generated content ---------------------------------------------------------------------


class Content:
    """Deterministic pseudo-random content of any size, produced piece by piece.

    Piece i is a random block (from a seeded PRNG) with i written over its first 8 bytes, so no
    two pieces are equal and nothing of the whole needs to be held in memory.
    """

    def __init__(self, size: int, *, seed: int = 0, piece: int = 8 * MiB) -> None:
        self.size = size
        self.piece = piece
        self._block = random.Random(seed).randbytes(piece)
        self._digest: str | None = None
        self._last: tuple[int, bytes] = (-1, b"")

    def piece_at(self, index: int) -> bytes:
        if self._last[0] != index:
            self._last = (index, index.to_bytes(8, "big") + self._block[8:])
        return self._last[1]

    def pieces(
        self, start: int = 0, end: int | None = None, *, pause: float = 0.0, out: int | None = None
    ) -> Iterator[bytes]:
        """Bytes [start, end) in pieces of at most `out` bytes, sleeping `pause` after each."""
        end = self.size if end is None else end
        out = out or self.piece
        pos = start
        while pos < end:
            index, within = divmod(pos, self.piece)
            data = self.piece_at(index)[within : within + min(out, end - pos)]
            yield data
            pos += len(data)
            if pause:
                time.sleep(pause)

    def read(self, start: int = 0, end: int | None = None) -> bytes:
        return b"".join(self.pieces(start, end))

    @property
    def digest(self) -> str:
        if self._digest is None:
            h = hashlib.sha256()
            for data in self.pieces():
                h.update(data)
            self._digest = f"sha256:{h.hexdigest()}"
        return self._digest


# -- registry calls --------------------------------------------------------------------------


def start_upload(client: httpx.Client, repo: str) -> tuple[str, str]:
    """POST a new upload session; returns (location, upload id)."""
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"], r.headers["Docker-Upload-UUID"]


def patch_chunk(client: httpx.Client, location: str, data: bytes, start: int) -> httpx.Response:
    headers = {**OCTET, "Content-Range": f"{start}-{start + len(data) - 1}"}
    return client.patch(location, content=data, headers=headers)


class Trickle:
    """A request whose body is sent in parts, with pauses the test controls."""

    def __init__(self, server: Any, method: str, url: str, length: int, headers: dict[str, str]):
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        self.conn.putrequest(method, url)
        token = base64.b64encode(f"{server.auth[0]}:{server.auth[1]}".encode()).decode()
        for name, value in {
            "Authorization": f"Basic {token}",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(length),
            **headers,
        }.items():
            self.conn.putheader(name, value)
        self.conn.endheaders()

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def response(self) -> tuple[int, bytes]:
        r = self.conn.getresponse()
        body = r.read()
        self.conn.close()
        return r.status, body


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    """POST + PUT a blob (the two-step monolithic upload); returns its digest."""
    digest = digest_of(data)
    location, _ = start_upload(client, repo)
    r = client.put(location, params={"digest": digest}, content=data, headers=OCTET)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest_of(config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": digest_of(layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    return json.dumps(doc, indent=2).encode()


MANIFEST_HEADERS = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}


# -- what is on disk -------------------------------------------------------------------------


def blob_files(data_dir: Path, digest: str) -> list[Path]:
    """Every stored copy of a blob's content: files named data under a directory named
    after the digest's hex, anywhere under storage/blobs."""
    algorithm, hex_ = digest.split(":")
    root = data_dir / "storage" / "blobs" / algorithm
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("data") if p.parent.name == hex_)


def upload_files(data_dir: Path) -> list[Path]:
    root = data_dir / "storage" / "uploads"
    if not root.exists():
        return []
    return sorted(root.rglob("*"))


def upload_file_size(data_dir: Path, upload_id: str) -> int:
    path = data_dir / "storage" / "uploads" / upload_id / "data"
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_tail(log_path: Path | None, lines: int = 40) -> str:
    if log_path is None or not log_path.exists():
        return "<no log>"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


# -- /proc probes ----------------------------------------------------------------------------


def proc_status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def proc_wchar(pid: int) -> int:
    """Bytes the process has written with write(2)-like calls (files and sockets)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise KeyError("wchar")


def children_of() -> dict[int, list[int]]:
    """Every process's children, read from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def worker_pids(supervisor: int, expected: int, timeout: float = 30) -> list[int]:
    """The worker processes a `wharf serve --workers N` supervisor spawned."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for pid in children_of().get(supervisor, []):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"wharf" in f.read():
                        found.append(pid)
            except OSError:
                continue
        if len(found) >= expected or time.monotonic() > deadline:
            return sorted(found)
        time.sleep(0.1)


def kill_process_tree(root: int) -> list[int]:
    """SIGKILL a process and every process below it, the root first (a supervisor must not
    replace a worker once it is dead). Returns the pids killed."""
    children = children_of()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    for pid in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return tree


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a background thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []  # KiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(proc_status_kib(self.pid, "VmRSS"))
            except (OSError, KeyError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return max(self.samples) / 1024
