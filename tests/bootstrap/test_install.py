"""`wharf install`, `remove` and `destroy` on one machine: a TLS cluster by default, every
refusal with its reason, interactive prompts on a terminal."""

from __future__ import annotations

import os
import pty
import re
import secrets
import select
import stat
import time

import httpx
import pytest

from tests import metadata_db
from tests.bootstrap.helpers import Replica, install_args, wharf
from tests.conftest import free_port
from wharf import __version__, tls


def test_install_creates_a_cluster_served_over_https(tmp_path):
    password = secrets.token_urlsafe(12)
    data = tmp_path / "one"
    r = wharf(
        *install_args(data, metadata_db.server_db_url(data)),
        env={"WHARF_ADMIN_PASSWORD": password},
    )
    assert r.returncode == 0, r.stderr
    rid = (data / "replica-id").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{12}", rid) and rid in r.stdout
    assert "self-signed" in r.stdout and "/ca" in r.stdout
    assert stat.S_IMODE((data / "wharf.toml").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "tls" / "server.key").stat().st_mode) == 0o600
    assert password not in (data / "wharf.toml").read_text() + r.stdout + r.stderr
    replica = Replica(data)
    replica.start()
    try:
        plain = f"http://127.0.0.1:{replica.http_port}"
        # Plain HTTP only redirects (the method is kept), except for the CA.
        redirect = httpx.post(f"{plain}/v2/x/blobs/uploads/?a=1", follow_redirects=False)
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"{replica.url}/v2/x/blobs/uploads/?a=1"
        ca = httpx.get(f"{plain}/ca")
        assert ca.status_code == 200 and ca.text == (data / "tls" / "ca.crt").read_text()
        # HTTPS verifies against that CA, for the external URL's host.
        with replica.client(auth=("admin", password)) as c:
            r2 = c.get("/v2/")
            assert r2.status_code == 200
            assert r2.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{replica.url}/v2/")  # not a publicly trusted certificate
        s = wharf("status", "--config", data / "wharf.toml")
        assert s.returncode == 0, s.stdout + s.stderr
        assert f"cluster version {__version__}" in s.stdout and rid in s.stdout
        assert f"https://127.0.0.1:{replica.https_port}" in s.stdout
    finally:
        replica.stop()


@pytest.mark.once
def test_install_refuses_bad_input_before_writing_anything(tmp_path):
    data = tmp_path / "d"
    db = f"sqlite:///{tmp_path / 'x.db'}"
    cases = [
        (["--http-port", "0"], "--http-port"),
        (["--https-port", "70000"], "--https-port"),
        (["--cert-file", __file__], "--cert-file and --key-file go together"),
        (["--plain-http", "--ca-file", __file__], "--plain-http"),
    ]
    for extra, message in cases:
        r = wharf(*install_args(data, db), *extra)
        assert r.returncode == 2, (extra, r.stderr)
        assert message in r.stderr, (extra, r.stderr)
    r = wharf(
        "install",
        "--non-interactive",
        "--external-url",
        "https://exa mple.com/x",
        "--http-port",
        "8080",
        "--https-port",
        "8443",
        "--data-dir",
        data,
        "--db",
        db,
    )
    assert r.returncode == 2, r.stderr
    same = wharf(
        "install",
        "--non-interactive",
        "--http-port",
        "8443",
        "--https-port",
        "8443",
        "--data-dir",
        data,
        "--db",
        db,
    )
    assert same.returncode == 2 and "must differ" in same.stderr
    assert not data.exists() and not (tmp_path / "x.db").exists()


@pytest.mark.once
def test_install_takes_the_operators_certificate_and_refuses_a_mismatched_key(tmp_path):
    own = tls.self_signed(["registry.example.test", "localhost"])
    other = tls.self_signed(["elsewhere.test"])
    cert, key, wrong_key, ca = (tmp_path / n for n in ("c.pem", "k.pem", "w.pem", "ca.pem"))
    cert.write_text(own.cert_pem)
    key.write_text(own.key_pem)
    wrong_key.write_text(other.key_pem)
    ca.write_text(own.ca_pem)
    db = f"sqlite:///{tmp_path / 'c.db'}"
    bad = wharf(
        *install_args(tmp_path / "bad", db),
        "--cert-file",
        cert,
        "--key-file",
        wrong_key,
        "--ca-file",
        ca,
    )
    assert bad.returncode == 2 and "key" in bad.stderr.lower(), bad.stderr
    assert not (tmp_path / "bad").exists()
    data = tmp_path / "good"
    r = wharf(
        *install_args(data, f"sqlite:///{data / 'wharf.db'}"),
        "--cert-file",
        cert,
        "--key-file",
        key,
        "--ca-file",
        ca,
    )
    assert r.returncode == 0, r.stderr
    assert "yours" in r.stdout
    assert (data / "tls" / "server.crt").read_text() == own.cert_pem
    assert (data / "tls" / "ca.crt").read_text() == own.ca_pem
    again = wharf(*install_args(data, f"sqlite:///{data / 'wharf.db'}"))
    assert again.returncode == 3 and "already holds an installation" in again.stderr


