"""The server streams blobs: pushing and pulling a GiB keeps its memory bounded."""

from __future__ import annotations

import hashlib

import pytest
from integrity_util import (
    OCTET,
    Content,
    MiB,
    RssSampler,
    log_tail,
    proc_status_kib,
    start_upload,
)

BLOB_SIZE = 1 << 30
PATCH_SIZE = 256 * MiB  # each PATCH streams this much from a generator, 8 MiB at a time
RSS_LIMIT_MIB = 150


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_push_and_pull_1gib_with_bounded_server_memory(server, repo: str) -> None:
    assert server.proc is not None and server.workers == 1
    pid = server.proc.pid  # with one worker, the serving process itself
    content = Content(BLOB_SIZE, seed=42)
    baseline_mib = proc_status_kib(pid, "VmRSS") / 1024

    sent = hashlib.sha256()

    def body(start: int, end: int):  # type: ignore[no-untyped-def]
        for data in content.pieces(start, end):
            sent.update(data)
            yield data

    with server.client() as c:
        location, _ = start_upload(c, repo)
        with RssSampler(pid) as push_rss:
            for start in range(0, BLOB_SIZE, PATCH_SIZE):
                end = min(start + PATCH_SIZE, BLOB_SIZE)
                headers = {
                    **OCTET,
                    "Content-Range": f"{start}-{end - 1}",
                    "Content-Length": str(end - start),
                }
                r = c.patch(location, content=body(start, end), headers=headers)
                assert r.status_code == 202, (
                    f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
                )
                assert r.headers["Range"] == f"0-{end - 1}"
            digest = f"sha256:{sent.hexdigest()}"
            r = c.put(location, params={"digest": digest})
            assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
            assert r.headers["Docker-Content-Digest"] == digest

        received = hashlib.sha256()
        total = 0
        with RssSampler(pid) as pull_rss, c.stream("GET", f"/v2/{repo}/blobs/{digest}") as r:
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == BLOB_SIZE
            for data in r.iter_bytes():
                received.update(data)
                total += len(data)
    hwm_mib = proc_status_kib(pid, "VmHWM") / 1024

    print(
        f"\nserver RSS: baseline {baseline_mib:.1f} MiB, push peak {push_rss.peak_mib:.1f} MiB "
        f"({len(push_rss.samples)} samples), pull peak {pull_rss.peak_mib:.1f} MiB "
        f"({len(pull_rss.samples)} samples), VmHWM {hwm_mib:.1f} MiB"
    )
    assert total == BLOB_SIZE
    assert f"sha256:{received.hexdigest()}" == digest
    assert push_rss.peak_mib < RSS_LIMIT_MIB
    assert pull_rss.peak_mib < RSS_LIMIT_MIB
    assert hwm_mib < RSS_LIMIT_MIB, "the server's peak resident memory (VmHWM)"
