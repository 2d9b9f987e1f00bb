"""Hostile repository names, references, upload ids and scopes: refused (400 NAME_INVALID or a
404), never a 500, never resolved into another repository, never a file outside the data
directory. Requests are sent byte for byte (no client-side dot-segment removal)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import WharfServer, start_server

from .helpers import Account, Admin, Image, basic, get_token, jwt_parts, push_image, raw_request


class Setup:
    def __init__(self, root: Path, server: WharfServer, alice: Account, bob: Account, image: Image):
        self.root, self.server, self.alice, self.bob, self.image = root, server, alice, bob, image

    def headers(self, who: str) -> dict[str, str]:
        if who == "admin":
            return {"Authorization": basic(*self.server.auth)}
        return {"Authorization": basic(*self.alice.auth)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A server whose data directory sits two levels below a directory that nothing else
    uses, so that a write escaping it by up to three levels is still seen."""
    root = tmp_path_factory.mktemp("hostile")
    base = root / "a" / "b"
    base.mkdir(parents=True)
    server = start_server(base)
    admin = Admin(server)
    alice, bob = admin.user("alice"), admin.user("bob")
    with alice.client() as c:
        push_image(c, f"{alice.name}/x")
    with bob.client() as c:
        image = push_image(c, f"{bob.name}/private")
    admin.close()
    yield Setup(root, server, alice, bob, image)
    server.stop()


ALLOWED_PATHS = [
    r"a",
    r"a/b",
    r"a/b/wharf-\d+\.log",
    r"a/b/data",
    r"a/b/data/wharf\.db(-wal|-shm|-journal)?",
    r"a/b/data/replica-id",
    r"a/b/data/wharf\.pid",  # the running server's pid (for SIGHUP restarts)
    r"a/b/data/storage",
    r"a/b/data/storage/(blobs|uploads|_health)",  # _health: the status probe's folder
    r"a/b/data/storage/blobs/sha256(/[0-9a-f]{2}(/[0-9a-f]{64}(/data)?)?)?",
    r"a/b/data/storage/uploads/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(/data)?",
]


def assert_tree_clean(setup: Setup) -> None:
    allowed = re.compile("|".join(f"(?:{p})" for p in ALLOWED_PATHS))
    unexpected = [
        str(p.relative_to(setup.root))
        for p in setup.root.rglob("*")
        if not allowed.fullmatch(str(p.relative_to(setup.root)))
    ]
    assert unexpected == []


def hostile_names(alice: str, bob: str) -> list[str]:
    """Repository names as they appear on the wire (percent-encoded where noted)."""
    return [
        f"{alice}/../{bob}/private",
        f"{alice}/%2e%2e/{bob}/private",
        f"{alice}/%2E%2E/{bob}/private",
        f"{alice}%2F..%2F{bob}%2Fprivate",
        f"{alice}%2fx",
        f"{alice}%2Fx",
        f"{bob}%2Fprivate",
        f"{alice}/./x",
        f"./{alice}/x",
        f"{alice}/x/.",
        f"../{alice}/x",
        "..",
        f"%2e%2e/{alice}/x",
        f"{alice}/X",
        f"{alice.upper()}/x",
        f"{alice}/" + "a" * 250,
        f"{alice}/" + "a" * 5000,
        f"{alice}/x%00y",
        f"{alice}/x%00",
        f"{alice}/%C3%A9t%C3%A9",
        f"{alice}/x%E2%80%AEy",
        f"{alice}//x",
        f"{alice}/x/",
        f"/{alice}/x",
        f"{alice}/x%20y",
        f"{alice}/x%0Ay",
        f"{alice}/x%0D%0AX-Injected:%20yes",
        f"{alice}/x;y",
        f"{alice}/x%5C..%5C{bob}",
        f"{alice}/x..y",
        f"{alice}/-x",
        f"{alice}/x%3Fy",
        f"{alice}/x%23y",
        f"{alice}/~x",
    ]