@pytest.mark.once
def test_install_on_a_database_that_holds_a_cluster_is_refused(tmp_path):
    db = metadata_db.new_database()
    first = wharf(*install_args(tmp_path / "a", db), "--plain-http")
    assert first.returncode == 0, first.stderr
    rid = (tmp_path / "a" / "replica-id").read_text().strip()
    second = wharf(*install_args(tmp_path / "b", db))
    assert second.returncode == 3
    assert "wharf join" in second.stderr and rid in second.stderr
    assert not (tmp_path / "b").exists()


def _converse(argv: list[str], answers: list[tuple[str, str]], env: dict[str, str]) -> str:
    """Run argv on a pseudo-terminal, answering each prompt as it appears."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    seen = b""
    deadline = time.monotonic() + 120
    pending = list(answers)
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            while pending and pending[0][0].encode() in seen.split(b"\n")[-1]:
                os.write(fd, pending.pop(0)[1].encode() + b"\r")
                seen += b"\n"
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, seen.decode(errors="replace")
    assert not pending, f"never asked: {pending}\n{seen.decode(errors='replace')}"
    return seen.decode(errors="replace")


@pytest.mark.once
def test_install_asks_on_a_terminal_for_what_no_flag_gave(tmp_path):
    import sys

    data = tmp_path / "asked"
    http, https = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "WHARF_ADMIN_PASSWORD"}
    output = _converse(
        [
            sys.executable,
            "-m",
            "wharf",
            "install",
            "--data-dir",
            str(data),
            "--bind-address",
            "127.0.0.1",
        ],
        [
            ("External URL", f"https://localhost:{https}"),
            ("HTTP port", str(http)),
            ("HTTPS port", str(https)),
            ("Metadata store", f"sqlite:///{data / 'wharf.db'}"),
            ("Blob storage URL", "local"),
            ("Password for the first admin", "typed-secret-1"),
            ("Repeat for confirmation", "typed-secret-1"),
        ],
        env,
    )
    assert "typed-secret-1" not in output  # hidden input
    assert not (data / "admin-password").exists()  # typed, not generated
    replica = Replica(data)
    replica.start()
    try:
        with replica.client(auth=("admin", "typed-secret-1")) as c:
            assert c.get("/v2/").status_code == 200
    finally:
        replica.stop()


@pytest.mark.once
def test_remove_and_destroy_on_the_embedded_store(tmp_path):
    data = tmp_path / "solo"
    shared = tmp_path / "blobs"
    r = wharf(
        *install_args(data, f"sqlite:///{data / 'wharf.db'}"),
        "--storage",
        f"file://{shared}",
        env={"WHARF_ADMIN_PASSWORD": "pw-" + secrets.token_hex(4)},
    )
    assert r.returncode == 0, r.stderr
    rid = (data / "replica-id").read_text().strip()
    where = ["--data-dir", data, "--db", f"sqlite:///{data / 'wharf.db'}"]
    gone = wharf("remove", "--replica-id", rid, *where)
    assert gone.returncode == 3 and "only replica" in gone.stderr and "destroy" in gone.stderr
    other = wharf("destroy", "--replica-id", "0123456789ab", "--force", *where)
    assert other.returncode == 3 and rid in other.stderr
    replica = Replica(data)
    replica.start()
    try:
        running = wharf("destroy", "--replica-id", rid, "--force", *where)
        assert running.returncode == 3 and "stop it first" in running.stderr
    finally:
        replica.stop()
    unasked = wharf("destroy", "--replica-id", rid, *where)
    assert unasked.returncode == 2 and "--force" in unasked.stderr
    assert data.exists()
    (shared / "keep-me").write_text("blob storage is not the replica's to delete")
    done = wharf("destroy", "--replica-id", rid, "--force", *where)
    assert done.returncode == 0, done.stderr
    assert not data.exists()
    assert (shared / "keep-me").exists() and f"kept the blob storage file://{shared}" in done.stdout
