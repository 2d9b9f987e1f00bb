"""Building a registry worth backing up, and checking a restored one against it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from click.testing import CliRunner

from tests.api.helpers import (
    OCI_INDEX,
    canonical,
    index_manifest,
    push_artifact,
    push_image,
    put_manifest,
    sha256,
)
from wharf.cli.main import main as wharf_main

PASSPHRASE = "correct horse battery staple"
SBOM = "application/vnd.example.sbom.v1"


def wharf(*args, stdin=None, stdout=None, env=None, input=None, timeout=180):
    """Run `python -m wharf ARGS` with files (or bytes) as standard input and output."""
    return subprocess.run(
        [sys.executable, "-m", "wharf", *map(str, args)],
        stdin=stdin if input is None else None,
        input=input,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def backup_to(path: Path, *where, encrypt: bool = False, env=None):
    with path.open("wb") as out:
        args = ["backup", *where] + (["--encrypt"] if encrypt else [])
        extra = {"WHARF_BACKUP_PASSPHRASE": PASSPHRASE} if encrypt else {}
        r = wharf(*args, stdout=out, stdin=subprocess.DEVNULL, env={**extra, **(env or {})})
    assert r.returncode == 0, r.stderr.decode()
    return r


def restore_from(path: Path, *args, passphrase: str | None = PASSPHRASE, env=None):
    extra = {"WHARF_BACKUP_PASSPHRASE": passphrase} if passphrase else {}
    with path.open("rb") as f:
        return wharf("restore", *args, stdin=f, env={**extra, **(env or {})})


def admin_cli(where: list[str], *args: str, password: str | None = None) -> str:
    env = {"WHARF_USER_PASSWORD": password} if password else {}
    r = CliRunner().invoke(wharf_main, [*args, *where], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.stdout


@dataclass
class Pushed:
    repo: str
    ref: str  # tag
    manifest: bytes
    blobs: list[bytes]
    children: list[tuple[bytes, list[bytes]]] = field(default_factory=list)  # of an index


@dataclass
class Facts:
    users: dict[str, str]  # name -> password
    tokens: dict[str, str]  # name -> token secret
    images: list[Pushed]
    referrer: tuple[str, str, bytes]  # repo, subject digest, artifact manifest
    # (user, repository, whether the user may pull it)
    access: list[tuple[str, str, bool]]


def populate(server, where: list[str], *, small: bool = False) -> Facts:
    """Users, an organisation, a team, grants, tokens; images in several repositories, a
    multi-arch index and an artifact referring to an image."""
    users = {"alice": secrets.token_urlsafe(12), "bob": secrets.token_urlsafe(12)}
    for name, password in users.items():
        admin_cli(where, "user", "create", name, password=password)
    tokens = {"alice": admin_cli(where, "token", "create", "alice", "--label", "ci").strip()}
    images: list[Pushed] = []
    with server.client() as c:
        app = push_image(c, "admin/app", "v1")
        images.append(Pushed("admin/app", "v1", app.body, [app.config, *app.layers]))
        if small:
            return Facts(users, tokens, images, ("admin/app", app.digest, b""), [])
        admin_cli(where, "org", "create", "acme", "--owner", "alice")
        admin_cli(where, "team", "create", "acme", "devs")
        admin_cli(where, "team", "add-member", "acme", "devs", "alice")
        admin_cli(where, "repo", "create", "acme/web")
        admin_cli(where, "grant", "acme/devs", "acme/web", "read-write")
        web = push_image(c, "acme/web", "1.0", docker=True)
        images.append(Pushed("acme/web", "1.0", web.body, [web.config, *web.layers]))
        art, _ = push_artifact(c, "acme/web", web.descriptor(), SBOM)
        children = []
        for platform in (("linux", "amd64"), ("linux", "arm64")):
            child = push_image(c, "acme/multi", None, platform=platform)
            children.append((child, platform))
        index = canonical(
            index_manifest(
                [
                    child.descriptor(platform={"os": p[0], "architecture": p[1]})
                    for child, p in children
                ]
            )
        )
        assert put_manifest(c, "acme/multi", "latest", index, OCI_INDEX).status_code == 201
        images.append(
            Pushed(
                "acme/multi",
                "latest",
                index,
                [],
                [(child.body, [child.config, *child.layers]) for child, _ in children],
            )
        )
        app2 = push_image(c, "admin/app", "v2", layer_count=1)
        images.append(Pushed("admin/app", "v2", app2.body, [app2.config, *app2.layers]))
    access = [
        ("alice", "acme/web", True),
        ("bob", "acme/web", False),
        ("bob", "admin/app", False),
    ]
    return Facts(users, tokens, images, ("acme/web", web.digest, art), access)


class Pusher:
    """Pushes images to admin/during (tags d0, d1, ...) until stopped."""

    def __init__(self, server) -> None:
        self.server, self.pushed, self.errors = server, 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as c:
            while not self.stop.is_set():
                try:
                    push_image(c, "admin/during", f"d{self.pushed}", layer_count=1)
                    self.pushed += 1
                except Exception as e:  # the server stopping under it
                    self.errors.append(e)
                    return

    def __enter__(self) -> Pusher:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)


def skopeo_copy(host: str, ref: str, dest: Path, creds: str) -> None:
    r = subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--src-creds",
            creds,
            f"docker://{host}/{ref}",
            f"dir:{dest}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_restored(url: str, facts: Facts, tmp: Path, admin_password: str) -> None:
    """Every image pulls back byte-identical (skopeo), every user logs in with the same
    password and token and has the same access."""
    host = url.removeprefix("http://")
    tmp.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(facts.images):
        dest = tmp / f"pulled-{n}"
        skopeo_copy(host, f"{image.repo}:{image.ref}", dest, f"admin:{admin_password}")
        assert (dest / "manifest.json").read_bytes() == image.manifest
        for blob in image.blobs:
            assert (dest / _hex(blob)).read_bytes() == blob
        for body, blobs in image.children:
            assert (dest / f"{_hex(body)}.manifest.json").read_bytes() == body
            for blob in blobs:
                assert (dest / _hex(blob)).read_bytes() == blob
    with httpx.Client(base_url=url, timeout=30) as c:
        for name, password in facts.users.items():
            assert c.get("/v2/", auth=(name, password)).status_code == 200, name
            assert c.get("/v2/", auth=(name, password + "x")).status_code == 401
        for name, secret in facts.tokens.items():
            assert c.get("/v2/", auth=(name, secret)).status_code == 200, name
        for name, repo, allowed in facts.access:
            image = next(i for i in facts.images if i.repo == repo)
            r = c.get(f"/v2/{repo}/manifests/{image.ref}", auth=(name, facts.users[name]))
            assert (r.status_code == 200) == allowed, (name, repo, r.status_code)
            if name in facts.tokens:
                r = c.get(f"/v2/{repo}/manifests/{image.ref}", auth=(name, facts.tokens[name]))
                assert (r.status_code == 200) == allowed
        repo, subject, artifact = facts.referrer
        if artifact:
            admin = ("admin", admin_password)
            index = c.get(f"/v2/{repo}/referrers/{subject}", auth=admin).json()
            assert [m["digest"] for m in index["manifests"]] == [sha256(artifact)]
            assert index["manifests"][0]["artifactType"] == SBOM
            r = c.get(f"/v2/{repo}/manifests/{sha256(artifact)}", auth=admin)
            assert r.content == artifact


def during_tags_consistent(url: str, admin_password: str, pushed: int) -> int:
    """Every tag of admin/during that the backup caught resolves, with its blobs."""
    with httpx.Client(base_url=url, timeout=30, auth=("admin", admin_password)) as c:
        r = c.get("/v2/admin/during/tags/list")
        tags = r.json().get("tags") or [] if r.status_code == 200 else []
        assert len(tags) <= pushed
        for tag in tags:
            m = c.get(f"/v2/admin/during/manifests/{tag}")
            assert m.status_code == 200, tag
            doc = json.loads(m.content)
            for d in [doc["config"], *doc["layers"]]:
                assert c.head(f"/v2/admin/during/blobs/{d['digest']}").status_code == 200
        return len(tags)
