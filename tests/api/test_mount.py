"""Cross-repository blob mounts (end-11)."""

from __future__ import annotations

import pytest

from .helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    assert_api_version,
    blob_exists,
    canonical,
    descriptor,
    image_manifest,
    push_blob,
    put_manifest,
    random_blob,
    sha256,
)


def test_mount_from_repository(client, repo):
    source = f"{repo}-src"
    data = random_blob(500)
    digest = push_blob(client, source, data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["content-length"] == "0"
    assert_api_version(r)
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    # The source keeps its copy.
    assert blob_exists(client, source, digest)


def test_mount_missing_blob_falls_back_to_upload(client, repo):
    source = f"{repo}-src"
    push_blob(client, source, random_blob(10))
    data = random_blob(200)
    digest = sha256(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": source})
    assert r.status_code == 202
    location = r.headers["location"]
    assert location.startswith(f"/v2/{repo}/blobs/uploads/")
    assert not blob_exists(client, repo, digest)
    # The session it opened is a working upload.
    r = client.put(location, params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_mount_from_unknown_repository_falls_back(client, repo):
    digest = push_blob(client, f"{repo}-src", random_blob(10))
    r = client.post(
        f"/v2/{repo}/blobs/uploads/", params={"mount": digest, "from": f"{repo}-never-created"}
    )
    assert r.status_code == 202
    assert r.headers["location"].startswith(f"/v2/{repo}/blobs/uploads/")
    assert not blob_exists(client, repo, digest)


def test_mount_without_from(client, repo):
    """The spec lets a registry treat `from` as optional; Wharf finds the blob (admin only)."""
    digest = push_blob(client, f"{repo}-src", random_blob(300))
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == digest
    assert blob_exists(client, repo, digest)


def test_mount_without_from_unknown_blob(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(random_blob(8))})
    assert r.status_code == 202
    assert r.headers["location"].startswith(f"/v2/{repo}/blobs/uploads/")


@pytest.mark.parametrize(
    ("mount", "source"), [("sha256:abc", None), (None, "Bad/Name")], ids=["digest", "from"]
)
def test_mount_with_malformed_arguments_falls_back_to_an_upload(client, repo, mount, source):
    digest = push_blob(client, f"{repo}-src", random_blob(10))
    params = {"mount": mount or digest, "from": source or f"{repo}-src"}
    r = client.post(f"/v2/{repo}/blobs/uploads/", params=params)
    assert r.status_code == 202
    assert r.headers["location"].startswith(f"/v2/{repo}/blobs/uploads/")
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404


def test_mounted_blob_usable_in_manifest(client, repo):
    source = f"{repo}-src"
    config, layer = b'{"os":"linux"}', random_blob(100)
    push_blob(client, source, config)
    push_blob(client, source, layer)
    for data in (config, layer):
        r = client.post(
            f"/v2/{repo}/blobs/uploads/", params={"mount": sha256(data), "from": source}
        )
        assert r.status_code == 201
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    assert put_manifest(client, repo, "mounted", body).status_code == 201


def test_non_admin_cannot_mount_from_unreadable_repository(client, user_client, user, repo):
    """Mounting needs read access to the source: a user cannot copy a private blob out."""
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    target = f"{user.username}/mount-{sha256(data)[7:15]}"
    r = user_client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": repo})
    assert r.status_code == 202
    assert user_client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    # Nor without `from`, where the registry would search every repository.
    r = user_client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 202
    assert user_client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
