"""One user against another's namespace: no push, no pull of private content, no blob mount
from a private repository, no deletes, no use of another's upload session."""

from __future__ import annotations

import json

import httpx

from .helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    access_token,
    bearer,
    challenge_params,
    error_code,
    push_image,
    sha256,
)


def blob_linked(admin: httpx.Client, repository: str, digest: str) -> bool:
    r = admin.head(f"/v2/{repository}/blobs/{digest}")
    assert r.status_code in (200, 404), r.status_code
    return r.status_code == 200


def test_cannot_push_into_another_namespace(world):
    target = f"{world.bob.name}/planted"
    with world.alice.client() as alice:
        r = alice.post(f"/v2/{target}/blobs/uploads/")
        assert r.status_code == 403, r.text
        assert error_code(r) == "DENIED"
        r = alice.post(
            f"/v2/{target}/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"
        )
        assert r.status_code == 403, r.text
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": world.private.digest, "size": 1},
                "layers": [],
            }
        ).encode()
        r = alice.put(
            f"/v2/{target}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 403, r.text
        # Not into an existing repository of bob's either, nor an organisation's.
        for repo in (world.private.repository, world.public.repository, f"{world.org}/x"):
            r = alice.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 403, (repo, r.text)
    # Read-only members of the organisation cannot create repositories in it.
    with world.carol.client() as carol:
        for repo in (world.org_app.repository, f"{world.org}/new"):
            r = carol.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 403, (repo, r.text)
    r = world.admin.http.get(f"/api/v0/repositories/{target}")
    assert r.status_code == 404, r.text
    r = world.admin.http.get(f"/api/v0/repositories/{world.org}/new")
    assert r.status_code == 404, r.text


def test_cannot_push_into_another_namespace_with_a_token(wharf_server, world):
    target = f"{world.bob.name}/planted-token"
    token = access_token(wharf_server, [f"repository:{target}:pull,push"], world.alice.auth)
    r = httpx.post(f"{wharf_server.url}/v2/{target}/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 401, r.text
    assert challenge_params(r.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_cannot_pull_another_users_private_repository(world):
    private = world.private
    with world.alice.client() as alice:
        for path in [
            f"/v2/{private.repository}/tags/list",
            f"/v2/{private.repository}/manifests/v1",
            f"/v2/{private.repository}/manifests/{private.digest}",
            f"/v2/{private.repository}/blobs/{private.layer_digest}",
            f"/v2/{private.repository}/referrers/{private.digest}",
        ]:
            r = alice.get(path)
            assert r.status_code == 404, (path, r.text)
            assert error_code(r) == "NAME_UNKNOWN"
            assert private.layer not in r.content
        # The public one is readable: the refusals above are about privacy, not a broken user.
        r = alice.get(f"/v2/{world.public.repository}/blobs/{world.public.layer_digest}")
        assert r.status_code == 200
        assert r.content == world.public.layer
        # The catalog does not list it.
        names = alice.get("/v2/_catalog", params={"n": 10000}).json()["repositories"]
        assert private.repository not in names
        assert world.public.repository in names


def test_cannot_mount_from_a_private_repository(world):
    private = world.private
    own = f"{world.alice.name}/mounted"
    with world.alice.client() as alice:
        push_image(alice, own)  # the repository exists: only the mount is refused
        for params in (
            {"mount": private.layer_digest, "from": private.repository},
            {"mount": private.layer_digest},  # without `from`: admins only
            {"mount": private.layer_digest, "from": f"{world.bob.name}/../{private.repository}"},
        ):
            r = alice.post(f"/v2/{own}/blobs/uploads/", params=params)
            # The spec's fallback: a normal upload session instead of a mount.
            assert r.status_code == 202, (params, r.text)
            assert r.headers["location"].startswith(f"/v2/{own}/blobs/uploads/")
            assert not blob_linked(world.admin.http, own, private.layer_digest)
            # Finishing the session without the content does not link the blob either.
            location = httpx.URL(r.headers["location"]).copy_merge_params(
                {"digest": private.layer_digest}
            )
            r = alice.put(location)
            assert r.status_code == 400, r.text
            assert error_code(r) == "DIGEST_INVALID"
        r = alice.get(f"/v2/{own}/blobs/{private.layer_digest}")
        assert r.status_code == 404, r.text
        assert error_code(r) == "BLOB_UNKNOWN"
        # A manifest naming the private blobs is refused too: it would link them.
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": sha256(private.config),
                    "size": len(private.config),
                },
                "layers": [
                    {
                        "mediaType": OCI_LAYER,
                        "digest": private.layer_digest,
                        "size": len(private.layer),
                    }
                ],
            }
        ).encode()
        r = alice.put(
            f"/v2/{own}/manifests/stolen", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 400, r.text
        assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"
        # A monolithic upload "of" the private blob with other bytes is refused.
        r = alice.post(
            f"/v2/{own}/blobs/uploads/", params={"digest": private.layer_digest}, content=b"guess"
        )
        assert r.status_code == 400, r.text
        assert error_code(r) == "DIGEST_INVALID"
    assert not blob_linked(world.admin.http, own, private.layer_digest)
    assert not blob_linked(world.admin.http, own, sha256(private.config))

    # Control: bob may mount his own blob into another of his repositories.
    with world.bob.client() as bob:
        r = bob.post(
            f"/v2/{world.bob.name}/mount-target/blobs/uploads/",
            params={"mount": private.layer_digest, "from": private.repository},
        )
        assert r.status_code == 201, r.text
    assert blob_linked(world.admin.http, f"{world.bob.name}/mount-target", private.layer_digest)


def test_cannot_delete_elsewhere(world):
    private, public = world.private, world.public
    with world.alice.client() as alice:
        for image in (private, public, world.org_app):
            for path in (
                f"/v2/{image.repository}/manifests/v1",
                f"/v2/{image.repository}/manifests/{image.digest}",
                f"/v2/{image.repository}/blobs/{image.layer_digest}",
            ):
                r = alice.delete(path)
                assert r.status_code == 403, (path, r.text)
                assert error_code(r) == "DENIED"
        for path in (
            f"/api/v0/repositories/{private.repository}/tags/v1",
            f"/api/v0/repositories/{private.repository}",
            f"/api/v0/repositories/{public.repository}/tags/v1",
            f"/api/v0/repositories/{public.repository}",
        ):
            r = alice.delete(path)
            assert r.status_code in (403, 404), (path, r.text)
    # Read-only is not enough to delete.
    with world.carol.client() as carol:
        r = carol.delete(f"/v2/{world.org_app.repository}/manifests/{world.org_app.digest}")
        assert r.status_code == 403, r.text
        r = carol.delete(f"/api/v0/repositories/{world.org_app.repository}/tags/v1")
        assert r.status_code == 403, r.text
    admin = world.admin.http
    for image in (private, public, world.org_app):
        r = admin.get(f"/v2/{image.repository}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.content == image.manifest
        assert blob_linked(admin, image.repository, image.layer_digest)


def test_cannot_use_another_users_upload_session(world):
    own = f"{world.alice.name}/uploads"
    with world.bob.client() as bob:
        r = bob.post(f"/v2/{world.bob.name}/uploads/blobs/uploads/")
        assert r.status_code == 202
        session = r.headers["location"].rsplit("/", 1)[1]
    data = b"alice's bytes"
    with world.alice.client() as alice:
        for method, params, content in (
            ("GET", None, None),
            ("PATCH", None, data),
            ("PUT", {"digest": sha256(data)}, data),
            ("DELETE", None, None),
        ):
            r = alice.request(
                method, f"/v2/{own}/blobs/uploads/{session}", params=params, content=content
            )
            assert r.status_code == 404, (method, r.text)
            assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    with world.bob.client() as bob:
        r = bob.get(f"/v2/{world.bob.name}/uploads/blobs/uploads/{session}")
        assert r.status_code == 204, r.text
        assert r.headers["range"] == "0-0"
