"""Names, authentication, error bodies and the API version header on every response."""

from __future__ import annotations

import base64

import pytest

from .helpers import (
    OCI_CONFIG,
    SPEC_ERROR_CODES,
    assert_api_version,
    assert_error,
    canonical,
    descriptor,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
    start_upload,
)

# -- repository names -----------------------------------------------------------------------

BAD_NAMES = {
    "uppercase": "Test/Upper",
    "upper-in-component": "test/myImage",
    "leading-dash": "-test/x",
    "trailing-dash": "test/x-",
    "double-dot": "test/a..b",
    "triple-underscore": "test/a___b",
    "leading-underscore": "test/_x",
    "empty-component": "test//x",
    "trailing-slash-component": "test/x/",
    "plus": "test/a+b",
    "too-long": "a/" + "b" * 254,
}


def name_routes(name: str) -> list[tuple[str, str]]:
    d = sha256(b"x")
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{d}"),
        ("GET", f"/v2/{name}/blobs/{d}"),
        ("DELETE", f"/v2/{name}/blobs/{d}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/blobs/uploads/some-id"),
        ("PATCH", f"/v2/{name}/blobs/uploads/some-id"),
        ("PUT", f"/v2/{name}/blobs/uploads/some-id?digest={d}"),
        ("DELETE", f"/v2/{name}/blobs/uploads/some-id"),
        ("GET", f"/v2/{name}/referrers/{d}"),
    ]


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
def test_invalid_names(client, name):
    for method, path in name_routes(name):
        r = client.request(method, path)
        if method == "HEAD":
            assert r.status_code == 400, (method, path)
        else:
            assert_error(r, 400, "NAME_INVALID")
        assert_api_version(r)


def test_name_of_255_characters_accepted(client):
    name = "test/" + "n" * 250
    push_blob(client, name, b"{}")
    assert client.head(f"/v2/{name}/blobs/{sha256(b'{}')}").status_code == 200


@pytest.mark.parametrize(
    "suffix",
    ["a/b/c/d/e", "with.dots/and_under/dash-es", "x__y/z--w", "0/1/2"],
    ids=["deep", "separators", "double-separators", "digits"],
)
def test_nested_names(client, repo, suffix):
    name = f"{repo}/{suffix}"
    image = push_image(client, name, "v1")
    r = client.get(f"/v2/{name}/manifests/v1")
    assert r.status_code == 200
    assert r.content == image.body
    assert client.get(f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["v1"]}
    assert client.get(f"/v2/{name}/blobs/{sha256(image.layers[0])}").content == image.layers[0]


def test_nested_name_that_looks_like_a_route(client, repo):
    """`.../manifests/...` inside a name: the repository is everything before the last route."""
    name = f"{repo}/blobs/manifests"
    image = push_image(client, name, "v1")
    assert client.get(f"/v2/{name}/manifests/v1").content == image.body
    assert client.get(f"/v2/{name}/tags/list").json()["name"] == name


# -- authentication -------------------------------------------------------------------------


@pytest.fixture
def private_repo(client, repo):
    image = push_image(client, repo, "v1")
    return repo, image


def anon_requests(repo, image):
    return [
        ("GET", f"/v2/{repo}/tags/list"),
        ("GET", f"/v2/{repo}/manifests/v1"),
        ("GET", f"/v2/{repo}/manifests/{image.digest}"),
        ("GET", f"/v2/{repo}/blobs/{sha256(image.layers[0])}"),
        ("GET", f"/v2/{repo}/referrers/{image.digest}"),
        ("POST", f"/v2/{repo}/blobs/uploads/"),
        ("PUT", f"/v2/{repo}/manifests/v2"),
        ("DELETE", f"/v2/{repo}/manifests/{image.digest}"),
        ("DELETE", f"/v2/{repo}/blobs/{sha256(image.layers[0])}"),
    ]


def test_anonymous_on_private_repository(anon, client, private_repo):
    repo, image = private_repo
    for method, path in anon_requests(repo, image):
        r = anon.request(method, path)
        assert_error(r, 401, "UNAUTHORIZED")
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="http://'), (method, path)
        action = "pull" if method == "GET" else "pull,push" if method != "DELETE" else "delete"
        assert f'scope="repository:{repo}:{action}"' in challenge, (method, path, challenge)
        assert_api_version(r)
    r = anon.head(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer ")
    # Nothing changed.
    assert client.get(f"/v2/{repo}/manifests/v1").content == image.body


def test_wrong_password_on_repository(wharf_server, anon, private_repo):
    repo, _ = private_repo
    r = anon.get(f"/v2/{repo}/tags/list", auth=(wharf_server.admin_user, "wrong"))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!not-base64!!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b":nouser").decode(),
        "Bearer some-token",
    ],
    ids=["bad-base64", "no-colon", "empty-user", "bearer"],
)
def test_malformed_authorization(anon, header):
    r = anon.get("/v2/", headers={"Authorization": header})
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith("Bearer ")


def test_user_is_denied_other_repositories(user_client, private_repo):
    """A private repository the caller may not read answers exactly like a missing one:
    reads 404 NAME_UNKNOWN, writes 403 DENIED."""
    repo, image = private_repo
    missing = "nobody/nothing-here"
    for method, path in anon_requests(repo, image):
        r = user_client.request(method, path)
        twin = user_client.request(method, path.replace(repo, missing, 1))
        if method == "GET":
            body = assert_error(r, 404, "NAME_UNKNOWN")
        else:
            body = assert_error(r, 403, "DENIED")
        assert twin.status_code == r.status_code, (method, path)
        assert body["message"] == twin.json()["errors"][0]["message"]
        assert "www-authenticate" not in r.headers


