"""Pure parsing and validation: digests, names, tags, manifests, byte ranges."""

from __future__ import annotations

import json

import pytest

from wharf.registry import mediatypes as mt
from wharf.registry.digest import parse_digest
from wharf.registry.errors import DigestInvalid, ManifestInvalid, NameInvalid, TagInvalid
from wharf.registry.handlers.blobs import IGNORE, _parse_range
from wharf.registry.manifest import parse_manifest
from wharf.registry.names import validate_name, validate_tag

# Pure parsing, no metadata store: one pass of the suite is enough.
pytestmark = pytest.mark.once

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    "value",
    [
        "sha256:abc",
        "sha256:" + "A" * 64,
        "md5:" + "a" * 32,
        "sha256",
        ":" + "a" * 64,
        "sha512:" + "a" * 64,
        "sha256:" + "g" * 64,
        "",
    ],
)
def test_bad_digests(value):
    with pytest.raises(DigestInvalid):
        parse_digest(value)


def test_good_digests():
    assert str(parse_digest(SHA)) == SHA
    d = parse_digest("sha512:" + "0" * 128)
    assert (d.algorithm, len(d.hex)) == ("sha512", 128)


@pytest.mark.parametrize("name", ["a", "a/b/c", "a.b_c__d-e--f/g0", "x" * 255])
def test_good_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["A", "a/", "/a", "a//b", "a_", "-a", "a..b", "a___b", "x" * 256])
def test_bad_names(name):
    with pytest.raises(NameInvalid):
        validate_name(name)


def test_tags():
    assert validate_tag("v1.0_rc-1") == "v1.0_rc-1"
    for bad in (".x", "-x", "x" * 129, "a/b", ""):
        with pytest.raises(TagInvalid):
            validate_tag(bad)


def _image(**extra):
    doc = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": SHA,
            "size": 2,
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": SHA, "size": 2}
        ],
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def test_parse_image_manifest_reports_config_type_as_artifact_type():
    parsed = parse_manifest(_image(), mt.OCI_MANIFEST)
    assert parsed.media_type == mt.OCI_MANIFEST
    assert [str(b.digest) for b in parsed.blobs] == [SHA, SHA]
    assert parsed.artifact_type == "application/vnd.oci.image.config.v1+json"


def test_media_type_must_agree_with_content_type():
    with pytest.raises(ManifestInvalid):
        parse_manifest(_image(), mt.DOCKER_MANIFEST)


def test_schema1_refused_with_a_way_out():
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(b'{"schemaVersion": 1, "name": "a"}', mt.DOCKER_SCHEMA1_SIGNED)
    assert "schema 1" in caught.value.detail
    assert "--format v2s2" in caught.value.detail


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        _image(schemaVersion=3),
        _image(layers="x"),
        _image(config={"mediaType": "a", "digest": "sha256:zz", "size": 1}),
        _image(config={"mediaType": "a", "digest": SHA, "size": -1}),
    ],
)
def test_invalid_manifests(body):
    with pytest.raises(ManifestInvalid):
        parse_manifest(body, mt.OCI_MANIFEST)


def test_foreign_layers_are_marked_by_media_type_only():
    layer = {"digest": SHA, "size": 1, "urls": ["https://example.invalid/layer"]}
    foreign = {**layer, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
    ordinary = {**layer, "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}
    blobs = parse_manifest(_image(layers=[foreign, ordinary]), mt.OCI_MANIFEST).blobs
    assert [b.is_foreign for b in blobs] == [False, True, False]


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=95-200", 100, (95, 99)),
        ("bytes=100-", 100, None),
        ("bytes=5-4", 100, None),
        ("bytes=-0", 100, None),
        ("items=0-1", 100, IGNORE),
        ("bytes=0-1,5-6", 100, IGNORE),
        ("bytes=-", 100, None),
    ],
)
def test_byte_ranges(header, size, expected):
    assert _parse_range(header, size) == expected