def registry_targets(name: str, setup: Setup) -> list[tuple[str, str, bytes]]:
    image = setup.image
    return [
        ("GET", f"/v2/{name}/tags/list", b""),
        ("GET", f"/v2/{name}/manifests/v1", b""),
        ("HEAD", f"/v2/{name}/manifests/v1", b""),
        ("GET", f"/v2/{name}/manifests/{image.digest}", b""),
        ("PUT", f"/v2/{name}/manifests/v1", image.manifest),
        ("DELETE", f"/v2/{name}/manifests/v1", b""),
        ("GET", f"/v2/{name}/blobs/{image.layer_digest}", b""),
        ("HEAD", f"/v2/{name}/blobs/{image.layer_digest}", b""),
        ("DELETE", f"/v2/{name}/blobs/{image.layer_digest}", b""),
        ("POST", f"/v2/{name}/blobs/uploads/", b"planted"),
        ("POST", f"/v2/{name}/blobs/uploads/?mount={image.layer_digest}", b""),
        ("GET", f"/v2/{name}/referrers/{image.digest}", b""),
    ]


REFUSED_CODES = {"NAME_INVALID", "UNSUPPORTED", "NOT_FOUND"}


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_hostile_repository_names_on_the_registry(setup, who):
    """The admin may read and write everything: any name resolved into a real repository
    would show as a success here."""
    for name in hostile_names(setup.alice.name, setup.bob.name):
        for method, target, body in registry_targets(name, setup):
            r = raw_request(setup.server, method, target, setup.headers(who), body)
            assert r.status in (400, 404, 405), (who, method, target, r.status, r.body[:300])
            if r.body.startswith(b"{"):
                assert r.code in REFUSED_CODES, (who, method, target, r.body[:300])
                if r.status == 400:
                    assert r.code == "NAME_INVALID", (who, method, target, r.body[:300])
            assert setup.image.layer not in r.body
            assert "location" not in r.headers, (method, target, r.headers)
    assert_tree_clean(setup)
    # Nothing was planted in bob's repository or anywhere else.
    admin = {"Authorization": basic(*setup.server.auth)}
    r = raw_request(setup.server, "GET", "/v2/_catalog", admin)
    known = {f"{setup.alice.name}/x", f"{setup.bob.name}/private"}
    assert known <= set(r.json()["repositories"]) <= known | {f"{setup.alice.name}/doomed"}
    r = raw_request(setup.server, "GET", f"/v2/{setup.bob.name}/private/tags/list", admin)
    assert r.json()["tags"] == ["v1"]


def test_raw_non_ascii_and_control_bytes(setup):
    for target in (
        f"/v2/{setup.alice.name}/\xe9t\xe9/tags/list".encode(),
        f"/v2/{setup.alice.name}/x".encode() + b"\x00" + b"/tags/list",
        f"/v2/{setup.alice.name}/x".encode() + b"\x7f" + b"/tags/list",
    ):
        r = raw_request(setup.server, "GET", target, setup.headers("admin"))
        assert r.status in (400, 404), (target, r.status, r.body)
    assert_tree_clean(setup)


@pytest.mark.parametrize(
    "method, suffix",
    [
        ("GET", "manifests/.."),
        ("GET", "manifests/%2e%2e"),
        ("GET", "manifests/..%2F..%2Fwharf.db"),
        ("PUT", "manifests/.."),
        ("PUT", "manifests/v1%00"),
        ("DELETE", "manifests/.."),
        ("GET", "manifests/sha256:..%2F..%2F..%2Fwharf.db"),
        ("GET", "blobs/sha256:.."),
        ("GET", "blobs/sha256:%2e%2e%2f%2e%2e%2fwharf.db"),
        ("GET", "blobs/..%2F..%2F..%2Fwharf.db"),
        ("GET", "blobs/uploads/.."),
        ("PATCH", "blobs/uploads/.."),
        ("PATCH", "blobs/uploads/%2e%2e"),
        ("PUT", "blobs/uploads/..?digest=sha256:" + "0" * 64),
        ("DELETE", "blobs/uploads/.."),
        ("PATCH", "blobs/uploads/..%2F..%2Fplanted"),
        ("DELETE", "blobs/uploads/..%2F..%2Fblobs"),
        ("GET", "referrers/sha256:..%2F.."),
    ],
)
def test_hostile_references_digests_and_upload_ids(setup, method, suffix):
    target = f"/v2/{setup.alice.name}/x/{suffix}"
    body = b"planted" if method in ("PUT", "PATCH") else b""
    r = raw_request(setup.server, method, target, setup.headers("admin"), body)
    assert 400 <= r.status < 500, (target, r.status, r.body)
    assert r.status not in (401, 403), (target, r.body)
    assert_tree_clean(setup)
    # The blobs a DELETE of "../blobs" might have reached are all still there.
    r = raw_request(
        setup.server,
        "GET",
        f"/v2/{setup.bob.name}/private/blobs/{setup.image.layer_digest}",
        setup.headers("admin"),
    )
    assert r.status == 200
    assert r.body == setup.image.layer


