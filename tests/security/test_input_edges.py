"""Input at the edge, through a real server: names, tags and digests are matched whole (a
trailing newline, other control characters and non-ASCII digits are refused with the spec's
error, never stored), numbers of any length or script get an error or a clamp (never a 500),
manifests are bounded (nesting, sizes a BigInteger holds, foreign layers by media type only,
index children of the size stored), and a bad value already stored cannot make a response
header drop the connection."""

from __future__ import annotations

import json
import secrets

import httpx
import pytest

from tests.api.helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    OCI_NONDIST_LAYER,
    assert_error,
    canonical,
    descriptor,
    image_manifest,
    index_manifest,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
)
from wharf.metadata.store import MetadataStore

# Percent-encoded (as sent on the wire) and refused by every name, tag or digest grammar.
BAD_SUFFIXES = ["%0A", "%0D", "%09", "%0B", "%7F", "%C2%B2", "%D9%A3", "%C3%A9", "%20"]
HUGE = "9" * 5000  # int() refuses more than 4,300 digits


@pytest.mark.parametrize("suffix", BAD_SUFFIXES)
def test_repository_names_are_matched_whole(client, repo, suffix):
    r = client.post(f"/v2/{repo}{suffix}/blobs/uploads/")
    assert_error(r, 400, "NAME_INVALID")
    r = client.get(f"/v2/{repo}{suffix}/tags/list")
    assert_error(r, 400, "NAME_INVALID")


@pytest.mark.parametrize("suffix", BAD_SUFFIXES)
def test_tags_are_matched_whole(client, repo, suffix):
    image = push_image(client, repo, tag=None)
    r = put_manifest(client, repo, f"v1{suffix}", image.body)
    assert_error(r, 400, "MANIFEST_INVALID")
    r = put_manifest(client, repo, image.digest, image.body, params={"tag": f"v1{suffix}"})
    assert_error(r, 400, "MANIFEST_INVALID")
    r = client.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 404 or r.json()["tags"] in ([], None), r.text


@pytest.mark.parametrize("suffix", ["%0A", "%0D%0A", "%09", "%C2%B2", "%20"])
def test_digests_are_matched_whole(client, repo, suffix):
    image = push_image(client, repo, tag="v1")
    layer = sha256(image.layers[0])
    for path in (f"manifests/{image.digest}{suffix}", f"blobs/{layer}{suffix}"):
        assert_error(client.get(f"/v2/{repo}/{path}"), 400, "DIGEST_INVALID")
        assert client.head(f"/v2/{repo}/{path}").status_code == 400
    r = put_manifest(client, repo, f"{image.digest}{suffix}", image.body)
    assert_error(r, 400, "DIGEST_INVALID")
    data = random_blob(64)
    r = client.post(f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}{suffix}", content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    r = client.put(f"{location}?digest={sha256(data)}{suffix}", content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    # A mount of such a digest is not a mount: a regular upload starts instead.
    r = client.post(f"/v2/{repo}/blobs/uploads/?mount={layer}{suffix}&from={repo}")
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("n", ["%C2%B2", "%D9%A3", "3%0A", "-1", "1e3"])
def test_page_sizes_of_other_scripts_are_refused(client, repo, n):
    push_image(client, repo, tag="v1")
    for path in (f"/v2/{repo}/tags/list?n={n}", f"/v2/_catalog?n={n}"):
        assert_error(client.get(path), 400, "UNSUPPORTED")


def test_page_sizes_of_thousands_of_digits_are_clamped(client, repo):
    push_image(client, repo, tag="v1")
    r = client.get(f"/v2/{repo}/tags/list?n={HUGE}")
    assert r.status_code == 200 and r.json()["tags"] == ["v1"], r.text
    r = client.get(f"/v2/_catalog?n={HUGE}")
    assert r.status_code == 200 and repo in r.json()["repositories"], r.text


def test_ranges_of_thousands_of_digits(client, repo):
    location = client.post(f"/v2/{repo}/blobs/uploads/").headers["location"]
    for value in (f"0-{HUGE}", f"{HUGE}-{HUGE}", f"bytes 0-2/{HUGE}x"):
        r = client.patch(location, content=b"abc", headers={"Content-Range": value})
        assert_error(r, 416, "BLOB_UPLOAD_INVALID")
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes=10-{HUGE}"})
    assert r.status_code == 206 and r.content == data[10:], r.text
    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes=-{HUGE}"})
    assert r.status_code == 206 and r.content == data, r.text
    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": f"bytes={HUGE}-"})
    assert_error(r, 416, "UNSUPPORTED")


