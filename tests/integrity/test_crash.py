"""A process SIGKILLed in the middle of receiving a blob leaves nothing half-written visible,
and the registry carries on from a consistent state after a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
from integrity_util import (
    OCTET,
    Content,
    MiB,
    blob_files,
    error_codes,
    log_tail,
    start_upload,
    upload_file_size,
)

STREAM_SIZE = 64 * MiB
PIECE = 256 * 1024


class SlowSender:
    """Sends a request whose body trickles from a generator, in a background thread."""

    def __init__(
        self, client: httpx.Client, method: str, url: str, body: Iterator[bytes], **kwargs
    ) -> None:
        self.sent = 0
        self.error: BaseException | None = None
        self.response: httpx.Response | None = None
        self._request = (client, method, url, {**kwargs, "content": self._count(body)})
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self, body: Iterator[bytes]) -> Iterator[bytes]:
        for data in body:
            yield data
            self.sent += len(data)

    def _run(self) -> None:
        client, method, url, kwargs = self._request
        try:
            self.response = client.request(method, url, **kwargs)
        except BaseException as e:  # the connection dies with the server
            self.error = e

    def start(self) -> SlowSender:
        self._thread.start()
        return self

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive(), "the request did not end after the server died"


def wait_until(condition, timeout: float = 30, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def uploads_in_progress(data_dir) -> list[str]:  # type: ignore[no-untyped-def]
    root = data_dir / "storage" / "uploads"
    return [p.name for p in root.iterdir()] if root.exists() else []


def test_kill_during_monolithic_upload_leaves_no_blob(servers, repo: str) -> None:
    content = Content(STREAM_SIZE, seed=1)
    digest = content.digest
    server = servers.start()

    with server.client() as c:
        sender = SlowSender(
            c,
            "POST",
            f"/v2/{repo}/blobs/uploads/",
            content.pieces(out=PIECE, pause=0.005),
            params={"digest": digest},
            headers={**OCTET, "Content-Length": str(content.size)},
        ).start()
        # Kill once the server has stored part (but not all) of the body.
        wait_until(
            lambda: any(
                upload_file_size(server.data_dir, u) >= 4 * MiB
                for u in uploads_in_progress(server.data_dir)
            ),
            what="the server to store 4 MiB of the upload",
        )
        server.kill()
        sender.join()
    assert sender.response is None, "the request completed before the kill"
    assert 4 * MiB <= sender.sent < content.size
    partial = [upload_file_size(server.data_dir, u) for u in uploads_in_progress(server.data_dir)]
    assert partial and all(size < content.size for size in partial), partial
    assert blob_files(server.data_dir, digest) == []

    server = servers.restart(server)
    with server.client() as c:
        r = c.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 404, r.text
        assert error_codes(r) == ["BLOB_UNKNOWN"]
        r = c.head(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 404
        assert blob_files(server.data_dir, digest) == []

        # Pushing the same blob again works and yields exactly the content.
        r = c.post(
            f"/v2/{repo}/blobs/uploads/",
            params={"digest": digest},
            content=content.pieces(),
            headers={**OCTET, "Content-Length": str(content.size)},
        )
        assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        assert r.headers["Docker-Content-Digest"] == digest
        with c.stream("GET", f"/v2/{repo}/blobs/{digest}") as r:
            assert r.status_code == 200
            expected = content.pieces(out=PIECE)
            buffer = b""
            for data in r.iter_bytes():
                buffer += data
                while len(buffer) >= PIECE:
                    assert buffer[:PIECE] == next(expected)
                    buffer = buffer[PIECE:]
            assert buffer == b""
            assert next(expected, None) is None
        assert len(blob_files(server.data_dir, digest)) == 1


def test_kill_during_patch_keeps_upload_at_previous_size(servers, repo: str) -> None:
    first_size = 4 * MiB + 3
    content = Content(first_size + STREAM_SIZE, seed=2)
    server = servers.start()

    with server.client() as c:
        location, upload_id = start_upload(c, repo)
        first = content.read(0, first_size)
        r = c.patch(
            location, content=first, headers={**OCTET, "Content-Range": f"0-{first_size - 1}"}
        )
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{first_size - 1}"

        sender = SlowSender(
            c,
            "PATCH",
            location,
            content.pieces(first_size, out=PIECE, pause=0.005),
            headers={**OCTET, "Content-Range": f"{first_size}-{content.size - 1}"},
        ).start()
        wait_until(
            lambda: upload_file_size(server.data_dir, upload_id) >= first_size + 4 * MiB,
            what="the server to store 4 MiB of the second chunk",
        )
        server.kill()
        sender.join()
    assert sender.response is None, "the PATCH completed before the kill"
    on_disk = upload_file_size(server.data_dir, upload_id)
    assert first_size + 4 * MiB <= on_disk < content.size

    server = servers.restart(server)
    with server.client() as c:
        r = c.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{first_size - 1}", "the half-received PATCH counted"

        # Re-send the second chunk from where the upload says it is, then finish. The killed
        # request's lease on the upload is cleared at start by the embedded store (the only
        # replica); with a shared store other replicas may hold leases, so it expires instead
        # (UPLOAD_LEASE_SECONDS) and the client is told 416 until then.
        deadline = time.monotonic() + 45
        while True:
            r = c.patch(
                location,
                content=content.pieces(first_size),
                headers={**OCTET, "Content-Range": f"{first_size}-{content.size - 1}"},
            )
            leased = r.status_code == 416 and "another request" in r.text
            if not leased or server.db_url.startswith("sqlite") or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert r.status_code == 202, (
            f"resuming after the crash: {r.status_code} {r.headers.get('Range')} {r.text}\n"
            f"{log_tail(server.log_path)}"
        )
        assert r.headers["Range"] == f"0-{content.size - 1}"
        r = c.put(location, params={"digest": content.digest})
        assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        assert r.headers["Docker-Content-Digest"] == content.digest

        r = c.get(f"/v2/{repo}/blobs/{content.digest}")
        assert r.status_code == 200
        assert len(r.content) == content.size
        assert r.content == content.read()
        assert len(blob_files(server.data_dir, content.digest)) == 1
