"""An upload whose content does not match the digest given to finish it is refused with
DIGEST_INVALID, never becomes visible, and leaves no files behind."""

from __future__ import annotations

import secrets

import pytest
from integrity_util import (
    OCTET,
    MiB,
    blob_files,
    digest_of,
    error_codes,
    log_tail,
    patch_chunk,
    start_upload,
    upload_files,
)


@pytest.mark.parametrize("mode", ["patch-then-put", "put-with-body", "monolithic-post"])
def test_digest_mismatch_is_refused_and_cleaned_up(server, repo: str, mode: str) -> None:
    data = secrets.token_bytes(2 * MiB + 1)
    actual = digest_of(data)
    claimed = digest_of(b"something else entirely")
    upload_id = None

    with server.client() as c:
        if mode == "monolithic-post":
            r = c.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": claimed},
                content=data,
                headers=OCTET,
            )
        else:
            location, upload_id = start_upload(c, repo)
            if mode == "patch-then-put":
                assert patch_chunk(c, location, data, 0).status_code == 202
                r = c.put(location, params={"digest": claimed})
            else:
                headers = {**OCTET, "Content-Range": f"0-{len(data) - 1}"}
                r = c.put(location, params={"digest": claimed}, content=data, headers=headers)
        assert r.status_code == 400, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        assert error_codes(r) == ["DIGEST_INVALID"], r.text

        for digest in (claimed, actual):
            r = c.get(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 404, digest
            assert error_codes(r) == ["BLOB_UNKNOWN"]
            assert c.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
            assert blob_files(server.data_dir, digest) == []
        if upload_id is not None:
            r = c.get(location)
            assert r.status_code == 404, "the failed upload session is still open"
            assert error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"]
        assert upload_files(server.data_dir) == [], "the failed upload's files are left behind"

        # The right digest still goes through afterwards.
        r = c.post(
            f"/v2/{repo}/blobs/uploads/", params={"digest": actual}, content=data, headers=OCTET
        )
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{actual}").content == data
        assert c.get(f"/v2/{repo}/blobs/{claimed}").status_code == 404
        assert upload_files(server.data_dir) == []
