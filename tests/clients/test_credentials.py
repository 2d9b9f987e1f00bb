"""Real clients logging in with a user's password or personal access token (PAT): skopeo,
podman, oras (Python) and the docker CLI. Each works in the user's own namespace, byte for
byte, and is refused where the user may not write; revoking a PAT stops the client.

The server is plain HTTP on 127.0.0.1, so every client runs with TLS verification off (docker
treats 127.0.0.0/8 as an insecure registry by itself)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import secrets
import shlex
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import oras.client
import pytest

from tests.api.helpers import OCI_CONFIG, OCI_MANIFEST, sha256
from tests.api.helpers import OCI_LAYER as OCI_LAYER_GZIP

REF_NAME = "org.opencontainers.image.ref.name"


# -- accounts -------------------------------------------------------------------------------


@dataclass
class User:
    name: str
    password: str

    def pat(self, server, label: str = "client") -> dict:
        r = httpx.post(
            f"{server.url}/api/v0/api_tokens", json={"tokenLabel": label}, auth=self.auth
        )
        assert r.status_code == 201, r.text
        return r.json()

    @property
    def auth(self) -> tuple[str, str]:
        return (self.name, self.password)


def new_user(server, prefix: str = "client") -> User:
    user = User(f"{prefix}{secrets.token_hex(4)}", "pw-" + secrets.token_urlsafe(12))
    r = httpx.post(
        f"{server.url}/api/v0/accounts",
        json={"name": user.name, "password": user.password},
        auth=server.auth,
    )
    assert r.status_code == 201, r.text
    return user


def deactivate_token(server, hashed: str) -> None:
    r = httpx.patch(
        f"{server.url}/api/v0/api_tokens/{hashed}", json={"isActive": False}, auth=server.auth
    )
    assert r.status_code == 200, r.text


def stored_manifest(server, repository: str, reference: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v2/{repository}/manifests/{reference}",
        headers={"Accept": OCI_MANIFEST},
        auth=server.auth,
    )


@pytest.fixture
def user(wharf_server) -> User:
    return new_user(wharf_server)


@pytest.fixture
def other(wharf_server) -> User:
    return new_user(wharf_server, "other")


@pytest.fixture(params=["password", "pat"])
def secret(request, wharf_server, user: User) -> str:
    """What the client logs in with: the password, or a PAT in its place."""
    if request.param == "password":
        return user.password
    return user.pat(wharf_server)["token"]


# -- processes ------------------------------------------------------------------------------


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/install-test-deps")
    return path


def run(
    cmd: list[str], env: dict[str, str], *, stdin: str = "", check: bool = True
) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, input=stdin, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(
            f"`{shlex.join(cmd)}` exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def auths(path: Path) -> dict:
    return json.loads(path.read_text()).get("auths", {}) if path.exists() else {}


# -- an image as an OCI layout --------------------------------------------------------------


@dataclass
class Layout:
    path: Path
    manifest: bytes
    config: bytes
    layer: bytes

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:v1"


def make_image_blobs(size: int) -> tuple[bytes, bytes]:
    """(gzipped layer holding one random file, image config) of a runnable-format image."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        payload = os.urandom(size)
        info = tarfile.TarInfo("payload.bin")
        info.size, info.mode = len(payload), 0o644
        tar.addfile(info, io.BytesIO(payload))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.example.nonce": os.urandom(6).hex()}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(raw.getvalue())]},
        }
    ).encode()
    return layer, config


def build_layout(path: Path) -> Layout:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        (blobs / sha256(data).removeprefix("sha256:")).write_bytes(data)
        return sha256(data)

    layer, config = make_image_blobs(200_000)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": put(layer), "size": len(layer)}],
        },
        indent=1,  # not canonical: the exact bytes must survive
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {REF_NAME: "v1"},
            }
        ],
    }
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps(index))
    return Layout(path, manifest, config, layer)


def read_layout(path: Path) -> tuple[bytes, dict[str, bytes]]:
    index = json.loads((path / "index.json").read_text())
    [desc] = index["manifests"]
    blobs = {"sha256:" + p.name: p.read_bytes() for p in (path / "blobs" / "sha256").iterdir()}
    return blobs[desc["digest"]], blobs


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return build_layout(tmp_path / "src")


