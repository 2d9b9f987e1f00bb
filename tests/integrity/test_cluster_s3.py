"""The replicas acceptance test: three `wharf serve` replicas on loopback ports share one
PostgreSQL database and one S3 bucket (moto). skopeo pushes and pulls round-robin across them;
one replica is SIGKILLed in the middle of a chunked upload, which is then resumed through
another replica and finished through the third. Nothing is lost: every image pulls back
byte-identical, and the resumed blob is exactly what was sent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import secrets
import shlex
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import metadata_db
from tests.clients.conftest import isolated_client_env
from tests.conftest import WharfServer, free_port
from tests.integrity.integrity_util import kill_process_tree

pytestmark = pytest.mark.postgresql_cluster

MiB = 1 << 20
OCTET = {"Content-Type": "application/octet-stream"}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
S3_PART = 8 * MiB  # Wharf's S3 part size: a blob larger than this is a multipart upload


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the cluster -----------------------------------------------------------------------------


@dataclass
class Cluster:
    replicas: list[WharfServer]
    storage_url: str  # s3://BUCKET/PREFIX?...
    bucket: str
    prefix: str  # key prefix of every object Wharf stores, with a trailing slash

    @property
    def creds(self) -> str:
        user, password = self.replicas[0].auth
        return f"{user}:{password}"


def drop_database(db_url: str) -> None:
    name = make_url(db_url).database
    engine = create_engine(
        metadata_db.admin_url().replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        for _ in range(20):  # a replica that was just stopped may still be disconnecting
            try:
                with engine.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except Exception:
                time.sleep(0.25)
    finally:
        engine.dispose()


@pytest.fixture
def cluster(tmp_path: Path, s3_server) -> Iterator[Cluster]:
    db = metadata_db.new_database()
    storage_url = s3_server.url("registry")
    password = secrets.token_urlsafe(16)
    replicas: list[WharfServer] = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        replicas.append(
            WharfServer(
                data_dir=tmp_path / name / "data",
                port=free_port(),
                admin_password=password,
                db_url=db,
                extra_args=["--storage", storage_url],
                env=s3_server.env,
            )
        )
    try:
        # The first replica migrates the schema and creates the admin account; the other two
        # start together once it is up (start() returns when a replica answers).
        replicas[0].start()
        with ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(server.start) for server in replicas[1:]]:
                started.result()
        yield Cluster(replicas, storage_url, s3_server.bucket_of(storage_url), "registry/")
    finally:
        for server in replicas:
            server.stop()
        drop_database(db)


def kill_tree(server: WharfServer) -> None:
    """SIGKILL a replica's process and every process below it, at once."""
    assert server.proc is not None
    tree = kill_process_tree(server.proc.pid)
    server.proc.wait(10)
    for pid in tree[1:]:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)


def log_tail(server: WharfServer, lines: int = 40) -> str:
    if server.log_path is None or not server.log_path.exists():
        return "<no log>"
    tail = server.log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {server.url} log ---\n" + "\n".join(tail)


# -- skopeo in an isolated environment (as in tests/clients/conftest.py) ---------------------


