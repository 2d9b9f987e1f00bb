"""Content discovery: tags list (end-8a/8b), catalog, referrers (end-12a/12b)."""

from __future__ import annotations

import re

import pytest

from .helpers import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
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
    sha256,
)

LINK = re.compile(r'^<(?P<url>[^>]+)>;\s*rel="next"$')


def tag_repo(client, repo, tags):
    """One manifest, pushed under every tag given."""
    config = b"{}"
    push_blob(client, repo, config)
    body = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    for tag in tags:
        assert put_manifest(client, repo, tag, body).status_code == 201
    return body


def next_link(r) -> str | None:
    value = r.headers.get("link")
    if value is None:
        return None
    m = LINK.match(value)
    assert m, value
    return m.group("url")


# -- tags -----------------------------------------------------------------------------------

TAGS = ["v3", "alpha", "v1", "latest", "v2", "beta", "v10"]


def test_tags_list(client, repo):
    tag_repo(client, repo, TAGS)
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert r.json() == {"name": repo, "tags": sorted(TAGS)}
    assert "link" not in r.headers
    assert_api_version(r)


def test_tags_are_in_ascii_order(client, repo):
    tags = ["b", "B", "a", "A", "_x", "0", "Z9", "z"]
    tag_repo(client, repo, tags)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == sorted(tags)


def test_tags_paginated_with_link(client, repo):
    tag_repo(client, repo, TAGS)
    expected = sorted(TAGS)
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 3})
    assert r.status_code == 200
    assert r.json()["tags"] == expected[:3]
    assert r.headers["link"] == f'</v2/{repo}/tags/list?n=3&last={expected[2]}>; rel="next"'

    seen, url, pages = [], f"/v2/{repo}/tags/list?n=3", 0
    while url:
        r = client.get(url)
        assert r.status_code == 200
        page = r.json()["tags"]
        assert len(page) <= 3
        seen += page
        pages += 1
        url = next_link(r)
    assert seen == expected
    assert pages == 3