# -- skopeo ---------------------------------------------------------------------------------


@pytest.fixture
def skopeo_login(client_env, auth_file, wharf_server):
    exe = tool("skopeo")

    def login(username: str, secret: str, *, check: bool = True):
        return run(
            [
                exe,
                "login",
                "--tls-verify=false",
                "--authfile",
                str(auth_file),
                "--username",
                username,
                "--password-stdin",
                wharf_server.host,
            ],
            client_env,
            stdin=secret + "\n",
            check=check,
        )

    return login


def test_skopeo_login_then_copy_round_trip(
    skopeo, skopeo_login, auth_file, wharf_server, user, secret, layout, tmp_path
):
    out = skopeo_login(user.name, secret)
    assert "Login Succeeded" in out.stdout
    assert wharf_server.host in auths(auth_file)

    repository = f"{user.name}/app"
    remote = f"docker://{wharf_server.host}/{repository}:v1"
    # No --creds: the credentials come from the login.
    skopeo("copy", "--dest-tls-verify=false", layout.ref, remote)
    r = stored_manifest(wharf_server, repository, "v1")
    assert r.status_code == 200, r.text
    assert r.content == layout.manifest

    pulled = tmp_path / "pulled"
    skopeo("copy", "--src-tls-verify=false", remote, f"oci:{pulled}:v1")
    manifest, blobs = read_layout(pulled)
    assert manifest == layout.manifest
    assert blobs[sha256(layout.config)] == layout.config
    assert blobs[sha256(layout.layer)] == layout.layer

    # After logout the private repository is out of reach.
    skopeo("logout", "--authfile", str(auth_file), wharf_server.host)
    assert wharf_server.host not in auths(auth_file)
    refused = skopeo("inspect", "--raw", "--tls-verify=false", remote, check=False)
    assert refused.returncode != 0
    assert layout.manifest.decode() not in refused.stdout


def test_skopeo_login_with_a_wrong_secret_fails(skopeo_login, auth_file, wharf_server, user):
    for wrong in ("not-the-password", "wharf_pat_" + secrets.token_urlsafe(32)):
        out = skopeo_login(user.name, wrong, check=False)
        assert out.returncode != 0, out.stdout
        assert "unauthorized" in out.stderr.lower() or "invalid" in out.stderr.lower(), out.stderr
        assert wharf_server.host not in auths(auth_file)


def test_skopeo_cannot_copy_into_a_foreign_namespace(
    skopeo, skopeo_login, wharf_server, user, other, layout
):
    skopeo_login(user.name, user.password)
    for repository in (f"{other.name}/planted", f"{other.name}/app"):
        result = skopeo(
            "copy",
            "--dest-tls-verify=false",
            layout.ref,
            f"docker://{wharf_server.host}/{repository}:v1",
            check=False,
        )
        assert result.returncode != 0, result.stdout
        err = result.stderr.lower()
        assert any(w in err for w in ("denied", "unauthorized", "insufficient_scope")), err
        assert stored_manifest(wharf_server, repository, "v1").status_code == 404


def test_skopeo_stops_when_its_pat_is_revoked(
    skopeo, skopeo_login, wharf_server, user, layout, tmp_path
):
    token = user.pat(wharf_server)
    skopeo_login(user.name, token["token"])
    remote = f"docker://{wharf_server.host}/{user.name}/revoked:v1"
    skopeo("copy", "--dest-tls-verify=false", layout.ref, remote)
    skopeo("inspect", "--raw", "--tls-verify=false", remote)

    deactivate_token(wharf_server, token["hashedToken"])
    result = skopeo(
        "copy", "--src-tls-verify=false", remote, f"oci:{tmp_path / 'x'}:v1", check=False
    )
    assert result.returncode != 0, result.stdout
    assert "unauthorized" in result.stderr.lower() or "invalid" in result.stderr.lower()


# -- podman ---------------------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello.txt").write_text(f"hello {os.urandom(8).hex()}\n")
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY hello.txt /hello.txt\n")
    return ctx


