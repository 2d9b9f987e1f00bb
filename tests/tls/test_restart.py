"""SIGHUP restarts a replica gracefully (same pid, sockets kept, configuration re-read), and
`wharf reconfigure` uses it for this replica's own settings."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest

from tests.conftest import free_port
from tests.tls.helpers import TLSServer, tls_server, trusting, wharf, write_material
from wharf import tls
from wharf.server import PID_FILE, RestartFailed, request_restart


class RequestLoop:
    """Requests without pause over new connections (HTTPS and plain), in a thread."""

    def __init__(self, server: TLSServer) -> None:
        self.server = server
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._verify = trusting(server.ca_pem())
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                r = httpx.get(
                    f"{self.server.https_url}/v2/",
                    auth=self.server.auth,
                    verify=self._verify,
                    timeout=30,
                )
                assert r.status_code == 200, r.status_code
                r = httpx.get(f"{self.server.http_url}/v2/", timeout=30)
                assert r.status_code == 308, r.status_code
                self.ok += 1
            except Exception as e:
                self.errors.append(repr(e))

    def __enter__(self) -> RequestLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(60)


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_restarts_without_refusing_a_connection(tmp_path, workers):
    server = tls_server(
        tmp_path, workers=workers, config={"external_url": "https://old.example.com"}
    )
    try:
        pid = server.proc.pid
        pid_file = server.data_dir / PID_FILE
        deadline = time.monotonic() + 10  # written once every listener accepts
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_file.read_text().strip() == str(pid)
        location = httpx.get(f"{server.http_url}/v2/").headers["location"]
        assert location == "https://old.example.com/v2/"
        server.write_config(external_url="https://new.example.com")
        with RequestLoop(server) as loop:
            time.sleep(1)
            before = loop.ok
            assert request_restart(server.data_dir) is True  # back within its timeout
            time.sleep(1)
        assert loop.errors == [], loop.errors[:3]
        assert before > 0 and loop.ok > before
        assert server.proc.poll() is None and server.proc.pid == pid  # exec keeps the pid
        assert (server.data_dir / PID_FILE).read_text().strip() == str(pid)
        location = httpx.get(f"{server.http_url}/v2/").headers["location"]
        assert location == "https://new.example.com/v2/"  # the new configuration
        if workers > 1:
            children = subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split()
            assert len(children) >= workers
        assert "Wharf restarting (SIGHUP)" in server.log()
    finally:
        server.stop()
    # A clean exit removes the pid file.
    assert not (server.data_dir / PID_FILE).exists()


@pytest.mark.once
def test_request_restart_finds_no_replica_where_none_runs(tmp_path):
    assert request_restart(tmp_path) is False  # no pid file
    (tmp_path / PID_FILE).write_text("999999999\n")
    assert request_restart(tmp_path) is False  # no such process
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / PID_FILE).write_text(f"{sleeper.pid}\n")
        assert request_restart(tmp_path, timeout=1) is False  # not a wharf process
        assert sleeper.poll() is None  # and it was not signalled
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / PID_FILE).write_text("garbage\n")
    assert request_restart(tmp_path) is False


def test_a_replica_that_cannot_come_back_is_reported(tmp_path):
    server = tls_server(tmp_path)
    try:
        # A configuration that no longer works: the restarted process exits (exit 2).
        server.write_config(workers=0)
        with pytest.raises(RestartFailed, match="exited"):
            request_restart(server.data_dir, timeout=30)
        assert server.proc.wait(10) == 2
    finally:
        server.stop()


def test_reconfigure_changes_ports_through_a_graceful_restart(tmp_path):
    server = tls_server(tmp_path)
    where = ["--data-dir", str(server.data_dir), "--db", server.db_url]
    try:
        pid = server.proc.pid
        ca = server.ca_pem()
        new_http, new_https = free_port(), free_port()
        r = wharf(
            "reconfigure",
            *where,
            "--http-port",
            str(new_http),
            "--https-port",
            str(new_https),
            "--log-level",
            "debug",
        )
        assert r.returncode == 0, r.stderr
        assert "restarted this replica" in r.stdout
        assert f"https_addr = 127.0.0.1:{new_https}" in r.stdout
        old_https = server.https_port
        server.http_port, server.https_port = new_http, new_https
        server.wait_serving()
        with server.client(ca) as c:
            assert c.get("/v2/").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"https://127.0.0.1:{old_https}/v2/", verify=False)
        assert (
            httpx.get(f"{server.http_url}/v2/")
            .headers["location"]
            .startswith(f"https://127.0.0.1:{new_https}/")
        )
        assert server.proc.pid == pid and server.proc.poll() is None
        toml = (server.data_dir / "wharf.toml").read_text()
        assert 'log_level = "debug"' in toml and f"127.0.0.1:{new_http}" in toml
    finally:
        server.stop()
    # Not running: the change waits for the next start.
    r = wharf("reconfigure", *where, "--external-url", "https://registry.example.com")
    assert r.returncode == 0, r.stderr
    assert "takes effect at its next start" in r.stdout


def test_reconfigure_refuses_bad_input_before_changing_anything(tmp_path):
    server = tls_server(tmp_path)
    server.stop()
    where = ["--data-dir", str(server.data_dir), "--db", server.db_url]
    before_toml = server.config_file.read_text()
    before_cert = tls.paths(server.data_dir)[0].read_text()
    mine = write_material(tmp_path / "a", tls.self_signed(["a.example"]))
    other = write_material(tmp_path / "b", tls.self_signed(["a.example"]))
    from tests.tls.helpers import expired_certificate

    expired_cert, expired_key = expired_certificate(tmp_path)
    cases = [
        # (arguments, exit code, words in the message)
        (["--cert-file", str(mine[0]), "--key-file", str(other[1])], 3, "does not belong"),
        (["--cert-file", str(expired_cert), "--key-file", str(expired_key)], 3, "expired"),
        (
            ["--cert-file", str(mine[0]), "--key-file", str(mine[1]), "--ca-file", str(other[2])],
            3,
            "does not verify",
        ),
        (["--cert-file", str(mine[0])], 2, "go together"),
        (["--ca-file", str(mine[2])], 2, "--ca-file"),
        (["--regenerate-certs", "--cert-file", str(mine[0]), "--key-file", str(mine[1])], 2, ""),
        (["--setting", "noSuchThing=1"], 2, "noSuchThing"),
        (["--setting", "anonymousPull=maybe"], 2, "anonymousPull"),
        (["--setting", "tokenLifetimeSeconds=5"], 2, "tokenLifetimeSeconds"),
        (["--setting", "novalue"], 2, "KEY=VALUE"),
        (["--external-url", "https://x.example/path"], 2, "path"),
        (["--https-port", "0"], 2, ""),
        (["--http-port", str(server.https_port)], 2, "must differ"),
        ([], 2, "nothing to change"),
        # Everything is checked before anything is applied: a good flag with a bad one.
        (["--log-level", "debug", "--setting", "nope=1"], 2, "nope"),
        (["--regenerate-certs", "--setting", "nope=1"], 2, "nope"),
    ]
    for args, code, words in cases:
        r = wharf("reconfigure", *where, *args)
        assert r.returncode == code, (args, r.returncode, r.stderr)
        assert words in r.stderr, (args, r.stderr)
        assert "PRIVATE KEY" not in r.stdout + r.stderr
    assert server.config_file.read_text() == before_toml
    assert tls.paths(server.data_dir)[0].read_text() == before_cert

    # A replica without wharf.toml takes its options from its command line.
    server.config_file.unlink()
    r = wharf("reconfigure", *where, "--log-level", "debug")
    assert r.returncode == 3 and "command line" in r.stderr


def test_reconfigure_sets_system_settings(tmp_path):
    server = tls_server(tmp_path)
    where = ["--data-dir", str(server.data_dir), "--db", server.db_url]
    try:
        r = wharf(
            "reconfigure",
            *where,
            "--setting",
            "anonymousPull=false",
            "--setting",
            "tokenLifetimeSeconds=600",
        )
        assert r.returncode == 0, r.stderr
        assert "anonymousPull = false" in r.stdout
        # Other processes see a change within about a second (the access epoch's poll).
        deadline = time.monotonic() + 5
        with server.client() as c:
            settings = c.get("/api/v0/meta/settings").json()
            while settings["anonymousPull"] and time.monotonic() < deadline:
                time.sleep(0.2)
                settings = c.get("/api/v0/meta/settings").json()
        assert settings["anonymousPull"] is False
        assert settings["tokenLifetimeSeconds"] == 600
    finally:
        server.stop()