def test_tags_exact_multiple_of_n(client, repo):
    tag_repo(client, repo, ["a", "b", "c", "d"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["a", "b"]
    assert next_link(r) is not None
    r = client.get(next_link(r))
    assert r.json()["tags"] == ["c", "d"]
    # A last page that happens to be full may or may not carry a Link; if it does, it is empty.
    if next_link(r):
        last = client.get(next_link(r))
        assert last.json()["tags"] == []
        assert "link" not in last.headers


def test_tags_n_larger_than_count(client, repo):
    tag_repo(client, repo, ["a", "b"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 100})
    assert r.json()["tags"] == ["a", "b"]
    assert "link" not in r.headers


def test_tags_n_zero(client, repo):
    tag_repo(client, repo, ["a", "b"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 0})
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": []}
    assert "link" not in r.headers


def test_tags_last_without_n(client, repo):
    tag_repo(client, repo, TAGS)
    r = client.get(f"/v2/{repo}/tags/list", params={"last": "beta"})
    assert r.status_code == 200
    assert r.json()["tags"] == [t for t in sorted(TAGS) if t > "beta"]
    assert "link" not in r.headers


def test_tags_last_not_itself_a_tag(client, repo):
    tag_repo(client, repo, ["a", "c", "e"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 1, "last": "b"})
    assert r.json()["tags"] == ["c"]


def test_tags_last_after_everything(client, repo):
    tag_repo(client, repo, ["a", "b"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": 5, "last": "zzz"})
    assert r.json()["tags"] == []
    assert "link" not in r.headers


def test_tags_of_repository_without_tags(client, repo):
    push_image(client, repo, tag=None)
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": []}


def test_tags_of_unknown_repository(client, repo):
    assert_error(client.get(f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")


@pytest.mark.parametrize("n", ["-1", "abc", "1.5"], ids=["negative", "word", "float"])
def test_tags_invalid_n(client, repo, n):
    tag_repo(client, repo, ["a"])
    r = client.get(f"/v2/{repo}/tags/list", params={"n": n})
    assert r.status_code == 400


def test_tags_of_nested_repository(client, repo):
    nested = f"{repo}/a/b/c"
    tag_repo(client, nested, ["x"])
    assert client.get(f"/v2/{nested}/tags/list").json() == {"name": nested, "tags": ["x"]}


# -- catalog --------------------------------------------------------------------------------


def test_catalog_pagination(fresh_server):
    names = ["zeta", "alpha/one", "alpha/two", "beta", "gamma/x/y"]
    with fresh_server.client() as c:
        for name in names:
            push_blob(c, name, b"{}")
        r = c.get("/v2/_catalog")
        assert r.status_code == 200
        assert r.json() == {"repositories": sorted(names)}
        assert "link" not in r.headers
        assert_api_version(r)

        r = c.get("/v2/_catalog", params={"n": 2})
        assert r.json() == {"repositories": sorted(names)[:2]}
        assert (
            r.headers["link"]
            == f'</v2/_catalog?n=2&last={sorted(names)[1].replace("/", "%2F")}>; rel="next"'
        )

        seen, url = [], "/v2/_catalog?n=2"
        while url:
            r = c.get(url)
            assert r.status_code == 200
            seen += r.json()["repositories"]
            url = next_link(r)
        assert seen == sorted(names)

        r = c.get("/v2/_catalog", params={"n": 0})
        assert r.json() == {"repositories": []}
        assert "link" not in r.headers

        r = c.get("/v2/_catalog", params={"last": "beta"})
        assert r.json() == {"repositories": ["gamma/x/y", "zeta"]}


def test_catalog_lists_only_what_the_caller_may_read(client, user_client, user, anon, repo):
    push_image(client, repo)  # private, in the admin's namespace
    assert repo in client.get("/v2/_catalog").json()["repositories"]
    mine = f"{user.username}/app"
    push_image(user_client, mine)
    assert user_client.get("/v2/_catalog").json() == {"repositories": [mine]}
    # Anonymous callers see public repositories only; there are none here.
    assert anon.get("/v2/_catalog").json() == {"repositories": []}


# -- referrers ------------------------------------------------------------------------------

SBOM = "application/vnd.example.sbom.v1"
SIG = "application/vnd.example.signature.v1"
CONFIG_TYPE = "application/vnd.example.config.v1+json"


@pytest.fixture
def referred(client, repo):
    """A subject image and four referrers of different shapes."""
    subject = push_image(client, repo, "v1")
    sbom, _ = push_artifact(client, repo, subject.descriptor(), SBOM, annotations={"n": "sbom"})
    sig, _ = push_artifact(client, repo, subject.descriptor(), SIG, annotations={"n": "sig"})
    # No artifactType: the referrers descriptor takes the config's mediaType.
    cfg, _ = push_artifact(client, repo, subject.descriptor(), None, config_media_type=CONFIG_TYPE)
    # An index without artifactType: no artifactType in its descriptor.
    child = push_image(client, repo, None)
    index = canonical(
        index_manifest([child.descriptor()], subject=subject.descriptor(), annotations={"n": "i"})
    )
    r = put_manifest(client, repo, sha256(index), index, OCI_INDEX)
    assert r.status_code == 201
    assert r.headers["oci-subject"] == subject.digest
    # Unrelated manifests must not show up.
    push_artifact(client, repo, None, SBOM)
    return subject, {"sbom": sbom, "sig": sig, "cfg": cfg, "index": index}


def test_referrers(client, repo, referred):
    subject, refs = referred
    r = client.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert "oci-filters-applied" not in r.headers
    assert_api_version(r)
    doc = r.json()
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in doc["manifests"]}
    assert len(doc["manifests"]) == 4
    assert by_digest[sha256(refs["sbom"])] == {
        "mediaType": OCI_MANIFEST,
        "digest": sha256(refs["sbom"]),
        "size": len(refs["sbom"]),
        "artifactType": SBOM,
        "annotations": {"n": "sbom"},
    }
    assert by_digest[sha256(refs["sig"])]["artifactType"] == SIG
    assert by_digest[sha256(refs["sig"])]["annotations"] == {"n": "sig"}
    cfg = by_digest[sha256(refs["cfg"])]
    assert cfg["artifactType"] == CONFIG_TYPE
    assert cfg["size"] == len(refs["cfg"])
    assert "annotations" not in cfg or cfg["annotations"] == {}
    index = by_digest[sha256(refs["index"])]
    assert index["mediaType"] == OCI_INDEX
    assert index["size"] == len(refs["index"])
    assert "artifactType" not in index
    assert index["annotations"] == {"n": "i"}


def test_referrers_filtered_by_artifact_type(client, repo, referred):
    subject, refs = referred
    r = client.get(f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": SBOM})
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(refs["sbom"])]


def test_referrers_filter_on_config_media_type(client, repo, referred):
    subject, refs = referred
    r = client.get(f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": CONFIG_TYPE})
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(refs["cfg"])]


def test_referrers_filter_matching_nothing(client, repo, referred):
    subject, _ = referred
    r = client.get(
        f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": "application/x-none"}
    )
    assert r.status_code == 200
    assert r.headers["oci-filters-applied"] == "artifactType"
    assert r.json()["manifests"] == []


def test_referrers_of_manifest_without_referrers(client, repo):
    image = push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/referrers/{image.digest}")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_referrers_to_non_existent_subject(client, repo):
    absent = descriptor(OCI_MANIFEST, b'{"never":"pushed"}')
    body, r = push_artifact(client, repo, absent, SIG)
    assert r.headers["oci-subject"] == absent["digest"]
    r = client.get(f"/v2/{repo}/referrers/{absent['digest']}")
    assert r.status_code == 200
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(body)]
    # The subject still does not exist as a manifest.
    assert client.get(f"/v2/{repo}/manifests/{absent['digest']}").status_code == 404


def test_referrers_in_unknown_repository(client, repo):
    r = client.get(f"/v2/{repo}/referrers/{sha256(b'x')}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_referrers_are_per_repository(client, repo, referred):
    subject, _ = referred
    other = f"{repo}-other"
    push_image(client, other, "v1")
    r = client.get(f"/v2/{other}/referrers/{subject.digest}")
    assert r.status_code == 200
    assert r.json()["manifests"] == []


def test_deleted_referrer_leaves_list(client, repo, referred):
    subject, refs = referred
    assert client.delete(f"/v2/{repo}/manifests/{sha256(refs['sig'])}").status_code == 202
    r = client.get(f"/v2/{repo}/referrers/{subject.digest}")
    digests = {d["digest"] for d in r.json()["manifests"]}
    assert sha256(refs["sig"]) not in digests
    assert len(digests) == 3


def test_referrer_pushed_by_tag(client, repo):
    subject = push_image(client, repo, "v1")
    push_blob(client, repo, b"{}")
    body = canonical(
        image_manifest(
            {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
            [],
            subject=subject.descriptor(),
            artifact_type=SBOM,
        )
    )
    r = put_manifest(client, repo, "sbom", body)
    assert r.status_code == 201
    assert r.headers["oci-subject"] == subject.digest
    r = client.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert [d["digest"] for d in r.json()["manifests"]] == [sha256(body)]


def test_referrers_invalid_digest(client, repo):
    push_image(client, repo, "v1")
    assert_error(client.get(f"/v2/{repo}/referrers/sha256:1234"), 400, "DIGEST_INVALID")
    assert_error(client.get(f"/v2/{repo}/referrers/latest"), 400, "DIGEST_INVALID")
