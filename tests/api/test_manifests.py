"""Manifest pushes (end-7) of every supported kind, their validation, and content negotiation."""

from __future__ import annotations

import hashlib
import json

import pytest

from .helpers import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    EMPTY_JSON_DIGEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER,
    assert_api_version,
    assert_error,
    canonical,
    descriptor,
    image_manifest,
    index_manifest,
    push_artifact,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
)

MAX_MANIFEST = 4 * 1024 * 1024


def tags_of(client, repo):
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    return r.json()["tags"]


# -- image manifests ------------------------------------------------------------------------


def test_put_oci_manifest_by_tag(client, repo):
    config, layer = b'{"architecture":"amd64","os":"linux"}', random_blob(500)
    push_blob(client, repo, config)
    push_blob(client, repo, layer)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), [descriptor(OCI_LAYER, layer)]))
    r = put_manifest(client, repo, "v1", body)
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{repo}/manifests/{sha256(body)}"
    assert r.headers["docker-content-digest"] == sha256(body)
    assert r.headers["content-length"] == "0"
    assert "oci-subject" not in r.headers
    assert_api_version(r)
    got = client.get(r.headers["location"])
    assert got.status_code == 200
    assert got.content == body
    assert tags_of(client, repo) == ["v1"]


def test_put_oci_manifest_by_digest(client, repo):
    image = push_image(client, repo, tag=None)
    r = client.get(f"/v2/{repo}/manifests/{image.digest}")
    assert r.status_code == 200
    assert r.content == image.body
    assert tags_of(client, repo) == []


def test_manifest_bytes_stored_verbatim(client, repo):
    """Whitespace, key order and unicode escapes survive: the digest is of the exact bytes."""
    config = b"{}"
    push_blob(client, repo, config)
    body = (
        b'{\n  "schemaVersion": 2,\n  "mediaType": "' + OCI_MANIFEST.encode() + b'",\n'
        b'  "config": {"size": 2, "digest": "' + sha256(config).encode() + b'", '
        b'"mediaType": "' + OCI_CONFIG.encode() + b'"},\n'
        b'  "layers": [],\n  "annotations": {"k": "\\u00e9t\\u00e9"}\n}\n'
    )
    r = put_manifest(client, repo, "pretty", body)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha256(body)
    assert client.get(f"/v2/{repo}/manifests/pretty").content == body


def test_content_type_parameters_are_ignored(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, "v1", body, f"{OCI_MANIFEST}; charset=utf-8")
    assert r.status_code == 201
    got = client.get(f"/v2/{repo}/manifests/v1")
    assert got.headers["content-type"] == OCI_MANIFEST


def test_put_without_content_type_uses_media_type_field(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, "v1", body, media_type=None)
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/manifests/v1").headers["content-type"] == OCI_MANIFEST


