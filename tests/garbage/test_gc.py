"""Online garbage collection: what it frees and what it keeps."""

from __future__ import annotations

from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    index_manifest,
    manifest_descriptor,
    push_artifact,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
)


def summary(lines: list[str]) -> dict[str, str]:
    last = next(line for line in reversed(lines) if "blobsDeleted=" in line)
    return dict(part.split("=") for part in last.removeprefix("dry run: ").split())


def test_deleting_a_tag_frees_its_manifest_and_unshared_blobs(harness):
    with harness.server.client() as c:
        kept = push_image(c, "gc/app", "kept")
        gone = push_image(c, "gc/app", "gone", layer_size=5000)
        r = c.delete("/v2/gc/app/manifests/gone")
        assert r.status_code == 202
        before = harness.stored_blobs()
        _job, lines = harness.gc()
        freed = summary(lines)
        assert freed["manifestsDeleted"] == "1"
        assert freed["blobsDeleted"] == "3"  # its config and two layers
        assert int(freed["bytesFreed"]) == len(gone.config) + 2 * 5000
        after = harness.stored_blobs()
        assert before - after == {sha256(b) for b in [gone.config, *gone.layers]}
        for blob in [kept.config, *kept.layers]:
            assert c.get(f"/v2/gc/app/blobs/{sha256(blob)}").content == blob
        for blob in [gone.config, *gone.layers]:
            assert c.head(f"/v2/gc/app/blobs/{sha256(blob)}").status_code == 404
        assert c.get(f"/v2/gc/app/manifests/{sha256(gone.body)}").status_code == 404
        assert c.get("/v2/gc/app/manifests/kept").content == kept.body
        # A second run finds nothing left.
        _, lines = harness.gc()
        assert summary(lines)["blobsDeleted"] == "0"


def test_shared_layers_stay_while_any_image_uses_them(harness):
    with harness.server.client() as c:
        shared = random_blob(3000)
        first = push_image(c, "gc/one", "v1")
        push_blob(c, "gc/one", shared)
        push_blob(c, "gc/two", shared)
        # Two images in two repositories, sharing one layer.
        images = []
        for repo in ("gc/one", "gc/two"):
            config = canonical({"architecture": "amd64", "os": "linux", "repo": repo})
            push_blob(c, repo, config)
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
                        "digest": sha256(shared),
                        "size": len(shared),
                    }
                ],
            }
            body = canonical(doc)
            assert put_manifest(c, repo, "shared", body, OCI_MANIFEST).status_code == 201
            images.append(body)
        assert c.delete("/v2/gc/one/manifests/shared").status_code == 202
        harness.gc()
        assert c.get(f"/v2/gc/two/blobs/{sha256(shared)}").content == shared
        assert c.get("/v2/gc/one/manifests/v1").content == first.body
        assert sha256(shared).split(":")[1] in {d.split(":")[1] for d in harness.stored_blobs()}


def test_an_index_keeps_its_children_and_a_subject_its_referrers(harness):
    with harness.server.client() as c:
        amd = push_image(c, "gc/multi", None)
        arm = push_image(c, "gc/multi", None, platform=("linux", "arm64"))
        index = canonical(
            index_manifest(
                [
                    manifest_descriptor(OCI_MANIFEST, amd.body),
                    manifest_descriptor(OCI_MANIFEST, arm.body),
                ]
            )
        )
        assert put_manifest(c, "gc/multi", "latest", index, OCI_INDEX).status_code == 201
        signature, _ = push_artifact(
            c,
            "gc/multi",
            manifest_descriptor(OCI_INDEX, index),
            "application/vnd.example.signature",
        )
        lonely = push_image(c, "gc/multi", None)  # untagged, needed by nothing

        _, lines = harness.gc()
        assert summary(lines)["manifestsDeleted"] == "1"
        for body in (index, amd.body, arm.body, signature):
            assert c.get(f"/v2/gc/multi/manifests/{sha256(body)}").status_code == 200
        assert c.get(f"/v2/gc/multi/manifests/{sha256(lonely.body)}").status_code == 404

        # Untag the index: it goes, and its children and its signature with it.
        assert c.delete("/v2/gc/multi/manifests/latest").status_code == 202
        _, lines = harness.gc()
        assert summary(lines)["manifestsDeleted"] == "4"
        for body in (index, amd.body, arm.body, signature):
            assert c.get(f"/v2/gc/multi/manifests/{sha256(body)}").status_code == 404
        assert harness.count("manifests") == 0
        assert harness.stored_blobs() == set()