def test_podman_login_with_a_pat_then_push_and_pull(
    podman, store_args, client_env, auth_file, wharf_server, user, context, tmp_path
):
    token = user.pat(wharf_server)["token"]
    ref = f"{wharf_server.host}/{user.name}/podman:v1"
    podman("build", "--format", "oci", "-t", ref, str(context))
    [built] = json.loads(podman("image", "inspect", ref).stdout)

    login = [
        tool("podman"),
        *store_args,
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
        "login",
        "--tls-verify=false",
        "--authfile",
        str(auth_file),
        "--username",
        user.name,
        "--password-stdin",
        wharf_server.host,
    ]
    assert "Login Succeeded" in run(login, client_env, stdin=token + "\n").stdout

    digest_file = tmp_path / "digest"
    podman("push", "--tls-verify=false", "--digestfile", str(digest_file), ref)
    digest = digest_file.read_text().strip()
    r = stored_manifest(wharf_server, f"{user.name}/podman", "v1")
    assert r.status_code == 200
    assert sha256(r.content) == digest
    assert r.json()["config"]["digest"] == f"sha256:{built['Id']}"

    podman("rmi", ref)
    podman("pull", "--tls-verify=false", ref)
    [pulled] = json.loads(podman("image", "inspect", ref).stdout)
    assert pulled["Id"] == built["Id"]
    assert pulled["Digest"] == digest

    # Someone else's namespace stays closed, logged in or not.
    foreign = f"{wharf_server.host}/{new_user(wharf_server).name}/podman:v1"
    podman("tag", ref, foreign)
    refused = podman("push", "--tls-verify=false", foreign, check=False)
    assert refused.returncode != 0


# -- oras -----------------------------------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    work = tmp_path / "oras"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("DOCKER_CONFIG", "ORAS_USER", "ORAS_PASS"):
        monkeypatch.delenv(var, raising=False)
    return work


def oras_client(server, username: str, secret: str, backend: str, config: Path):
    client = oras.client.OrasClient(hostname=server.host, insecure=True, auth_backend=backend)
    answer = client.login(
        username=username, password=secret, hostname=server.host, config_path=str(config)
    )
    assert answer.get("Status") == "Login Succeeded", answer
    return client


def test_oras_push_and_pull(wharf_server, user, secret, workdir):
    files = {"artifact.txt": os.urandom(16).hex().encode(), "data.bin": os.urandom(150_000)}
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    target = f"{wharf_server.host}/{user.name}/oras:v1"
    config = workdir.parent / "oras-auth.json"
    # oras-py's token backend keeps its first (pull) token after a 401 insufficient_scope, so
    # it cannot push to any Docker-token registry: push with Basic, pull both ways.
    pusher = oras_client(wharf_server, user.name, secret, "basic", config)
    r = pusher.push(files=list(files), target=target, config_path=str(config), quiet=True)
    assert r.status_code == 201, r.text

    for backend in ("basic", "token"):
        puller = oras_client(wharf_server, user.name, secret, backend, workdir.parent / backend)
        out = workdir / f"pulled-{backend}"
        pulled = puller.pull(target=target, outdir=str(out))
        assert sorted(Path(p).name for p in pulled) == sorted(files)
        for name, data in files.items():
            assert (out / name).read_bytes() == data


def test_oras_is_refused_with_a_revoked_pat_or_in_a_foreign_namespace(
    wharf_server, user, other, workdir
):
    (workdir / "a.txt").write_bytes(b"planted")
    token = user.pat(wharf_server)
    config = workdir.parent / "oras-auth.json"
    client = oras_client(wharf_server, user.name, token["token"], "basic", config)
    with pytest.raises(ValueError, match=r"(?i)denied|unauthori[sz]ed"):
        client.push(files=["a.txt"], target=f"{wharf_server.host}/{other.name}/x:v1", quiet=True)
    assert stored_manifest(wharf_server, f"{other.name}/x", "v1").status_code == 404

    target = f"{wharf_server.host}/{user.name}/mine:v1"
    assert client.push(files=["a.txt"], target=target, quiet=True).status_code == 201
    deactivate_token(wharf_server, token["hashedToken"])
    with pytest.raises(ValueError, match=r"(?i)unauthori[sz]ed|authentication"):
        client.push(files=["a.txt"], target=f"{wharf_server.host}/{user.name}/y:v1", quiet=True)


# -- docker ---------------------------------------------------------------------------------