def _image(client: httpx.Client, repo: str, layers: list[dict]) -> bytes:
    config = canonical({"architecture": "amd64", "os": "linux"})
    push_blob(client, repo, config)
    return canonical(image_manifest(descriptor(OCI_CONFIG, config), layers))


def test_deeply_nested_manifests_are_refused(client, repo):
    body = _image(client, repo, [])
    deep = body[:-1] + b',"x":' + b"[" * 1000 + b"]" * 1000 + b"}"
    r = put_manifest(client, repo, "deep", deep)
    assert_error(r, 400, "MANIFEST_INVALID")
    annotations = body[:-1] + b',"annotations":{"a":' + b'{"b":' * 200 + b"1" + b"}" * 201 + b"}"
    assert_error(put_manifest(client, repo, "deep", annotations), 400, "MANIFEST_INVALID")
    # Brackets inside strings do not count.
    doc = json.loads(body)
    doc["annotations"] = {"a": "[" * 5000}
    r = put_manifest(client, repo, "brackets", canonical(doc))
    assert r.status_code == 201, r.text


def test_sizes_a_database_integer_cannot_hold_are_refused(client, repo):
    foreign = {"mediaType": OCI_NONDIST_LAYER, "digest": sha256(b"elsewhere"), "urls": ["x"]}
    for sizes in ([2**63], [2**63 - 1, 2**63 - 1], [2**64 + 5], [-1]):
        layers = [{**foreign, "size": size} for size in sizes]
        r = put_manifest(client, repo, "big", _image(client, repo, layers))
        assert_error(r, 400, "MANIFEST_INVALID")
    layers = [{**foreign, "size": 2**62}]
    r = put_manifest(client, repo, "big", _image(client, repo, layers))
    assert r.status_code == 201, r.text


def test_only_non_distributable_layers_may_be_absent(client, repo):
    missing = random_blob(32)
    layer = {**descriptor(OCI_LAYER, missing), "urls": ["https://example.com/layer"]}
    r = put_manifest(client, repo, "v1", _image(client, repo, [layer]))
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    huge = {**layer, "size": 2**62}
    r = put_manifest(client, repo, "v1", _image(client, repo, [huge]))
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    foreign = {**descriptor(OCI_NONDIST_LAYER, missing), "urls": ["https://example.com/layer"]}
    r = put_manifest(client, repo, "v1", _image(client, repo, [foreign]))
    assert r.status_code == 201, r.text


def test_index_children_must_have_their_stored_size(client, repo):
    image = push_image(client, repo, tag=None)
    for size in (len(image.body) + 1, len(image.body) - 1, 0):
        child = {**image.descriptor(), "size": size}
        body = canonical(index_manifest([child]))
        r = put_manifest(client, repo, "multi", body, OCI_INDEX)
        assert_error(r, 400, "MANIFEST_INVALID")
    body = canonical(index_manifest([image.descriptor()]))
    assert put_manifest(client, repo, "multi", body, OCI_INDEX).status_code == 201


# -- the management API --------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\t", "\x0b", " ", "\u00b2", "\u0663", "\u00e9"])
def test_management_names_are_matched_whole(wharf_server, suffix):
    with wharf_server.client() as c:
        name = f"edge{secrets.token_hex(3)}"
        r = c.post("/api/v0/accounts", json={"name": name + suffix, "password": "password-123"})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_ACCOUNT_NAME"
        r = c.post("/api/v0/accounts", json={"name": name + suffix, "isOrg": True})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_ACCOUNT_NAME"
        assert c.post("/api/v0/accounts", json={"name": name, "isOrg": True}).status_code == 201
        r = c.post(f"/api/v0/accounts/{name}/teams", json={"name": "dev" + suffix})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_TEAM_NAME"
        r = c.post(f"/api/v0/repositories/{name}", json={"name": "app" + suffix})
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "INVALID_REPOSITORY_NAME"
        listed = c.get("/api/v0/accounts", params={"pageStart": name, "pageSize": 2})
        assert [a["name"] for a in listed.json()][:1] == [name]