def test_untagged_manifests_can_be_kept(harness):
    with harness.server.client() as c:
        image = push_image(c, "gc/keep", None)
        _, lines = harness.gc(deleteUntagged=False)
        assert summary(lines)["manifestsDeleted"] == "0"
        assert summary(lines)["blobsDeleted"] == "0"
        assert c.get(f"/v2/gc/keep/manifests/{sha256(image.body)}").content == image.body


def test_a_dry_run_reports_and_deletes_nothing(harness):
    with harness.server.client() as c:
        image = push_image(c, "gc/dry", "t", layer_size=4000)
        push_blob(c, "gc/dry", random_blob(700))  # never referenced
        assert c.delete("/v2/gc/dry/manifests/t").status_code == 202
        before = harness.stored_blobs()
        _, lines = harness.gc(dryRun=True)
        report = summary(lines)
        assert report["manifestsDeleted"] == "1"
        assert report["blobsDeleted"] == "4"
        assert int(report["bytesFreed"]) == len(image.config) + 2 * 4000 + 700
        assert harness.stored_blobs() == before
        assert c.get(f"/v2/gc/dry/manifests/{sha256(image.body)}").status_code == 200
        _, lines = harness.gc()
        assert summary(lines) | {"complete": "True"} == report | {"complete": "True"}
        assert harness.stored_blobs() == set()


def test_the_grace_period_spares_recent_pushes(harness):
    with harness.server.client() as c:
        orphan = push_blob(c, "gc/grace", random_blob(500))
        image = push_image(c, "gc/grace", None)
        _, lines = harness.gc(graceMinutes=60)
        assert summary(lines)["blobsDeleted"] == "0"
        assert summary(lines)["manifestsDeleted"] == "0"
        assert c.head(f"/v2/gc/grace/blobs/{orphan}").status_code == 200
        assert c.get(f"/v2/gc/grace/manifests/{sha256(image.body)}").status_code == 200


def test_deleting_a_repository_frees_its_blobs_at_the_next_gc(harness):
    with harness.server.client() as c:
        push_image(c, "gc/doomed", "v1")
        push_image(c, "gc/doomed", "v2")
        assert len(harness.stored_blobs()) == 6
        r = c.delete("/api/v0/repositories/gc/doomed")
        assert r.status_code == 204, r.text
        _, lines = harness.gc()
        assert summary(lines)["blobsDeleted"] == "6"
        assert harness.stored_blobs() == set()
        assert harness.count("blobs") == 0


def test_a_job_that_gc_is_held_off_by(harness):
    """GC does not start while a conflicting job (a metadata migration) runs."""
    from wharf.jobs.store import CONFLICTS

    assert "metadatastoremigration" in CONFLICTS["onlinegc"]
    # A migration job running on "another worker": GC stays waiting. (Made running directly:
    # the server's own worker knows the action and would otherwise claim it first.)
    from datetime import timedelta

    from sqlalchemy import update

    from wharf.metadata import schema as t
    from wharf.metadata.store import utcnow

    blocker = harness.jobs.create("metadatastoremigration", scheduled_at=utcnow() + timedelta(1))
    with harness.jobs.store._write() as conn:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == blocker.id)
            .values(
                state="running", worker_id="elsewhere-1", started_at=utcnow(), heartbeat_at=utcnow()
            )
        )
    job = harness.jobs.create("onlinegc", {"graceMinutes": 0})
    import time

    time.sleep(3)
    assert harness.jobs.get(job.id).state == "waiting"
    harness.jobs.finish(blocker.id, "elsewhere-1", "done")
    deadline = time.monotonic() + 30
    while harness.jobs.get(job.id).state != "done" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert harness.jobs.get(job.id).state == "done"
