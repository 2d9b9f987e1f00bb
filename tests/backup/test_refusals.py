"""Archives that must not be restored (truncated, tampered with, a wrong passphrase, another
minor version) and targets that must not be overwritten: refused with a clear error before
anything is created."""

from __future__ import annotations

import io
import json
import secrets
import tarfile

import pytest

from tests.backup.helpers import PASSPHRASE, backup_to, restore_from, wharf
from tests.bootstrap.helpers import install_args
from tests.bootstrap.synthetic_history import NOTES
from tests.conftest import free_port
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore

pytestmark = pytest.mark.once

HISTORY = {"WHARF_RELEASE_HISTORY": "tests.bootstrap.synthetic_history"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """An installation at the synthetic version 1.0.0, backed up in clear and encrypted."""
    tmp = tmp_path_factory.mktemp("refusals")
    version = tmp / "version"
    version.write_text("1.0.0\n")
    env = {
        **HISTORY,
        "WHARF_TEST_SOFTWARE_VERSION_FILE": str(version),
        "WHARF_ADMIN_PASSWORD": secrets.token_urlsafe(12),
    }
    source = tmp / "source"
    r = wharf(*install_args(source, f"sqlite:///{source / 'wharf.db'}"), env=env)
    assert r.returncode == 0, r.stderr.decode()
    clear, encrypted = tmp / "clear.tar", tmp / "encrypted.tar"
    warned = backup_to(clear, "--data-dir", source, env=env)
    assert "NOT encrypted" in warned.stderr.decode()
    backup_to(encrypted, "--data-dir", source, encrypt=True, env=env)
    return {"tmp": tmp, "env": env, "version": version, "clear": clear, "encrypted": encrypted}


def _restore(archives, archive, name, **kwargs):
    target = archives["tmp"] / f"target-{name}-{secrets.token_hex(3)}"
    args = ["--data-dir", target, "--http-addr", f"127.0.0.1:{free_port()}"]
    r = restore_from(archive, *args, env=archives["env"], **kwargs)
    return r, target


def _refused(archives, archive, name, code, message, **kwargs):
    r, target = _restore(archives, archive, name, **kwargs)
    err = r.stderr.decode()
    assert r.returncode == code, err
    assert message in err, err
    assert not target.exists(), "a refused restore left a data directory"
    return err


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _rewrite(archives, source, name, change):
    """A copy of `source` with the member `name`'s bytes replaced by change(bytes)."""
    out = io.BytesIO()
    with tarfile.open(source) as tar, tarfile.open(fileobj=out, mode="w") as dst:
        for info in tar:
            data = tar.extractfile(info).read() if info.isfile() else None
            if info.name == name:
                data = change(data)
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return _write(archives["tmp"] / f"altered-{secrets.token_hex(3)}.tar", out.getvalue())


def test_truncated_archive_is_refused(archives):
    data = archives["clear"].read_bytes()
    with tarfile.open(archives["clear"]) as tar:
        manifest = tar.getmember("wharf-backup/manifest.json")
    # Inside the manifest (the last member), in the middle, inside the first member.
    for cut in (manifest.offset_data + manifest.size // 2, len(data) // 2, 700):
        path = _write(archives["tmp"] / f"cut-{cut}.tar", data[:cut])
        _refused(archives, path, "cut", 1, "truncated")


def test_tampered_member_is_refused(archives):
    for source, suffix in ((archives["clear"], ""), (archives["encrypted"], ".enc")):
        name = f"wharf-backup/access/accounts.jsonl{suffix}"

        def flip(data: bytes) -> bytes:
            middle = len(data) // 2
            return data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :]

        _refused(archives, _rewrite(archives, source, name, flip), "flip", 1, "checksum")


def test_tampered_manifest_of_an_encrypted_archive_is_refused(archives):
    def later(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["members"]["wharf-backup/access/accounts.jsonl.enc"]["sha256"] = "0" * 64
        return json.dumps(doc).encode()

    path = _rewrite(archives, archives["encrypted"], "wharf-backup/manifest.json", later)
    _refused(archives, path, "manifest", 1, "manifest.json was altered")


def test_wrong_or_missing_passphrase_is_refused(archives):
    _refused(archives, archives["encrypted"], "wrong", 1, "wrong passphrase", passphrase="nope")
    # No passphrase and no terminal to ask on: bad usage, with what to do.
    _refused(archives, archives["encrypted"], "none", 2, "WHARF_BACKUP_PASSPHRASE", passphrase="")


def test_not_an_archive_and_extra_members_are_refused(archives):
    _refused(archives, _write(archives["tmp"] / "junk", b"x" * 5000), "junk", 1, "not a tar")
    out = io.BytesIO()
    with tarfile.open(archives["clear"]) as tar, tarfile.open(fileobj=out, mode="w") as dst:
        for info in tar:
            if info.name.endswith("manifest.json"):
                extra = tarfile.TarInfo("wharf-backup/metadata/evil.jsonl")
                extra.size = 2
                dst.addfile(extra, io.BytesIO(b"{}"))
            dst.addfile(info, tar.extractfile(info) if info.isfile() else None)
    path = _write(archives["tmp"] / "extra.tar", out.getvalue())
    _refused(archives, path, "extra", 1, "not in the manifest")


def test_verify_checks_without_restoring(archives):
    env = {**archives["env"], "WHARF_BACKUP_PASSPHRASE": PASSPHRASE}
    for path in (archives["clear"], archives["encrypted"]):
        with path.open("rb") as f:
            r = wharf("backup", "--verify", stdin=f, env=env)
        assert r.returncode == 0, r.stderr.decode()
        assert b"archive OK: Wharf 1.0.0" in r.stdout
    data = archives["clear"].read_bytes()
    r = wharf("backup", "--verify", input=data[: len(data) // 2], env=env)
    assert r.returncode == 1 and b"truncated" in r.stderr


def test_versions_minor_refused_patch_warned(archives):
    version = archives["version"]
    try:
        version.write_text("1.1.0\n")
        err = _refused(archives, archives["clear"], "minor", 3, "made by Wharf 1.0.0")
        assert "Install Wharf 1.0.x" in err
        version.write_text("1.0.1\n")
        r, target = _restore(archives, archives["clear"], "patch")
        assert r.returncode == 0, r.stderr.decode()
        assert "another patch version" in r.stderr.decode()
        status = wharf("status", "--json", "--config", target / "wharf.toml", env=archives["env"])
        assert json.loads(status.stdout)["cluster"]["version"] == "1.0.1"
    finally:
        version.write_text("1.0.0\n")


def test_a_restore_on_a_later_patch_runs_that_patch_s_data_steps(archives):
    """As an upgrade to it would (0.2.1 repairs stored names): the restore records the new
    version, so no `wharf upgrade` would run them later."""
    version = archives["version"]
    try:
        version.write_text("1.0.2\n")
        r, target = _restore(archives, archives["clear"], "steps")
        assert r.returncode == 0, r.stderr.decode()
    finally:
        version.write_text("1.0.0\n")
    store = MetadataStore(f"sqlite:///{target / 'wharf.db'}")
    try:
        assert IdentityStore(store).get_setting(NOTES) == ["1.0.2 seed"]
    finally:
        store.dispose()


def test_existing_installation_is_refused(archives):
    r, target = _restore(archives, archives["clear"], "first")
    assert r.returncode == 0, r.stderr.decode()
    before = sorted(p.name for p in target.iterdir())
    args = ["--data-dir", target, "--http-addr", f"127.0.0.1:{free_port()}"]
    again = restore_from(archives["clear"], *args, env=archives["env"])
    assert again.returncode == 3 and b"destroy" in again.stderr
    assert sorted(p.name for p in target.iterdir()) == before