class Skopeo:
    def __init__(self, base: Path, hosts: list[str]) -> None:
        exe = shutil.which("skopeo")
        if exe is None:
            pytest.fail("skopeo is not installed; run scripts/install-test-deps")
        self.exe = exe
        self.env = isolated_client_env(base, hosts)
        self.policy = base / "home" / ".config" / "containers" / "policy.json"

    def __call__(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [self.exe, "--policy", str(self.policy), "--tmpdir", self.env["TMPDIR"], *args]
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            pytest.fail(
                f"`{shlex.join(cmd)}` exited {proc.returncode}\n"
                f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
            )
        return proc


# -- images written by hand as OCI layouts ---------------------------------------------------


@dataclass
class Image:
    layout: Path
    repo: str
    tag: str
    manifest: bytes
    blobs: dict[str, bytes]  # every blob of the image (config and layers) by digest

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"


def make_layer(rng: random.Random, size: int) -> bytes:
    """A gzipped tar holding one file of `size` random (incompressible) bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"payload-{rng.getrandbits(32):08x}.bin")
        info.size, info.mode = size, 0o644
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def write_image(layout: Path, repo: str, tag: str, layers: list[bytes]) -> Image:
    blobs_dir = layout / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)
    blobs: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs_dir / digest.removeprefix("sha256:")).write_bytes(data)
        blobs[digest] = data
        return digest

    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.example.image": f"{repo}:{tag}"}},
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256(gzip.decompress(layer)) for layer in layers],
            },
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": put(layer), "size": len(layer)}
                for layer in layers
            ],
        },
        indent=2,  # not canonical: the registry must keep the exact bytes
    ).encode()
    manifest_digest = sha256(manifest)
    (blobs_dir / manifest_digest.removeprefix("sha256:")).write_bytes(manifest)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index))
    return Image(layout, repo, tag, manifest, blobs)


def read_layout(layout: Path, tag: str) -> tuple[bytes, dict[str, bytes]]:
    """(manifest bytes, {digest: blob bytes}) for `tag` in an OCI layout written by skopeo."""
    index = json.loads((layout / "index.json").read_text())
    [desc] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag]
    blobs = {"sha256:" + p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    for digest, data in blobs.items():
        assert sha256(data) == digest, f"{layout}: blob {digest} does not match its digest"
    return blobs[desc["digest"]], blobs


def build_images(base: Path) -> list[Image]:
    rng = random.Random(20240611)
    shared = make_layer(rng, 2 * MiB)
    big = make_layer(rng, 9 * MiB)  # > S3_PART: stored with a multipart upload
    assert len(big) > S3_PART
    images = [
        write_image(base / "img0", "admin/cluster-one", "v1", [shared, make_layer(rng, MiB)]),
        write_image(base / "img1", "admin/cluster-two", "v1", [make_layer(rng, 100_000), shared]),
        write_image(base / "img2", "admin/cluster-three", "v1", [big, make_layer(rng, 3 * MiB)]),
        # A second tag in the first repository, through another replica than its first tag.
        write_image(base / "img3", "admin/cluster-one", "v2", [make_layer(rng, 6 * MiB)]),
    ]
    assert sha256(shared) in images[0].blobs and sha256(shared) in images[1].blobs
    return images


def pull_and_compare(skopeo: Skopeo, cluster: Cluster, server: WharfServer, image: Image) -> None:
    out = image.layout.parent / f"pulled-{image.layout.name}-{server.port}-{secrets.token_hex(3)}"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        cluster.creds,
        f"docker://{server.host}/{image.repo}:{image.tag}",
        f"oci:{out}:{image.tag}",
    )
    manifest, blobs = read_layout(out, image.tag)
    assert manifest == image.manifest, f"{image.repo}:{image.tag} through {server.url}"
    blobs.pop(sha256(manifest))
    assert blobs.keys() == image.blobs.keys()
    for digest, data in image.blobs.items():
        assert blobs[digest] == data, f"{digest} of {image.repo}:{image.tag} through {server.url}"
    shutil.rmtree(out)


def list_tags(skopeo: Skopeo, cluster: Cluster, server: WharfServer, repo: str) -> list[str]:
    out = skopeo(
        "list-tags",
        "--tls-verify=false",
        "--creds",
        cluster.creds,
        f"docker://{server.host}/{repo}",
    )
    return sorted(json.loads(out.stdout)["Tags"])


# -- a request whose body trickles, to be cut by a SIGKILL -------------------------------------


class StalledSender:
    """Sends a request in a background thread: the first `send` bytes of `body`, then nothing
    until join() (the server is killed meanwhile, so the request never completes)."""

    def __init__(
        self, client: httpx.Client, method: str, url: str, body: bytes, send: int, **kwargs
    ) -> None:
        self.body, self.send = body, send
        self.sent = 0
        self.release = threading.Event()
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._request = (client, method, url, kwargs)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pieces(self) -> Iterator[bytes]:
        piece = 256 * 1024
        while self.sent < self.send:
            data = self.body[self.sent : min(self.sent + piece, self.send)]
            yield data
            self.sent += len(data)
        self.release.wait(60)  # until the server is dead; the request then fails
        yield b""

    def _run(self) -> None:
        client, method, url, kwargs = self._request
        try:
            self.response = client.request(method, url, content=self._pieces(), **kwargs)
        except BaseException as e:  # the connection dies with the server
            self.error = e

    def start(self) -> StalledSender:
        self._thread.start()
        return self

    def join(self) -> None:
        self.release.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the request did not end after the server died"


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def patch_through(
    client: httpx.Client, location: str, data: bytes, start: int, server: WharfServer
) -> httpx.Response:
    """PATCH a chunk, waiting (at most a lease's life, UPLOAD_LEASE_SECONDS = 30 s) while the
    lease of the killed replica's request still holds the upload."""
    headers = {**OCTET, "Content-Range": f"{start}-{start + len(data) - 1}"}
    deadline = time.monotonic() + 45
    while True:
        r = client.patch(location, content=data, headers=headers)
        held = r.status_code == 416 and "another request" in r.text
        if not held or time.monotonic() > deadline:
            break
        # The lease does not change what the upload reports: only acknowledged bytes.
        assert r.headers.get("Range") == f"0-{start - 1}", r.headers
        time.sleep(0.5)
    assert r.status_code == 202, (
        f"PATCH {start}-{start + len(data) - 1}: {r.status_code} {r.headers.get('Range')} "
        f"{r.text}\n{log_tail(server)}"
    )
    assert r.headers["Range"] == f"0-{start + len(data) - 1}"
    return r


# -- the test --------------------------------------------------------------------------------


def stored_objects(s3, bucket: str, prefix: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """{key: size} of every object under prefix."""
    return {
        o["Key"]: o["Size"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for o in page.get("Contents", [])
    }


def blob_key(cluster: Cluster, digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"{cluster.prefix}blobs/sha256/{hex_[:2]}/{hex_}/data"


def test_cluster_on_s3_survives_a_replica_killed_mid_upload(
    cluster: Cluster, s3_server, tmp_path: Path
) -> None:
    a, b, c = replicas = cluster.replicas
    s3 = s3_server.client()
    skopeo = Skopeo(tmp_path / "client-env", [r.host for r in replicas])

    # 1. Pushes spread round-robin; each push is visible through the next replica at once, and
    #    every image pulls back byte-identical through another replica than it was pushed to.
    images = build_images(tmp_path / "images")
    for i, image in enumerate(images):
        pushed_to, seen_by = replicas[i % 3], replicas[(i + 1) % 3]
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            cluster.creds,
            image.ref,
            f"docker://{pushed_to.host}/{image.repo}:{image.tag}",
        )
        expected = sorted(im.tag for im in images[: i + 1] if im.repo == image.repo)
        assert list_tags(skopeo, cluster, seen_by, image.repo) == expected
    assert list_tags(skopeo, cluster, b, "admin/cluster-one") == ["v1", "v2"]
    for i, image in enumerate(images):
        pull_and_compare(skopeo, cluster, replicas[(i + 1) % 3], image)

    # Every blob is in the bucket at its content address (the shared layer once).
    stored = stored_objects(s3, cluster.bucket, cluster.prefix + "blobs/")
    all_blobs = {d: data for image in images for d, data in image.blobs.items()}
    for digest, data in all_blobs.items():
        assert stored.get(blob_key(cluster, digest)) == len(data), f"{digest} is not stored"

    # 2. A chunked upload: the first chunk through A, a second one cut by A's SIGKILL, the
    #    rest through B from where the upload says it is, the final PUT through C.
    repo = "admin/cluster-chunked"
    blob = make_layer(random.Random(7), 24 * MiB)
    digest = sha256(blob)
    first = 6 * MiB
    second_end = first + 9 * MiB
    assert len(blob) - second_end > S3_PART  # each of B's chunks is an S3 multipart upload
    with a.client() as ca, b.client() as cb, c.client() as cc:
        r = ca.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = urlsplit(r.headers["Location"]).path
        upload_id = r.headers["Docker-Upload-UUID"]
        assert location.endswith(upload_id)
        upload_keys = f"{cluster.prefix}uploads/{upload_id}"

        r = ca.patch(
            location, content=blob[:first], headers={**OCTET, "Content-Range": f"0-{first - 1}"}
        )
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{first - 1}"

        # A PATCH claiming all the rest, of which A receives 10 MiB (more than an S3 part) and
        # then waits for the rest, which never comes.
        sender = StalledSender(
            ca,
            "PATCH",
            location,
            blob[first:],
            send=10 * MiB,
            headers={
                **OCTET,
                "Content-Range": f"{first}-{len(blob) - 1}",
                "Content-Length": str(len(blob) - first),
            },
        ).start()

        def staged_a_part() -> bool:
            # A is writing the second chunk to S3: a multipart upload of the segment at
            # `first`, with a part uploaded.
            listed = s3.list_multipart_uploads(Bucket=cluster.bucket, Prefix=upload_keys)
            return any(
                s3.list_parts(Bucket=cluster.bucket, Key=u["Key"], UploadId=u["UploadId"]).get(
                    "Parts"
                )
                for u in listed.get("Uploads", [])
            )

        wait_until(staged_a_part, 30, "replica A to stage part of the second chunk in S3")
        assert sender.response is None
        kill_tree(a)
        sender.join()
        assert sender.response is None, "the stalled PATCH completed"
        assert sender.error is not None
        assert S3_PART <= sender.sent < len(blob) - first

        # Through B the upload has only the acknowledged first chunk, and so has the bucket.
        r = cb.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{first - 1}", "the half-received PATCH counted"
        assert r.headers["Docker-Upload-UUID"] == upload_id
        assert stored_objects(s3, cluster.bucket, upload_keys) == {
            f"{upload_keys}/data.seg/{0:020d}": first
        }

        # 3. With A dead, every image still pulls back byte-identical through B and through C
        #    (meanwhile the killed request's lease on the upload runs out).
        for image in images:
            for server in (b, c):
                pull_and_compare(skopeo, cluster, server, image)
            assert list_tags(skopeo, cluster, c, image.repo) == sorted(
                im.tag for im in images if im.repo == image.repo
            )

        # The rest through B in two chunks, from the offset the upload reports.
        patch_through(cb, location, blob[first:second_end], first, b)
        r = cc.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{second_end - 1}"
        patch_through(cb, location, blob[second_end:], second_end, b)

        # Finished through C, which never received a byte of it.
        r = cc.put(location, params={"digest": digest})
        assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(c)}"
        assert r.headers["Docker-Content-Digest"] == digest
        assert cb.get(location).status_code == 404  # the session is over, on every replica

        for client in (cb, cc):
            r = client.head(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == len(blob)
            assert r.headers["Docker-Content-Digest"] == digest
            r = client.get(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 200, r.text
            assert len(r.content) == len(blob)
            assert sha256(r.content) == digest
        head = s3.head_object(Bucket=cluster.bucket, Key=blob_key(cluster, digest))
        assert head["ContentLength"] == len(blob)
        # Nothing of any upload is left: neither segments nor the half-written chunk.
        assert stored_objects(s3, cluster.bucket, cluster.prefix + "uploads/") == {}
        # Not even the multipart upload the killed replica had started (S3 bills its parts).
        left = s3.list_multipart_uploads(Bucket=cluster.bucket, Prefix=cluster.prefix + "uploads/")
        assert left.get("Uploads", []) == [], left["Uploads"]

        # An image made of it: pushed through B, pulled through C.
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [sha256(gzip.decompress(blob))]},
            },
            separators=(",", ":"),
        ).encode()
        r = cb.post(f"/v2/{repo}/blobs/uploads/", params={"digest": sha256(config)}, content=config)
        assert r.status_code == 201, r.text
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": len(blob)}],
            },
            indent=2,
        ).encode()
        r = cb.put(
            f"/v2/{repo}/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == sha256(manifest)
        r = cc.get(f"/v2/{repo}/manifests/{sha256(manifest)}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == manifest
    chunked = Image(
        tmp_path / "chunked", repo, "v1", manifest, {sha256(config): config, digest: blob}
    )
    pull_and_compare(skopeo, cluster, c, chunked)
    assert a.proc is not None and a.proc.poll() is not None  # A stayed dead throughout