def test_content_type_contradicting_media_type_field(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, "v1", body, DOCKER_MANIFEST)
    assert_error(r, 400, "MANIFEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_put_docker_schema2(client, repo):
    image = push_image(client, repo, "v1", docker=True)
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.content == image.body
    assert r.headers["content-type"] == DOCKER_MANIFEST
    assert r.headers["docker-content-digest"] == image.digest


def test_retag_moves_tag(client, repo):
    first = push_image(client, repo, "v1")
    second = push_image(client, repo, "v1")
    assert first.digest != second.digest
    r = client.get(f"/v2/{repo}/manifests/v1")
    assert r.headers["docker-content-digest"] == second.digest
    assert r.content == second.body
    # The previous manifest is still there by digest.
    assert client.get(f"/v2/{repo}/manifests/{first.digest}").content == first.body
    assert tags_of(client, repo) == ["v1"]


def test_same_manifest_under_two_tags(client, repo):
    image = push_image(client, repo, "a")
    r = put_manifest(client, repo, "b", image.body)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == image.digest
    assert tags_of(client, repo) == ["a", "b"]


def test_put_by_digest_with_extra_tags(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, sha256(body), body, params=[("tag", "one"), ("tag", "two")])
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha256(body)
    assert {t.strip() for t in r.headers["oci-tag"].split(",")} == {"one", "two"}
    assert tags_of(client, repo) == ["one", "two"]
    for tag in ("one", "two"):
        got = client.get(f"/v2/{repo}/manifests/{tag}")
        assert got.status_code == 200
        assert got.content == body


def test_tag_push_reports_the_digest_the_content_was_pushed_under(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    sha512 = "sha512:" + hashlib.sha512(body).hexdigest()
    assert put_manifest(client, repo, sha512, body).headers["docker-content-digest"] == sha512
    r = put_manifest(client, repo, "later", body)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha512
    assert "oci-tag" not in r.headers
    got = client.get(f"/v2/{repo}/manifests/later")
    assert got.headers["docker-content-digest"] == sha512
    assert got.content == body


def test_put_by_tag_with_extra_tags(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, "main", body, params={"tag": "extra"})
    assert r.status_code == 201
    assert tags_of(client, repo) == ["extra", "main"]


def test_extra_tag_invalid(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, sha256(body), body, params={"tag": "-bad"})
    assert r.status_code == 400
    assert_error(client.get(f"/v2/{repo}/manifests/{sha256(body)}"), 404, "MANIFEST_UNKNOWN")


def test_put_by_digest_mismatch(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    wrong = sha256(body + b" ")
    r = put_manifest(client, repo, wrong, body)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.get(f"/v2/{repo}/manifests/{wrong}").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/{sha256(body)}").status_code == 404


@pytest.mark.parametrize(
    "tag",
    ["-leading-dash", ".dot", "a" * 129, "has+plus"],
    ids=["dash", "dot", "too-long", "plus"],
)
def test_put_invalid_tag(client, repo, tag):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, tag, body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"]


@pytest.mark.parametrize(
    "tag",
    ["_underscore", "A", "v1.2.3-rc.1_x", "a" * 128],
    ids=["underscore", "upper", "semver", "max-length"],
)
def test_put_valid_unusual_tags(client, repo, tag):
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    assert put_manifest(client, repo, tag, body).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/{tag}").content == body


# -- validation -----------------------------------------------------------------------------


def test_missing_config_blob(client, repo):
    config = b'{"missing":true}'
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    r = put_manifest(client, repo, "v1", body)
    error = assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"] == {"digest": sha256(config)}
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404


def test_missing_layer_blob(client, repo):
    config, present, missing = b"{}", random_blob(10), random_blob(20)
    push_blob(client, repo, config)
    push_blob(client, repo, present)
    body = canonical(
        image_manifest(
            descriptor(OCI_CONFIG, config),
            [descriptor(OCI_LAYER, present), descriptor(OCI_LAYER, missing)],
        )
    )
    error = assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"] == {"digest": sha256(missing)}


def test_blob_in_another_repository_is_not_enough(client, repo):
    config = b'{"elsewhere":1}'
    push_blob(client, f"{repo}-other", config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")


def test_descriptor_size_mismatch(client, repo):
    config = b'{"size":"wrong"}'
    push_blob(client, repo, config)
    desc = descriptor(OCI_CONFIG, config)
    desc["size"] += 1
    body = canonical(image_manifest(desc, []))
    assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_INVALID")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2, 3]",
        b'{"schemaVersion": 3, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {}}',
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "layers": []}',
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": 5}',
    ],
    ids=["not-json", "array", "schema-version-3", "no-config", "config-not-object"],
)
def test_malformed_manifest(client, repo, body):
    push_blob(client, repo, b"{}")
    assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_INVALID")


def test_malformed_descriptor_digest(client, repo):
    body = canonical(
        image_manifest({"mediaType": OCI_CONFIG, "digest": "sha256:nothex", "size": 2}, [])
    )
    r = put_manifest(client, repo, "v1", body)
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] in {"MANIFEST_INVALID", "DIGEST_INVALID"}


