"""Upload sessions live in the data directory, not in a process: they survive a restart and can
be continued by any worker process."""

from __future__ import annotations

import secrets

import httpx
import pytest
from integrity_util import (
    OCTET,
    MiB,
    digest_of,
    error_codes,
    log_tail,
    patch_chunk,
    proc_wchar,
    start_upload,
    upload_files,
    worker_pids,
)


@pytest.mark.parametrize("same_port", [True, False], ids=["same-port", "new-port"])
def test_upload_session_survives_restart(servers, repo: str, same_port: bool) -> None:
    chunk1 = secrets.token_bytes(3 * MiB + 17)
    chunk2 = secrets.token_bytes(2 * MiB + 5)
    blob = chunk1 + chunk2
    digest = digest_of(blob)

    first = servers.start()
    with first.client() as c:
        location, upload_id = start_upload(c, repo)
        r = patch_chunk(c, location, chunk1, 0)
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{len(chunk1) - 1}"
    first.stop()

    second = servers.restart(first, new_port=not same_port)
    with second.client() as c:
        r = c.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{len(chunk1) - 1}"
        assert r.headers["Docker-Upload-UUID"] == upload_id

        r = patch_chunk(c, location, chunk2, len(chunk1))
        assert r.status_code == 202, f"{r.status_code} {r.text}\n{log_tail(second.log_path)}"
        assert r.headers["Range"] == f"0-{len(blob) - 1}"

        r = c.put(location, params={"digest": digest})
        assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(second.log_path)}"
        assert r.headers["Docker-Content-Digest"] == digest

        r = c.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.content == blob
        assert digest_of(r.content) == digest

        r = c.get(location)
        assert r.status_code == 404
        assert error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
    assert upload_files(second.data_dir) == []


def test_upload_continued_by_other_worker_processes(servers, repo: str) -> None:
    """PATCHes of one upload on separate connections land on different worker processes; the
    process that finishes has no (or a stale) running hash and must hash from storage."""
    server = servers.start(workers=3)
    assert server.proc is not None
    workers = worker_pids(server.proc.pid, 3)
    assert len(workers) == 3, workers

    def one_request(method: str, url: str, **kwargs) -> tuple[httpx.Response, set[int]]:
        """Send on a new connection; return the response and the workers that wrote >= 256 KiB
        meanwhile (the one that stored the chunk)."""
        before = {pid: proc_wchar(pid) for pid in workers}
        with server.client() as c:  # a new connection: the kernel picks the worker
            r = c.request(method, url, **kwargs)
        after = {pid: proc_wchar(pid) for pid in workers}
        return r, {pid for pid in workers if after[pid] - before[pid] >= 256 * 1024}

    with server.client() as c:
        location, _ = start_upload(c, repo)

    chunks: list[bytes] = []
    handled_by: list[set[int]] = []
    size = 0
    # Keep sending until at least two different workers stored chunks (normally at once).
    while len(chunks) < 8 or (len(set().union(*handled_by)) < 2 and len(chunks) < 64):
        data = secrets.token_bytes(512 * 1024 + len(chunks))
        headers = {**OCTET, "Content-Range": f"{size}-{size + len(data) - 1}"}
        r, writers = one_request("PATCH", location, content=data, headers=headers)
        assert r.status_code == 202, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        size += len(data)
        assert r.headers["Range"] == f"0-{size - 1}"
        chunks.append(data)
        handled_by.append(writers)
        # Status on yet another connection (possibly another process) agrees.
        r, _ = one_request("GET", location)
        assert r.status_code == 204
        assert r.headers["Range"] == f"0-{size - 1}"

    used = set().union(*handled_by)
    assert len(used) >= 2, f"all {len(chunks)} PATCHes went to one worker: {handled_by}"

    last = secrets.token_bytes(300_001)
    blob = b"".join(chunks) + last
    digest = digest_of(blob)
    headers = {**OCTET, "Content-Range": f"{size}-{size + len(last) - 1}"}
    r, _ = one_request("PUT", location, params={"digest": digest}, content=last, headers=headers)
    assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
    assert r.headers["Docker-Content-Digest"] == digest

    for _ in range(3):  # read back on fresh connections, whichever worker answers
        r, _ = one_request("GET", f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200
        assert r.content == blob
    assert upload_files(server.data_dir) == []
