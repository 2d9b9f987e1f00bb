"""Object-store specifics: multipart and compose paths, encryption, pre-signed redirects,
bounded memory, and the checks on storage URLs. Against real emulators (storage_servers)."""

from __future__ import annotations

import os
import tracemalloc

import httpx
import pytest

from wharf.storage import StorageURLError, open_storage, parse_storage_url

# Blob storage alone, no metadata store: one pass of the suite is enough.
pytestmark = pytest.mark.once


@pytest.fixture
def s3(s3_server, monkeypatch):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server


@pytest.fixture
def azure(azure_server, monkeypatch):
    for name, value in azure_server.env.items():
        monkeypatch.setenv(name, value)
    return azure_server


def test_s3_small_chunks_are_merged_so_every_part_but_the_last_is_5_mib(s3):
    url = s3.url("p")
    driver = open_storage(url)
    data = os.urandom(12 << 20)
    step = 1 << 20  # twelve 1 MiB chunks, each from its own writer
    for offset in range(0, len(data), step):
        w = driver.writer("uploads/x/data", offset)
        w.write(data[offset : offset + step])
        w.close()
    keys = [k for k, _ in driver.bucket.list("p/uploads/x/")]
    sizes = sorted(size for k, size in driver.bucket.list("p/uploads/x/"))
    assert all(size >= 5 << 20 for size in sizes[1:]), sizes  # only one may be small
    assert len(keys) <= 3
    driver.move("uploads/x/data", "blobs/x/data")
    body = s3.client().get_object(Bucket=s3.bucket_of(url), Key="p/blobs/x/data")["Body"].read()
    assert body == data
    assert list(driver.bucket.list("p/uploads/")) == []


def test_s3_server_side_encryption_is_requested(s3):
    url = s3.url("enc") + "&sse=AES256"
    driver = open_storage(url)
    w = driver.writer("uploads/e/data")
    w.write(b"secret layer")
    w.close()
    driver.move("uploads/e/data", "blobs/e/data")
    head = s3.client().head_object(Bucket=s3.bucket_of(url), Key="enc/blobs/e/data")
    assert head["ServerSideEncryption"] == "AES256"


def test_gcs_composes_more_than_32_segments(gcs_server, monkeypatch):
    for name, value in gcs_server.env.items():
        monkeypatch.setenv(name, value)
    driver = open_storage(gcs_server.url("c"))
    pieces = [os.urandom(1000 + i) for i in range(40)]
    offset = 0
    for piece in pieces:
        w = driver.writer("uploads/g/data", offset)
        w.write(piece)
        w.close()
        offset += len(piece)
    driver.move("uploads/g/data", "blobs/g/data")
    with driver.open_read("blobs/g/data") as f:
        assert f.read() == b"".join(pieces)
    assert [k for k, _ in driver.bucket.list("c/")] == ["c/blobs/g/data"]  # no leftovers


@pytest.mark.parametrize("cloud", ["s3", "azure"])
def test_redirect_urls_are_presigned_and_work(cloud, request):
    server = request.getfixturevalue(cloud)
    driver = open_storage(server.url("r") + "&redirect=true")
    w = driver.writer("uploads/r/data")
    w.write(b"pulled straight from the object store")
    w.commit()
    driver.move("uploads/r/data", "blobs/r/data")  # how every blob arrives
    location = driver.redirect_url("blobs/r/data")
    assert location and location.startswith("http://127.0.0.1:")
    response = httpx.get(location, headers={"Range": "bytes=7-"})
    assert response.status_code == 206
    assert response.content == b"straight from the object store"


def test_writing_a_large_object_holds_one_part_in_memory(s3):
    driver = open_storage(s3.url("mem"))
    chunk = os.urandom(1 << 20)
    tracemalloc.start()
    try:
        w = driver.writer("uploads/big/data")
        for _ in range(48):  # 48 MiB, six multipart parts
            w.write(chunk)
        w.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert driver.stat("uploads/big/data") == 48 << 20
    assert peak < 32 << 20, f"peak {peak >> 20} MiB while writing 48 MiB"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/p?color=blue", "unknown s3:// parameter 'color'"),
        ("s3://AKIA:secret@bucket/p", "credentials do not belong"),
        ("s3://key@bucket/p", "credentials do not belong"),
        ("s3://bucket?sse=rot13", "sse='rot13'"),
        ("s3://bucket?kms_key_id=k", "kms_key_id needs sse=aws:kms"),
        ("s3://bucket?redirect=maybe", "expected true or false"),
        ("gs:///prefix", "invalid bucket"),
        ("s3://bucket/a/../b", "may not contain '..'"),
        ("ftp://host/x", "unsupported storage URL scheme"),
        ("file://", "absolute path"),
    ],
)
def test_bad_storage_urls_are_refused_with_the_reason(url, message):
    with pytest.raises(StorageURLError, match=message.replace("(", r"\(").replace("?", r"\?")):
        parse_storage_url(url)


def test_azure_needs_an_account_and_credentials(monkeypatch):
    with pytest.raises(StorageURLError, match="account"):
        open_storage("az://container/p")
    for name in ("AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="AZURE_STORAGE_KEY"):
        open_storage("az://container/p?account=acct")


def test_s3_credentials_from_a_named_profile(s3_server, tmp_path, monkeypatch):
    """`profile=NAME` takes the keys from the shared credentials file, not the environment."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[registry]\naws_access_key_id = fromprofile\naws_secret_access_key = s\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    url = s3_server.url("prof")
    driver = open_storage(url + "&profile=registry")
    keys = driver.bucket.client._request_signer._credentials.get_frozen_credentials()
    assert keys.access_key == "fromprofile"
    w = driver.writer("uploads/p/data")
    w.write(b"signed with the profile's keys")
    w.close()
    assert driver.stat("uploads/p/data") == 30
    import botocore.exceptions

    with pytest.raises(botocore.exceptions.ProfileNotFound):
        open_storage(url + "&profile=nobody")