@pytest.mark.parametrize(
    "query", ["last=%00&n=1", "last=..%2F..&n=1", "n=-1", "n=99999999999999999999999", "n=1e3"]
)
def test_hostile_pagination(setup, query):
    for target in (f"/v2/{setup.alice.name}/x/tags/list?{query}", f"/v2/_catalog?{query}"):
        r = raw_request(setup.server, "GET", target, setup.headers("alice"))
        assert r.status in (200, 400), (target, r.status, r.body)
        assert setup.bob.name.encode() not in r.body


def test_hostile_paths_on_the_management_api(setup):
    alice, bob = setup.alice.name, setup.bob.name
    private = f"{bob}/private"
    targets = [
        ("GET", f"/api/v0/repositories/{alice}/..%2F{bob}%2Fprivate"),
        ("GET", f"/api/v0/repositories/{alice}/../{bob}/private"),
        ("GET", f"/api/v0/repositories/{alice}/%2e%2e/{bob}/private"),
        ("GET", f"/api/v0/repositories/{bob}%2Fprivate"),
        ("GET", f"/api/v0/repositories/{bob}%2fprivate/tags"),
        ("GET", f"/api/v0/repositories/{alice}/../meta/settings"),
        ("GET", "/api/v0/repositories/..%2F..%2Fmeta%2Fsettings"),
        ("GET", "/api/v0/accounts/%2e%2e"),
        ("GET", "/api/v0/accounts/..%2Fadmin"),
        ("GET", "/api/v0/accounts/admin%00"),
        ("GET", f"/api/v0/repositories/{alice}/x%00"),
        ("GET", f"/api/v0/repositories/{alice}/x%0D%0AInjected:%20yes"),
        ("GET", f"/api/v0/repositories/{alice.upper()}/X"),
        ("GET", f"/api/v0/repositories/{alice}/" + "a" * 5000),
        ("DELETE", f"/api/v0/repositories/{alice}/..%2F{bob}%2Fprivate"),
        ("DELETE", f"/api/v0/repositories/{bob}%2Fprivate"),
        ("DELETE", f"/api/v0/repositories/{alice}/../{bob}/private/tags/v1"),
        ("PATCH", f"/api/v0/repositories/{bob}%2Fprivate"),
        ("PUT", f"/api/v0/repositories/{bob}%2Fprivate/teamAccess/readers"),
        ("GET", f"/api/v0/accounts/{alice}/repositoryAccess/{alice}/..%2F{bob}%2Fprivate"),
    ]
    for method, target in targets:
        body = b"{}" if method in ("PATCH", "PUT") else b""
        headers = {**setup.headers("alice"), "Content-Type": "application/json"}
        r = raw_request(setup.server, method, target, headers, body)
        assert r.status in (400, 403, 404, 405), (method, target, r.status, r.body[:300])
        assert b"fullName" not in r.body, (method, target)
        assert b'"visibility"' not in r.body, (method, target)
        if method == "GET":
            # And as the admin (who may read everything): never a 500.
            r = raw_request(setup.server, method, target, setup.headers("admin"))
            assert r.status < 500, (method, target, r.status, r.body[:300])
    # bob's repository is intact.
    admin = {"Authorization": basic(*setup.server.auth)}
    r = raw_request(setup.server, "GET", f"/api/v0/repositories/{private}", admin)
    assert r.status == 200
    assert r.json()["visibility"] == "private"
    r = raw_request(setup.server, "GET", f"/v2/{private}/tags/list", admin)
    assert r.json()["tags"] == ["v1"]
    assert_tree_clean(setup)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v0/repositories/{alice}", {"name": "../x"}),
        ("/api/v0/repositories/{alice}", {"name": "x/../../{bob}/y"}),
        ("/api/v0/repositories/{alice}", {"name": "X"}),
        ("/api/v0/repositories/{alice}", {"name": "a" * 300}),
        ("/api/v0/repositories/{alice}", {"name": "x\u0000"}),
        ("/api/v0/repositories/{alice}", {"name": "x\u202ey"}),
        ("/api/v0/repositories/{alice}", {"name": ".."}),
        ("/api/v0/accounts", {"name": "../evil", "password": "evil-password-1"}),
        ("/api/v0/accounts", {"name": "Evil", "password": "evil-password-1"}),
        ("/api/v0/accounts", {"name": "a/b", "password": "evil-password-1"}),
        ("/api/v0/accounts", {"name": "..", "isOrg": True}),
        ("/api/v0/accounts", {"name": "me", "password": "evil-password-1"}),
        ("/api/v0/accounts", {"name": "x\u0000", "password": "evil-password-1"}),
        ("/api/v0/accounts", {"name": "\u0430dmin", "password": "evil-password-1"}),
    ],
)
def test_hostile_names_in_bodies(setup, path, body):
    names = {"alice": setup.alice.name, "bob": setup.bob.name}
    path = path.format(**names)
    body = {k: v.format(**names) if isinstance(v, str) else v for k, v in body.items()}
    r = httpx.post(f"{setup.server.url}{path}", json=body, auth=setup.server.auth)
    assert r.status_code == 400, (path, body, r.text)
    assert r.json()["errors"][0]["code"].startswith(("INVALID", "NAME")), r.text
    assert_tree_clean(setup)


