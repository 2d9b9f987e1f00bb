"""A token never outlives its account into a new account of the same name."""

from __future__ import annotations

import secrets

import httpx


def test_tokens_of_a_deleted_account_do_not_work_for_its_namesake(wharf_server, client):
    name = f"reuse{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)

    def create() -> None:
        r = client.post("/api/v0/accounts", json={"name": name, "password": password})
        assert r.status_code == 201, r.text

    create()
    with httpx.Client(base_url=wharf_server.url, timeout=30) as c:
        r = c.post(
            "/auth/token",
            data={
                "grant_type": "password",
                "username": name,
                "password": password,
                "service": "wharf",
                "access_type": "offline",
                "scope": f"repository:{name}/app:pull,push",
            },
        )
        assert r.status_code == 200, r.text
        access, refresh = r.json()["access_token"], r.json()["refresh_token"]
        bearer = {"Authorization": f"Bearer {access}"}
        assert c.post(f"/v2/{name}/app/blobs/uploads/", headers=bearer).status_code == 202

        assert client.delete(f"/api/v0/accounts/{name}").status_code == 204
        create()  # same name, same password: a different account

        assert c.post(f"/v2/{name}/app/blobs/uploads/", headers=bearer).status_code == 401
        r = c.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh, "service": "wharf"},
        )
        assert r.status_code == 401, r.text
        assert r.json()["error"] == "invalid_grant"
