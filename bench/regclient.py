"""Minimal, strict OCI distribution client used by the benchmark (httpx, sync, pooled).

Every response is checked; any deviation raises BenchError with the request and response."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import httpcore
import httpx
from procs import BenchError

MiB = 1024 * 1024
IO_CHUNK = 4 * MiB  # read/write granularity for streamed bodies

# httpcore reads 64 KiB per recv() by default; larger reads cut client CPU on big pulls.
httpcore._sync.http11.HTTP11Connection.READ_NUM_BYTES = 1 * MiB

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_MANIFEST,
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def describe(r: httpx.Response, body_limit: int = 600) -> str:
    req = r.request
    hdrs = {k: v for k, v in req.headers.items() if k.lower() != "authorization"}
    try:
        body = r.text[:body_limit]
    except (httpx.ResponseNotRead, httpx.StreamConsumed):
        body = "<unread stream>"
    return (
        f"{req.method} {req.url}\n  request headers: {hdrs}\n"
        f"  -> {r.status_code} {r.reason_phrase}\n  response headers: {dict(r.headers)}\n"
        f"  body: {body!r}"
    )


def expect(r: httpx.Response, codes: int | tuple[int, ...], what: str) -> httpx.Response:
    codes = (codes,) if isinstance(codes, int) else codes
    if r.status_code not in codes:
        if not r.is_stream_consumed:
            r.read()
        raise BenchError(f"{what}: expected {codes}, got {r.status_code}\n{describe(r)}")
    return r


# --------------------------------------------------------------------------- blob sources


class BaseFile:
    """A random file made once on disk; blobs are slices of it (optionally repeated) plus a
    unique 32-byte suffix, so every pushed blob has a new digest while hashing stays O(1):
    the sha256 state of the common part is computed once and copied."""

    def __init__(self, path: Path, size: int):
        self.path = path
        self.size = size
        if not path.exists() or path.stat().st_size != size:
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                left = size
                while left:
                    n = min(IO_CHUNK, left)
                    f.write(os.urandom(n))
                    left -= n
            tmp.rename(path)
        self._states: dict[tuple[int, int], hashlib._Hash] = {}

    def state(self, length: int, repeat: int) -> hashlib._Hash:
        key = (length, repeat)
        if key not in self._states:
            h = hashlib.sha256()
            for _ in range(repeat):
                with open(self.path, "rb") as f:
                    left = length
                    while left:
                        b = f.read(min(IO_CHUNK, left))
                        h.update(b)
                        left -= len(b)
            self._states[key] = h
        return self._states[key]

    def blob(self, size: int, repeat: int = 1) -> Blob:
        """A blob of `size` bytes = (first (size-32)/repeat bytes of the file) * repeat + suffix."""
        body = size - 32
        if body % repeat or body // repeat > self.size:
            raise ValueError("bad blob geometry")
        length = body // repeat
        suffix = os.urandom(32)
        h = self.state(length, repeat).copy()
        h.update(suffix)
        return Blob(self, length, repeat, suffix, "sha256:" + h.hexdigest(), size)


@dataclass
class Blob:
    base: BaseFile
    length: int
    repeat: int
    suffix: bytes
    digest: str
    size: int

    def iter_range(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) of the virtual blob from disk in IO_CHUNK pieces."""
        end = self.size if end is None else end
        body = self.length * self.repeat
        pos = start
        with open(self.base.path, "rb", buffering=0) as f:
            while pos < min(end, body):
                off = pos % self.length
                n = min(IO_CHUNK, self.length - off, end - pos)
                f.seek(off)
                b = f.read(n)
                if len(b) != n:
                    raise BenchError("short read from base file")
                yield b
                pos += n
        if end > body:
            yield self.suffix[max(0, start - body) : end - body]

    def small_bytes(self) -> bytes:
        with open(self.base.path, "rb") as f:
            return f.read(self.length) * self.repeat + self.suffix


# --------------------------------------------------------------------------- client


