"""GC in a loop while clients push images that share layers, delete tags and push again.

Afterwards every tag that exists pulls back byte-identical, and a final GC leaves exactly the
blobs the remaining manifests reference. The collector runs with no grace period, as
aggressively as it can: a push whose blobs it collected before the manifest arrived is refused
with MANIFEST_BLOB_UNKNOWN, and the client uploads them again (what real clients do).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time

import pytest

from tests.api.helpers import OCI_MANIFEST, canonical, put_manifest, sha256
from tests.conftest import start_server
from tests.garbage.conftest import GCHarness

DURATION = 30.0
CLIENTS = 4
REPOS = ("stress/a", "stress/b", "stress/c")


@pytest.fixture
def busy_harness(tmp_path):
    server = start_server(tmp_path, workers=2)
    h = GCHarness(server)
    try:
        yield h
    finally:
        h.store.dispose()
        server.stop()


class Client(threading.Thread):
    def __init__(self, number: int, server, pool: list[bytes], deadline: float) -> None:
        super().__init__(daemon=True)
        self.number, self.server, self.pool, self.deadline = number, server, pool, deadline
        self.rng = random.Random(number)
        self.tags: dict[tuple[str, str], bytes] = {}  # what each of this client's tags holds
        self.blobs: dict[str, bytes] = {}
        self.pushes = self.deletes = self.repushes = self.refused = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.server.client() as c:
                while time.monotonic() < self.deadline:
                    self.step(c)
        except BaseException as e:
            self.error = e

    def step(self, c) -> None:
        repo = self.rng.choice(REPOS)
        tag = f"c{self.number}-{self.rng.randrange(4)}"
        roll = self.rng.random()
        if roll < 0.2 and (repo, tag) in self.tags:
            r = c.delete(f"/v2/{repo}/manifests/{tag}")
            assert r.status_code == 202, r.text
            del self.tags[(repo, tag)]
            self.deletes += 1
        elif roll < 0.35 and self.tags:
            (old_repo, _), body = self.rng.choice(sorted(self.tags.items()))
            if old_repo == repo:  # the same content again, under this tag
                self.push(c, repo, tag, body)
                self.repushes += 1
        else:
            layers = self.rng.sample(self.pool, 2)
            if self.rng.random() < 0.3:
                layers.append(os.urandom(self.rng.randrange(1000, 50_000)))
            config = canonical({"os": "linux", "architecture": "amd64", "n": os.urandom(6).hex()})
            self.blobs.update({sha256(b): b for b in [config, *layers]})
            doc = {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": sha256(layer),
                        "size": len(layer),
                    }
                    for layer in layers
                ],
            }
            self.push(c, repo, tag, canonical(doc))
            self.pushes += 1

    def push(self, c, repo: str, tag: str, body: bytes) -> None:
        doc = json.loads(body)
        needed = [doc["config"], *doc["layers"]]
        for _attempt in range(20):
            for d in needed:
                if c.head(f"/v2/{repo}/blobs/{d['digest']}").status_code != 200:
                    data = self.blobs[d["digest"]]
                    r = c.post(
                        f"/v2/{repo}/blobs/uploads/",
                        params={"digest": d["digest"]},
                        content=data,
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    assert r.status_code == 201, r.text
            r = put_manifest(c, repo, tag, body, OCI_MANIFEST)
            if r.status_code == 201:
                self.tags[(repo, tag)] = body
                return
            assert r.status_code == 400 and "MANIFEST_BLOB_UNKNOWN" in r.text, r.text
            self.refused += 1  # collected between our HEAD and our PUT: upload again
        raise AssertionError(f"could not push {repo}:{tag} in 20 attempts")


def test_gc_in_a_loop_with_pushes_deletes_and_repushes(busy_harness):
    h = busy_harness
    rng = random.Random(7)
    pool = [os.urandom(rng.randrange(20_000, 200_000)) for _ in range(6)]
    deadline = time.monotonic() + DURATION
    clients = [Client(i, h.server, pool, deadline) for i in range(CLIENTS)]
    for client in clients:
        client.blobs.update({sha256(b): b for b in pool})
        client.start()
    runs, freed = 0, 0
    while time.monotonic() < deadline:
        _job, lines = h.gc()
        runs += 1
        last = next(line for line in reversed(lines) if "blobsDeleted=" in line)
        freed += int(last.split("blobsDeleted=")[1].split()[0])
    for client in clients:
        client.join(60)
        assert not client.is_alive()
        if client.error is not None:
            raise client.error

    expected: dict[tuple[str, str], bytes] = {}
    blobs: dict[str, bytes] = {}
    for client in clients:
        expected.update(client.tags)
        blobs.update(client.blobs)
    pushes = sum(c.pushes + c.repushes for c in clients)
    deletes = sum(c.deletes for c in clients)
    refused = sum(c.refused for c in clients)
    print(
        f"stress: {pushes} pushes, {deletes} tag deletions, {runs} GC runs freeing "
        f"{freed} blobs, {refused} manifest pushes refused and retried, "
        f"{len(expected)} tags at the end"
    )
    assert runs >= 3 and pushes >= 20 and deletes >= 3

    with h.server.client() as c:
        for repo in REPOS:
            listed = set(c.get(f"/v2/{repo}/tags/list").json().get("tags") or [])
            assert listed == {tag for (r, tag) in expected if r == repo}
        for (repo, tag), body in expected.items():
            r = c.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == body
            doc = json.loads(body)
            for d in [doc["config"], *doc["layers"]]:
                got = c.get(f"/v2/{repo}/blobs/{d['digest']}")
                assert got.status_code == 200, (repo, tag, d["digest"])
                assert sha256(got.content) == d["digest"]

    # A final collection, with nobody pushing, leaves exactly what the tags need.
    h.gc()
    referenced = set()
    for body in expected.values():
        doc = json.loads(body)
        referenced |= {d["digest"] for d in [doc["config"], *doc["layers"]]}
    assert h.stored_blobs() == referenced
    assert h.count("blobs") == len(referenced)
    assert h.count("manifests") == len({(repo, body) for (repo, _), body in expected.items()})