@pytest.mark.parametrize("value", [HUGE, "\u00b2", "\u0663", "-5"])
def test_management_page_parameters_of_any_shape_are_400(wharf_server, value):
    with wharf_server.client() as c:
        for path in ("/api/v0/accounts", "/api/v0/repositories", "/api/v0/jobs"):
            r = c.get(path, params={"pageSize": value})
            assert r.status_code == 400, (path, r.text)
            assert r.json()["errors"][0]["code"] == "INVALID_PARAMETERS"


# -- values stored before they were checked ------------------------------------------------


def test_stored_bad_names_never_drop_the_connection(fresh_server):
    """Rows as an older release stored them (a trailing newline passed its checks): the
    headers that echo them are sent percent-encoded rather than the connection lost."""
    server = fresh_server
    with server.client() as c:
        image = push_image(c, "edge/app", tag="v1")
        assert c.post("/api/v0/accounts", json={"name": "qq1", "isOrg": True}).status_code == 201
    store = MetadataStore(server.db_url)
    try:
        store.create_user("qq1\n", None, is_admin=False)
        repo = store.get_repository("edge/app")
        assert repo is not None
        bad = image.digest + "\n"
        store.put_manifest(
            repo.id,
            digest=bad,
            sha256=sha256(image.body + b" "),
            sha512="sha512:" + "0" * 128,
            media_type=OCI_MANIFEST,
            content=image.body + b" ",
            artifact_type=None,
            subject=None,
            annotations=None,
            references=(),
            tags=("v2",),
        )
    finally:
        store.dispose()
    with server.client() as c:
        r = c.get("/api/v0/accounts", params={"pageStart": "qq1", "pageSize": 1})
        assert r.status_code == 200, r.text
        assert [a["name"] for a in r.json()] == ["qq1"]
        assert r.headers["x-next-page-start"] == "qq1%0A"
        r = c.get("/v2/edge/app/manifests/v2")
        assert r.status_code == 200, r.text
        assert r.headers["docker-content-digest"] == image.digest + "%0A"


def test_an_index_child_platform_of_any_json_type_is_no_500(client, repo):
    """Platforms are not validated at push; choosing an image for an old client copes."""
    image = push_image(client, repo, tag=None)
    body = canonical(index_manifest([image.descriptor(platform="linux/amd64")]))
    assert put_manifest(client, repo, "multi", body, OCI_INDEX).status_code == 201
    accept = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
    r = client.get(f"/v2/{repo}/manifests/multi", headers=accept)
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_management_numbers_and_times_past_what_is_stored_are_400(wharf_server):
    """An id past 2^63 - 1, or a time past the last (or before the first) UTC time, is a
    400, not an overflow in the database driver or the datetime module."""
    with wharf_server.client() as c:
        job = c.post("/api/v0/jobs", json={"action": "sleep", "parameters": {"seconds": 0}})
        assert job.status_code == 202, job.text
        late, early = "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"
        requests = [
            ("GET", "/api/v0/audit", {"before": "9" * 30}),
            ("GET", f"/api/v0/jobs/{job.json()['id']}/logs", {"after": "9" * 30}),
            ("GET", "/api/v0/audit", {"since": late}),
            ("GET", "/api/v0/audit", {"until": early}),
            ("DELETE", "/api/v0/api_tokens", {"usedbefore": early}),
            ("DELETE", "/api/v0/api_tokens", {"usedbefore": late}),
        ]
        for method, path, params in requests:
            r = c.request(method, path, params=params)
            assert r.status_code == 400, (path, params, r.text)
            assert r.json()["errors"][0]["code"] == "INVALID_PARAMETERS"
        r = c.post("/api/v0/jobs", json={"action": "sleep", "scheduledAt": late})
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_PARAMETERS"


def test_job_parameters_are_flat(wharf_server):
    """Nested parameter values were stored as given; one nested deep enough failed the
    response (500, and the connection lost) and then every job listing."""
    deep = b"[" * 900 + b"]" * 900
    with wharf_server.client() as c:
        for body in (
            b'{"action": "sleep", "parameters": {"a": ' + deep + b"}}",
            b'{"action": "ldapsync", "parameters": {"a": {"b": 1}}}',
        ):
            r = c.post("/api/v0/jobs", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400, r.text
            assert r.json()["errors"][0]["code"] == "INVALID_PARAMETERS"
        assert c.get("/api/v0/jobs", params={"pageSize": 1000}).status_code == 200