def test_hostile_team_names(setup):
    admin = Admin(setup.server)
    org = admin.org("hostile")
    for name in ("..", "../x", "a/b", "x\u0000", "", " x"):
        r = admin.http.post(f"/api/v0/accounts/{org}/teams", json={"name": name})
        assert r.status_code == 400, (name, r.text)
    admin.close()


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_hostile_scopes_grant_nothing(setup, who):
    alice, bob = setup.alice.name, setup.bob.name
    scopes = [
        "repository:../x:pull",
        f"repository:{alice}/../{bob}/private:pull,push",
        f"repository:{bob}%2Fprivate:pull",
        f"repository:{bob.upper()}/private:pull",
        f"repository:{bob}/private/..:pull",
        f"repository:{bob}//private:pull",
        f"repository:/{bob}/private:pull",
        f"repository:{bob}/./private:pull",
        f"repository:{bob}/" + "a" * 300 + ":pull",
        f"repository:{bob}/private:pull:extra",
        f"repository:{bob}/private",
        "registry:../catalog:*",
    ]
    auth = setup.server.auth if who == "admin" else setup.alice.auth
    r = get_token(setup.server, scopes, auth)
    assert r.status_code == 200, r.text
    assert jwt_parts(r.json()["token"])[1]["access"] == []
    assert r.json()["scope"] == ""
    # A NUL byte is refused at the edge (no store could hold it), with a clear error.
    r = get_token(setup.server, [f"repository:{bob}/private\u0000:pull"], auth)
    assert r.status_code == 400, r.text
    assert "NUL" in r.json()["errors"][0]["message"]
    # Control: the plain scope is granted to the admin (and not to alice).
    r = get_token(setup.server, [f"repository:{bob}/private:pull"], auth)
    actions = jwt_parts(r.json()["token"])[1]["access"][0]["actions"]
    assert actions == (["pull"] if who == "admin" else [])
    # A form POST with the same scopes.
    r = httpx.post(
        f"{setup.server.url}/auth/token",
        data={
            "grant_type": "password",
            "username": auth[0],
            "password": auth[1],
            "service": "wharf",
            "scope": " ".join(s for s in scopes if "\u0000" not in s),
        },
    )
    assert r.status_code == 200, r.text
    assert jwt_parts(r.json()["access_token"])[1]["access"] == []
    assert json.dumps(r.json()).count("private") == 0


def test_management_api_refuses_encoded_slashes(setup):
    with setup.alice.client() as c:
        push_image(c, f"{setup.alice.name}/doomed")
    target = f"/api/v0/repositories/{setup.alice.name}%2Fdoomed"
    r = raw_request(setup.server, "DELETE", target, setup.headers("alice"))
    still_there = httpx.get(
        f"{setup.server.url}/api/v0/repositories/{setup.alice.name}/doomed",
        auth=setup.alice.auth,
    )
    assert (r.status, still_there.status_code) in ((400, 200), (404, 200)), r.body