def test_user_may_push_to_own_namespace(user_client, user):
    name = f"{user.username}/app"
    image = push_image(user_client, name, "v1")
    assert user_client.get(f"/v2/{name}/manifests/v1").content == image.body


# -- error bodies ---------------------------------------------------------------------------


def test_error_bodies_use_spec_codes(client, repo):
    """Each common failure, with its status and code, in the spec's JSON format."""
    image = push_image(client, repo, "v1")
    location = start_upload(client, repo)
    config = b'{"missing":1}'
    missing_config = canonical(image_manifest(descriptor(OCI_CONFIG, config), []))
    cases = [
        (client.get(f"/v2/{repo}/blobs/{sha256(b'none')}"), 404, "BLOB_UNKNOWN"),
        (client.get(f"/v2/{repo}/blobs/uploads/nope"), 404, "BLOB_UPLOAD_UNKNOWN"),
        (
            client.put(location, params={"digest": sha256(b"z")}, content=b"y"),
            400,
            "DIGEST_INVALID",
        ),
        (put_manifest(client, repo, "x", missing_config), 400, "MANIFEST_BLOB_UNKNOWN"),
        (put_manifest(client, repo, "x", b"{"), 400, "MANIFEST_INVALID"),
        (client.get(f"/v2/{repo}/manifests/none"), 404, "MANIFEST_UNKNOWN"),
        (client.get("/v2/Bad/tags/list"), 400, "NAME_INVALID"),
        (client.get(f"/v2/{repo}-none/tags/list"), 404, "NAME_UNKNOWN"),
        (client.patch(f"/v2/{repo}/manifests/v1"), 405, "UNSUPPORTED"),
    ]
    for r, status, code in cases:
        error = assert_error(r, status, code)
        assert code in SPEC_ERROR_CODES
        assert error.get("message"), error
        assert_api_version(r)
    assert image.digest


def test_method_not_allowed(client, repo):
    push_image(client, repo, "v1")
    r = client.post(f"/v2/{repo}/manifests/v1")
    assert_error(r, 405, "UNSUPPORTED")
    assert set(r.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PUT", "DELETE"}
    r = client.put(f"/v2/{repo}/tags/list")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET"
    r = client.delete("/v2/")
    assert r.status_code == 405


def spec_code_cases(repo: str) -> dict[str, tuple[str, str, dict]]:
    return {
        "unknown-route": ("GET", f"/v2/{repo}/nothing-here", {}),
        "pagination-n": ("GET", f"/v2/{repo}/tags/list?n=abc", {}),
        "invalid-tag-put": ("PUT", f"/v2/{repo}/manifests/-bad", {}),
        "invalid-extra-tag": ("PUT", "", {"tag": "-bad"}),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown-route",
        "pagination-n",
        "invalid-tag-put",
        "invalid-extra-tag",
    ],
)
def test_error_code_is_one_of_the_spec_codes(client, repo, case):
    """Spec, Error Codes: "The `code` field MUST be one of the following" (14 codes)."""
    image = push_image(client, repo, "v1")
    method, path, params = spec_code_cases(repo)[case]
    if case == "invalid-extra-tag":
        r = put_manifest(client, repo, image.digest, image.body, params=params)
    elif method == "PUT":
        r = put_manifest(client, repo, path.rsplit("/", 1)[1], image.body)
    else:
        r = client.request(method, path)
    assert 400 <= r.status_code < 500
    code = r.json()["errors"][0]["code"]
    assert code in SPEC_ERROR_CODES, code


# -- the API version header -----------------------------------------------------------------


def test_api_version_header_on_every_response(client, anon, repo):
    image = push_image(client, repo, "v1")
    layer = sha256(image.layers[0])
    location = start_upload(client, repo)
    data = random_blob(10)
    responses = [
        client.get("/v2/"),
        anon.get("/v2/"),
        client.get(f"/v2/{repo}/tags/list"),
        client.get(f"/v2/{repo}/manifests/v1"),
        client.head(f"/v2/{repo}/manifests/v1"),
        client.get(f"/v2/{repo}/blobs/{layer}"),
        client.head(f"/v2/{repo}/blobs/{layer}"),
        client.get(f"/v2/{repo}/blobs/{layer}", headers={"Range": "bytes=0-3"}),
        client.get(f"/v2/{repo}/blobs/{layer}", headers={"Range": "bytes=999999-"}),
        client.get(location),
        client.patch(location, content=data, headers={"Content-Range": "0-9"}),
        client.patch(location, content=data, headers={"Content-Range": "50-59"}),
        client.put(location, params={"digest": sha256(data)}),
        client.get(f"/v2/{repo}/referrers/{image.digest}"),
        client.get(f"/v2/{repo}/manifests/missing"),
        client.get(f"/v2/{repo}/blobs/sha256:bad"),
        client.get("/v2/Bad/tags/list"),
        client.post("/v2/"),
        client.get("/v2/_catalog"),
        client.get(f"/v2/{repo}/not-a-route"),
        client.delete(f"/v2/{repo}/manifests/v1"),
    ]
    statuses = set()
    for r in responses:
        assert_api_version(r)
        statuses.add(r.status_code)
    assert {200, 201, 202, 204, 206, 400, 401, 404, 405, 416} <= statuses