class Registry:
    def __init__(self, base_url: str, user: str, password: str, pool: int = 64):
        self.base = base_url
        tok = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.auth_header = f"Basic {tok}"
        self.c = httpx.Client(
            base_url=base_url,
            headers={"Authorization": self.auth_header},
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=httpx.Timeout(600.0, connect=10.0),
            follow_redirects=False,
        )
        self.warnings: set[str] = set()
        self.repos: set[str] = set()

    def close(self) -> None:
        self.c.close()

    def _abs(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    @staticmethod
    def _with_digest(location: str, digest: str) -> str:
        return location + ("&" if "?" in location else "?") + "digest=" + digest

    def _check_digest_header(self, r: httpx.Response, digest: str, what: str) -> None:
        got = r.headers.get("Docker-Content-Digest")
        if got is None:
            self.warnings.add(f"{what}: no Docker-Content-Digest header")
        elif got != digest:
            raise BenchError(f"{what}: Docker-Content-Digest {got} != {digest}\n{describe(r)}")

    # -- blobs
    def start_upload(self, repo: str) -> str:
        r = expect(self.c.post(f"/v2/{repo}/blobs/uploads/"), 202, "start upload")
        loc = r.headers.get("Location")
        if not loc:
            raise BenchError(f"start upload: no Location\n{describe(r)}")
        self.repos.add(repo)
        return self._abs(loc)

    def push_monolithic(self, repo: str, blob: Blob) -> None:
        loc = self.start_upload(repo)
        r = self.c.put(
            self._with_digest(loc, blob.digest),
            content=blob.iter_range(),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)},
        )
        self._finish_upload(r, repo, blob.digest, "monolithic PUT")

    def push_bytes(self, repo: str, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_digest(data)
        loc = self.start_upload(repo)
        r = self.c.put(
            self._with_digest(loc, digest),
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._finish_upload(r, repo, digest, "monolithic PUT")
        return digest

    def push_chunked(self, repo: str, blob: Blob, chunk: int) -> int:
        loc = self.start_upload(repo)
        pos = 0
        n = 0
        while pos < blob.size:
            end = min(pos + chunk, blob.size)
            r = self.c.patch(
                loc,
                content=blob.iter_range(pos, end),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(end - pos),
                    "Content-Range": f"{pos}-{end - 1}",
                },
            )
            expect(r, 202, f"PATCH chunk {n} ({pos}-{end - 1})")
            rng = r.headers.get("Range")
            if rng is not None and rng not in (f"0-{end - 1}", f"bytes=0-{end - 1}"):
                raise BenchError(f"PATCH chunk {n}: Range {rng!r} != 0-{end - 1}\n{describe(r)}")
            if r.headers.get("Location"):
                loc = self._abs(r.headers["Location"])
            pos = end
            n += 1
        r = self.c.put(
            self._with_digest(loc, blob.digest),
            headers={"Content-Length": "0", "Content-Type": "application/octet-stream"},
        )
        self._finish_upload(r, repo, blob.digest, "chunked final PUT")
        return n

    def _finish_upload(self, r: httpx.Response, repo: str, digest: str, what: str) -> None:
        expect(r, 201, what)
        self._check_digest_header(r, digest, what)
        if not r.headers.get("Location"):
            self.warnings.add(f"{what}: 201 without Location")

    def head_blob(self, repo: str, digest: str, size: int) -> None:
        r = expect(self.c.head(f"/v2/{repo}/blobs/{digest}"), 200, "HEAD blob")
        if int(r.headers.get("Content-Length", -1)) != size:
            raise BenchError(f"HEAD blob: Content-Length != {size}\n{describe(r)}")
        self._check_digest_header(r, digest, "HEAD blob")

    def pull_blob(self, repo: str, digest: str, size: int) -> int:
        url = f"/v2/{repo}/blobs/{digest}"
        for _ in range(3):  # follow redirects manually (keeps auth off foreign hosts)
            with self.c.stream("GET", url) as r:
                if r.status_code in (301, 302, 303, 307, 308):
                    url = self._abs(r.headers["Location"])
                    continue
                expect(r, 200, "GET blob")
                h = hashlib.sha256()
                n = 0
                for b in r.iter_raw():
                    h.update(b)
                    n += len(b)
            got = "sha256:" + h.hexdigest()
            if n != size or got != digest:
                raise BenchError(f"GET {url}: got {n} bytes {got}, expected {size} bytes {digest}")
            self._check_digest_header(r, digest, "GET blob")
            return n
        raise BenchError(f"GET {url}: too many redirects")

    # -- manifests
    def put_manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        digest = sha256_digest(body)
        r = self.c.put(
            f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
        )
        expect(r, 201, f"PUT manifest {repo}:{ref}")
        self._check_digest_header(r, digest, f"PUT manifest {repo}:{ref}")
        self.repos.add(repo)
        return digest

    def check_manifest(self, repo: str, ref: str, body: bytes, media_type: str = OCI_MANIFEST):
        """GET and HEAD a manifest and verify exact bytes, digest, media type."""
        digest = sha256_digest(body)
        hdrs = {"Accept": MANIFEST_ACCEPT}
        r = expect(self.c.get(f"/v2/{repo}/manifests/{ref}", headers=hdrs), 200, "GET manifest")
        if r.content != body:
            raise BenchError(f"GET manifest {repo}:{ref}: bytes differ\n{describe(r)}")
        if r.headers.get("Docker-Content-Digest") != digest:
            raise BenchError(f"GET manifest: Docker-Content-Digest != {digest}\n{describe(r)}")
        if r.headers.get("Content-Type", "").split(";")[0].strip() != media_type:
            raise BenchError(f"GET manifest: Content-Type != {media_type}\n{describe(r)}")
        r = expect(self.c.head(f"/v2/{repo}/manifests/{ref}", headers=hdrs), 200, "HEAD manifest")
        if r.headers.get("Docker-Content-Digest") != digest:
            raise BenchError(f"HEAD manifest: Docker-Content-Digest != {digest}\n{describe(r)}")
        if int(r.headers.get("Content-Length", -1)) != len(body):
            raise BenchError(f"HEAD manifest: Content-Length != {len(body)}\n{describe(r)}")

    # -- listings
    def _paged(self, url: str, key: str, what: str) -> list[str]:
        out: list[str] = []
        pages = 0
        while url:
            r = expect(self.c.get(url), 200, what)
            out.extend(r.json().get(key) or [])
            link = r.headers.get("Link")
            url = ""
            if link and 'rel="next"' in link:
                url = link.split(";")[0].strip().strip("<>")
            pages += 1
            if pages > 10000:
                raise BenchError(f"{what}: pagination does not terminate")
        return out

    def list_tags(self, repo: str, n: int | None = None) -> list[str]:
        return self._paged(
            f"/v2/{repo}/tags/list" + (f"?n={n}" if n else ""), "tags", f"tags/list {repo}"
        )

    def catalog(self, n: int | None = None) -> list[str]:
        return self._paged("/v2/_catalog" + (f"?n={n}" if n else ""), "repositories", "catalog")

    def raw_get_json(self, path: str) -> tuple[dict, httpx.Response]:
        r = expect(self.c.get(path), 200, f"GET {path}")
        return json.loads(r.content), r
