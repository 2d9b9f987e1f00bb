"""Forged, altered, expired and misdirected bearer tokens are refused by /v2/.

Tokens whose only fault is a claim are signed with the server's real key (read from its
metadata store), and each case has a control that differs only in that claim and is accepted:
so every refusal is shown to come from the check under test, not from a bad signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .helpers import (
    access_token,
    b64url_encode,
    bearer,
    challenge_params,
    get_token,
    jwt_parts,
    push_image,
    raw_request,
    signing_key_pem,
)


@pytest.fixture(scope="module")
def target(world):
    """alice's own repository (where a correct token works) and bob's private one."""
    own = f"{world.alice.name}/forge"
    with world.alice.client() as c:
        push_image(c, own)
    return own


@pytest.fixture(scope="module")
def server_key(wharf_server, world):
    pem = signing_key_pem(wharf_server)
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


# Account ids by name (tokens carry `uid` besides `sub`), filled from the admin API.
UIDS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def _account_ids(wharf_server, world):
    with wharf_server.client() as admin:
        for name in (world.alice.name, world.bob.name, wharf_server.admin_user):
            UIDS[name] = admin.get(f"/api/v0/accounts/{name}").json()["id"]


def claims_for(sub: str, repository: str, **overrides) -> dict:
    now = int(time.time())
    claims = {
        "iss": "wharf",
        "sub": sub,
        "uid": UIDS.get(sub),
        "aud": "wharf",
        "exp": now + 300,
        "nbf": now - 5,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "use": "access",
        "access": [{"type": "repository", "name": repository, "actions": ["pull", "push"]}],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def use(server, token: str, repository: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/{repository}/tags/list", headers=bearer(token))


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert challenge_params(r.headers["www-authenticate"])["error"] == "invalid_token"
    assert "tags" not in r.text


def sign(key, claims: dict, **header) -> str:
    return jwt.encode(claims, key, algorithm="ES256", headers=header or None)


def test_genuine_token_is_accepted(wharf_server, world, target):
    token = access_token(wharf_server, [f"repository:{target}:pull"], world.alice.auth)
    r = use(wharf_server, token, target)
    assert r.status_code == 200, r.text
    assert r.json()["tags"] == ["v1"]


def test_self_signed_with_the_real_key_is_accepted(wharf_server, world, target, server_key):
    """The control of every case below: correct claims and the real key pass."""
    r = use(wharf_server, sign(server_key, claims_for(world.alice.name, target)), target)
    assert r.status_code == 200, r.text


def test_signed_by_another_key(wharf_server, world, target):
    other = ec.generate_private_key(ec.SECP256R1())
    genuine = access_token(wharf_server, [f"repository:{target}:pull"], world.alice.auth)
    header, _, _ = jwt_parts(genuine)
    for sub, repo in ((world.alice.name, target), (world.bob.name, world.private.repository)):
        # Same header (kid included) and claims as the server would issue.
        forged = sign(other, claims_for(sub, repo), kid=header["kid"])
        assert_refused(use(wharf_server, forged, repo))


def test_expired(wharf_server, world, target, server_key):
    now = int(time.time())
    stale = claims_for(world.alice.name, target, exp=now - 120, iat=now - 420, nbf=now - 420)
    assert_refused(use(wharf_server, sign(server_key, stale), target))
    # Within the 30 s leeway for clock skew it still counts.
    recent = claims_for(world.alice.name, target, exp=now - 5, iat=now - 305, nbf=now - 305)
    assert use(wharf_server, sign(server_key, recent), target).status_code == 200


def test_not_yet_valid(wharf_server, world, target, server_key):
    now = int(time.time())
    future = claims_for(world.alice.name, target, nbf=now + 600, iat=now, exp=now + 900)
    assert_refused(use(wharf_server, sign(server_key, future), target))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned(wharf_server, world, target, alg):
    for sub, repo in ((world.alice.name, target), (world.bob.name, world.private.repository)):
        header = b64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        payload = b64url_encode(json.dumps(claims_for(sub, repo)).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            assert_refused(use(wharf_server, token, repo))


def test_hmac_signed(wharf_server, world, target, server_key):
    claims = claims_for(world.bob.name, world.private.repository)
    # Any secret.
    token = jwt.encode(claims, "s" * 32, algorithm="HS256")
    assert_refused(use(wharf_server, token, world.private.repository))
    # The classic confusion: HMAC keyed with the server's public key (PEM and DER).
    public = server_key.public_key()
    for secret in (
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ):
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            header = b64url_encode(json.dumps({"alg": alg, "typ": "JWT"}).encode())
            payload = b64url_encode(json.dumps(claims).encode())
            mac = hmac.new(secret, f"{header}.{payload}".encode(), digest).digest()
            token = f"{header}.{payload}.{b64url_encode(mac)}"
            assert_refused(use(wharf_server, token, world.private.repository))


def test_tampered_claims_keep_no_signature(wharf_server, world, target):
    genuine = access_token(wharf_server, [f"repository:{target}:pull"], world.alice.auth)
    header_seg, _, signature = genuine.split(".")
    _, claims, _ = jwt_parts(genuine)
    variants = [
        # More actions on the same repository.
        {**claims, "access": [{"type": "repository", "name": target, "actions": ["pull", "push"]}]},
        # Another user's private repository.
        {
            **claims,
            "access": [
                {"type": "repository", "name": world.private.repository, "actions": ["pull"]}
            ],
        },
        # Another subject.
        {**claims, "sub": world.bob.name},
        {**claims, "sub": world.admin.server.admin_user},
        # A longer life.
        {**claims, "exp": claims["exp"] + 86400},
    ]
    for changed in variants:
        payload = b64url_encode(json.dumps(changed, separators=(",", ":")).encode())
        token = f"{header_seg}.{payload}.{signature}"
        repo = changed["access"][0]["name"]
        assert_refused(use(wharf_server, token, repo))
    # The genuine token is still fine: nothing above was refused for another reason.
    assert use(wharf_server, genuine, target).status_code == 200


@pytest.mark.parametrize(
    "claim, value",
    [
        ("aud", "registry.example.com"),
        ("aud", ["other"]),
        ("iss", "evil"),
        ("iss", None),
        ("exp", None),
        ("sub", None),
        ("use", "refresh"),
        ("use", None),
        ("access", None),
        ("access", {"type": "repository"}),
    ],
)
def test_wrong_or_missing_claims(wharf_server, world, target, server_key, claim, value):
    claims = claims_for(world.alice.name, target)
    if value is None:
        del claims[claim]
    else:
        claims[claim] = value
    assert_refused(use(wharf_server, sign(server_key, claims), target))


def test_unknown_subject(wharf_server, world, target, server_key):
    claims = claims_for("nosuchuser", target)
    assert_refused(use(wharf_server, sign(server_key, claims), target))


def test_refresh_token_is_not_an_access_token(wharf_server, world, target):
    r = get_token(
        wharf_server, [f"repository:{target}:pull"], world.alice.auth, offline_token="true"
    )
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    assert jwt_parts(refresh)[1]["use"] == "refresh"
    assert_refused(use(wharf_server, refresh, target))
    # And an access token is not a refresh token.
    r = httpx.post(
        f"{wharf_server.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "service": "wharf",
            "refresh_token": r.json()["token"],
            "scope": f"repository:{target}:pull",
        },
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_grant"
    assert "token" not in r.json()
    # The refresh token does work where it belongs.
    r = httpx.post(
        f"{wharf_server.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "service": "wharf",
            "refresh_token": refresh,
            "scope": f"repository:{target}:pull",
        },
    )
    assert r.status_code == 200, r.text
    assert use(wharf_server, r.json()["access_token"], target).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "...",
        "eyJhbGciOiJFUzI1NiJ9",
        "eyJhbGciOiJFUzI1NiJ9.e30.",
        "x" * 10_000,
        "\u00e9t\u00e9",  # sent as UTF-8 bytes
        "\u00e9t\u00e9.e30.x",
    ],
)
def test_garbage(wharf_server, target, token):
    r = raw_request(
        wharf_server, "GET", f"/v2/{target}/tags/list", {"Authorization": f"Bearer {token}"}
    )
    assert r.status == 401, r.body
    assert r.code == "UNAUTHORIZED"
    assert challenge_params(r.headers["www-authenticate"])["error"] == "invalid_token"


def test_empty_bearer(wharf_server, target):
    for header in ("Bearer", "Bearer x y", "bearer", "Bearer\t"):
        r = raw_request(wharf_server, "GET", f"/v2/{target}/tags/list", {"Authorization": header})
        assert r.status == 401, (header, r.body)
        assert r.code == "UNAUTHORIZED"