@pytest.mark.parametrize(
    "media_type", [DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED], ids=["v1", "signed"]
)
def test_schema1_refused(client, repo, media_type):
    body = json.dumps(
        {
            "schemaVersion": 1,
            "name": repo,
            "tag": "v1",
            "architecture": "amd64",
            "fsLayers": [{"blobSum": sha256(b"")}],
            "history": [{"v1Compatibility": "{}"}],
        }
    ).encode()
    push_blob(client, repo, b"")
    error = assert_error(
        put_manifest(client, repo, "v1", body, media_type), 400, "MANIFEST_INVALID"
    )
    assert "schema 1" in json.dumps(error).lower()
    assert client.get(f"/v2/{repo}/manifests/v1").status_code == 404


def test_schema1_body_refused_whatever_the_content_type(client, repo):
    body = json.dumps({"schemaVersion": 1, "name": repo, "tag": "v1", "fsLayers": []}).encode()
    assert_error(put_manifest(client, repo, "v1", body, media_type=None), 400, "MANIFEST_INVALID")


def test_unsupported_manifest_media_type(client, repo):
    body = canonical({"schemaVersion": 2, "mediaType": "application/x-not-a-manifest"})
    r = put_manifest(client, repo, "v1", body, "application/x-not-a-manifest")
    assert_error(r, 400, "MANIFEST_INVALID")


# -- foreign and non-distributable layers ---------------------------------------------------


def test_foreign_docker_layer_needs_no_upload(client, repo):
    config = b'{"os":"windows"}'
    push_blob(client, repo, config)
    foreign = {
        "mediaType": DOCKER_FOREIGN_LAYER,
        "digest": sha256(b"windows base layer"),
        "size": 123456789,
        "urls": ["https://mcr.microsoft.com/v2/windows/blobs/sha256:abc"],
    }
    ordinary = random_blob(100)
    push_blob(client, repo, ordinary)
    body = canonical(
        image_manifest(
            descriptor(DOCKER_CONFIG, config),
            [foreign, descriptor(DOCKER_LAYER, ordinary)],
            media_type=DOCKER_MANIFEST,
        )
    )
    r = put_manifest(client, repo, "win", body, DOCKER_MANIFEST)
    assert r.status_code == 201, r.text
    assert client.get(f"/v2/{repo}/manifests/win", headers={"Accept": DOCKER_MANIFEST}).content == (
        body
    )
    # Accepting the manifest did not make the foreign layer pullable here.
    assert client.head(f"/v2/{repo}/blobs/{foreign['digest']}").status_code == 404


def test_oci_nondistributable_layer_needs_no_upload(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    layer = {"mediaType": OCI_NONDIST_LAYER, "digest": sha256(b"nondist"), "size": 7}
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), [layer]))
    assert put_manifest(client, repo, "v1", body).status_code == 201


def test_layer_with_urls_needs_an_upload_unless_non_distributable(client, repo):
    # As distribution: `urls` excuse only the non-distributable (foreign) layer types.
    config = b"{}"
    push_blob(client, repo, config)
    layer = {
        "mediaType": OCI_LAYER,
        "digest": sha256(b"remote"),
        "size": 6,
        "urls": ["https://example.com/layer"],
    }
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), [layer]))
    assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    body = canonical(
        image_manifest(descriptor(OCI_CONFIG, config), [{**layer, "mediaType": OCI_NONDIST_LAYER}])
    )
    assert put_manifest(client, repo, "v1", body).status_code == 201


def test_ordinary_layer_missing_next_to_foreign_one(client, repo):
    config = b"{}"
    push_blob(client, repo, config)
    foreign = {"mediaType": OCI_NONDIST_LAYER, "digest": sha256(b"nd"), "size": 2}
    missing = descriptor(OCI_LAYER, b"never uploaded")
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), [foreign, missing]))
    error = assert_error(put_manifest(client, repo, "v1", body), 400, "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"] == {"digest": missing["digest"]}


# -- indexes and manifest lists -------------------------------------------------------------