NO_DAEMON = "Cannot connect to the Docker daemon"


@pytest.fixture
def docker(tmp_path: Path):
    """The docker CLI with a private config directory. `docker login` works without a daemon
    (the CLI talks to the registry itself); pulls and pushes need one."""
    exe = shutil.which("docker")
    if exe is None:
        pytest.skip("the docker CLI is not installed (it is not among the test dependencies)")
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
    env.update(HOME=str(tmp_path / "home"), DOCKER_CONFIG=str(config))

    def _docker(*args: str, stdin: str = "", check: bool = True):
        return run([exe, *args], env, stdin=stdin, check=check)

    _docker.config = config / "config.json"  # type: ignore[attr-defined]
    return _docker


def refresh_grant(server, refresh: str, scope: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "service": "wharf",
            "refresh_token": refresh,
            "scope": scope,
        },
    )


def test_docker_login(docker, wharf_server, user, secret):
    host = wharf_server.host
    out = docker("login", "--username", user.name, "--password-stdin", host, stdin=secret)
    assert "Login Succeeded" in out.stdout
    entry = auths(docker.config)[host]
    # docker keeps the OAuth2 refresh token it got from /auth/token, not the secret.
    assert base64.b64decode(entry["auth"]).decode() == f"{user.name}:"
    assert secret not in docker.config.read_text()
    identity = entry["identitytoken"]

    # What the daemon would do with it: trade it for an access token, then pull.
    with httpx.Client(base_url=wharf_server.url, auth=user.auth) as c:
        r = c.post(
            f"/v2/{user.name}/docker/blobs/uploads/",
            params={"digest": sha256(b"hi")},
            content=b"hi",
        )
        assert r.status_code == 201, r.text
    r = refresh_grant(wharf_server, identity, f"repository:{user.name}/docker:pull")
    assert r.status_code == 200, r.text
    blob = httpx.get(
        f"{wharf_server.url}/v2/{user.name}/docker/blobs/{sha256(b'hi')}",
        headers={"Authorization": f"Bearer {r.json()['access_token']}"},
    )
    assert blob.status_code == 200
    assert blob.content == b"hi"

    docker("logout", host)
    assert host not in auths(docker.config)


def test_docker_login_with_a_wrong_secret_fails(docker, wharf_server, user):
    out = docker(
        "login",
        "--username",
        user.name,
        "--password-stdin",
        wharf_server.host,
        stdin="not-the-password",
        check=False,
    )
    assert out.returncode != 0
    assert "unauthorized" in out.stderr.lower(), out.stderr
    assert wharf_server.host not in auths(docker.config)


def test_docker_login_token_dies_with_its_pat(docker, wharf_server, user):
    token = user.pat(wharf_server)
    docker(
        "login",
        "--username",
        user.name,
        "--password-stdin",
        wharf_server.host,
        stdin=token["token"],
    )
    identity = auths(docker.config)[wharf_server.host]["identitytoken"]
    scope = f"repository:{user.name}/x:pull"
    assert refresh_grant(wharf_server, identity, scope).status_code == 200
    deactivate_token(wharf_server, token["hashedToken"])
    r = refresh_grant(wharf_server, identity, scope)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_grant"


def test_docker_pull_after_login(docker, wharf_server, user):
    """Needs a Docker daemon; skipped only when the CLI says there is none."""
    repository = f"{user.name}/pulled"
    layer, config = make_image_blobs(1000)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    with httpx.Client(base_url=wharf_server.url, auth=user.auth, timeout=60) as c:
        for data in (config, layer):
            r = c.post(
                f"/v2/{repository}/blobs/uploads/", params={"digest": sha256(data)}, content=data
            )
            assert r.status_code == 201, r.text
        r = c.put(
            f"/v2/{repository}/manifests/v1",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201, r.text
    host = wharf_server.host
    docker("login", "--username", user.name, "--password-stdin", host, stdin=user.password)
    result = docker("pull", f"{host}/{repository}:v1", check=False)
    if result.returncode != 0 and NO_DAEMON in result.stderr:
        pytest.skip(f"no Docker daemon: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert sha256(manifest) in result.stdout
    docker("rmi", f"{host}/{repository}:v1", check=False)