def push_index(
    client, repo, tag, *, docker=False, platforms=(("linux", "amd64"), ("linux", "arm64"))
):
    images = [push_image(client, repo, None, docker=docker, platform=p) for p in platforms]
    media_type = DOCKER_LIST if docker else OCI_INDEX
    body = canonical(
        index_manifest(
            [
                img.descriptor(platform={"os": p[0], "architecture": p[1]})
                for img, p in zip(images, platforms, strict=True)
            ],
            media_type=media_type,
        )
    )
    r = put_manifest(client, repo, tag, body, media_type)
    assert r.status_code == 201, r.text
    return body, images


def test_put_oci_index(client, repo):
    body, _ = push_index(client, repo, "multi")
    r = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_INDEX})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == OCI_INDEX
    assert r.headers["docker-content-digest"] == sha256(body)


def test_put_docker_manifest_list(client, repo):
    body, _ = push_index(client, repo, "multi", docker=True)
    r = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": DOCKER_LIST})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == DOCKER_LIST


def test_index_with_missing_child(client, repo):
    image = push_image(client, repo, None)
    ghost = descriptor(OCI_MANIFEST, b'{"ghost":true}')
    body = canonical(index_manifest([image.descriptor(), ghost]))
    error = assert_error(
        put_manifest(client, repo, "v1", body, OCI_INDEX), 400, "MANIFEST_BLOB_UNKNOWN"
    )
    assert error["detail"] == {"digest": ghost["digest"]}


def test_index_of_indexes(client, repo):
    inner, _ = push_index(client, repo, "inner")
    body = canonical(index_manifest([descriptor(OCI_INDEX, inner)]))
    assert put_manifest(client, repo, "outer", body, OCI_INDEX).status_code == 201


def test_index_inferred_without_media_type(client, repo):
    image = push_image(client, repo, None)
    body = canonical({"schemaVersion": 2, "manifests": [image.descriptor()]})
    assert put_manifest(client, repo, "v1", body, media_type=None).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/v1").headers["content-type"] == OCI_INDEX


# -- artifacts ------------------------------------------------------------------------------


def test_artifact_with_artifact_type_and_empty_config(client, repo):
    body, r = push_artifact(client, repo, None, "application/vnd.example.sbom.v1")
    assert r.headers["docker-content-digest"] == sha256(body)
    got = client.get(f"/v2/{repo}/manifests/{sha256(body)}")
    assert got.status_code == 200
    assert got.content == body
    assert json.loads(got.content)["config"]["digest"] == EMPTY_JSON_DIGEST


def test_artifact_with_subject_gets_oci_subject_header(client, repo):
    image = push_image(client, repo, "v1")
    body, r = push_artifact(client, repo, image.descriptor(), "application/vnd.example.sig")
    assert r.status_code == 201
    assert r.headers["oci-subject"] == image.digest
    assert r.headers["location"] == f"/v2/{repo}/manifests/{sha256(body)}"


def test_subject_need_not_exist(client, repo):
    absent = descriptor(OCI_MANIFEST, b'{"not":"pushed"}')
    body, r = push_artifact(client, repo, absent, "application/vnd.example.sig")
    assert r.status_code == 201
    assert r.headers["oci-subject"] == absent["digest"]
    assert client.get(f"/v2/{repo}/manifests/{sha256(body)}").content == body


def test_artifact_config_media_type(client, repo):
    """An artifact may carry its type in config.mediaType instead of artifactType."""
    body, r = push_artifact(
        client, repo, None, None, config_media_type="application/vnd.example.config.v1+json"
    )
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/manifests/{sha256(body)}").content == body


def test_index_with_subject(client, repo):
    image = push_image(client, repo, "v1")
    child = push_image(client, repo, None)
    body = canonical(
        index_manifest(
            [child.descriptor()], subject=image.descriptor(), artifact_type="application/x.set"
        )
    )
    r = put_manifest(client, repo, sha256(body), body, OCI_INDEX)
    assert r.status_code == 201
    assert r.headers["oci-subject"] == image.digest


# -- size limit -----------------------------------------------------------------------------


def padded_manifest(client, repo, size: int) -> bytes:
    config = b"{}"
    push_blob(client, repo, config)
    doc = image_manifest(descriptor(OCI_EMPTY, config), [], annotations={"pad": ""})
    base = len(canonical(doc))
    doc["annotations"]["pad"] = "x" * (size - base)
    body = canonical(doc)
    assert len(body) == size
    return body


def test_manifest_of_4mib_accepted(client, repo):
    body = padded_manifest(client, repo, MAX_MANIFEST)
    r = put_manifest(client, repo, "big", body)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha256(body)
    assert client.get(f"/v2/{repo}/manifests/big").content == body


def test_manifest_over_4mib_refused(client, repo):
    body = padded_manifest(client, repo, MAX_MANIFEST + 1)
    r = put_manifest(client, repo, "big", body)
    assert r.status_code == 413
    assert r.json()["errors"][0]["code"]
    assert_api_version(r)
    assert client.get(f"/v2/{repo}/manifests/big").status_code == 404


def test_manifest_over_4mib_streamed_refused(client, repo):
    body = padded_manifest(client, repo, MAX_MANIFEST + 1024)

    def stream():
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]

    r = client.put(
        f"/v2/{repo}/manifests/big", content=stream(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 413
    assert client.get(f"/v2/{repo}/manifests/big").status_code == 404


# -- content negotiation --------------------------------------------------------------------


def test_accept_lists_several_types(client, repo):
    image = push_image(client, repo, "v1")
    accept = f"{DOCKER_MANIFEST}, {OCI_INDEX};q=0.5, {OCI_MANIFEST};q=0.9"
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": accept})
    assert r.status_code == 200
    assert r.content == image.body


def test_accept_in_several_header_lines(client, repo):
    """Go clients send one Accept line per media type; every line counts."""
    image = push_image(client, repo, "v1")
    headers = [("Accept", DOCKER_MANIFEST), ("Accept", OCI_MANIFEST)]
    r = client.get(f"/v2/{repo}/manifests/v1", headers=headers)
    assert r.status_code == 200
    assert r.content == image.body
    assert r.headers["content-type"] == OCI_MANIFEST


def test_accept_wildcard(client, repo):
    body, _ = push_index(client, repo, "multi")
    r = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": "*/*"})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == OCI_INDEX


def test_oci_manifest_not_served_to_docker_only_client(client, repo):
    push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": DOCKER_MANIFEST})
    assert_error(r, 404, "MANIFEST_UNKNOWN")


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_index_resolves_to_linux_amd64_for_image_only_client(client, repo, method):
    _, images = push_index(
        client, repo, "multi", platforms=(("linux", "arm64"), ("linux", "amd64"))
    )
    amd64 = images[1]
    r = client.request(method, f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_MANIFEST
    assert r.headers["docker-content-digest"] == amd64.digest
    assert int(r.headers["content-length"]) == len(amd64.body)
    if method == "GET":
        assert r.content == amd64.body


def test_manifest_list_resolves_to_linux_amd64_for_schema2_client(client, repo):
    _, images = push_index(client, repo, "multi", docker=True)
    r = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200
    assert r.content == images[0].body
    assert r.headers["content-type"] == DOCKER_MANIFEST
    assert r.headers["docker-content-digest"] == images[0].digest


def test_index_without_linux_amd64_for_image_only_client(client, repo):
    push_index(client, repo, "multi", platforms=(("linux", "arm64"), ("windows", "amd64")))
    r = client.get(f"/v2/{repo}/manifests/multi", headers={"Accept": OCI_MANIFEST})
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_index_by_digest_never_answers_other_content(client, repo):
    body, _ = push_index(client, repo, "multi")
    r = client.get(f"/v2/{repo}/manifests/{sha256(body)}", headers={"Accept": OCI_MANIFEST})
    # Content addressed by digest must hash to that digest; the header must describe the body.
    assert r.status_code in (200, 404)
    if r.status_code == 200:
        assert sha256(r.content) == sha256(body)
        assert r.headers["docker-content-digest"] == sha256(r.content)
