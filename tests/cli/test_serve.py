"""`wharf serve`: the embedded default, its flags and its refusals."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import WharfServer, free_port, start_server


def wharf(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_version_prints_the_package_version():
    from wharf import __version__

    result = wharf("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_plain_http_on_a_public_address_is_refused_with_exit_2(tmp_path):
    result = wharf("serve", "--data-dir", str(tmp_path), "--http-addr", "0.0.0.0:5999")
    assert result.returncode == 2
    assert "--plain-http" in result.stderr
    assert not (tmp_path / "wharf.db").exists()


def test_https_needs_a_certificate(tmp_path):
    result = wharf("serve", "--data-dir", str(tmp_path), "--https-addr", "127.0.0.1:5998")
    assert result.returncode == 2
    assert "--tls-cert" in result.stderr


def test_bad_worker_count_is_a_usage_error(tmp_path):
    result = wharf("serve", "--data-dir", str(tmp_path), "--workers", "0")
    assert result.returncode == 2
    assert "workers" in result.stderr


def test_generated_admin_password_is_saved_0600_and_works(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "WHARF_ADMIN_PASSWORD"}
    port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wharf",
            "serve",
            "--data-dir",
            str(data),
            "--http-addr",
            f"127.0.0.1:{port}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        saved = data / "admin-password"
        for _ in range(100):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/").status_code == 401:
                    break
            except httpx.HTTPError:
                pass
            subprocess.run(["sleep", "0.1"], check=True)
        password = saved.read_text().strip()
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert (
            httpx.get(f"http://127.0.0.1:{port}/v2/", auth=("admin", password)).status_code == 200
        )
        assert httpx.get(f"http://127.0.0.1:{port}/v2/", auth=("admin", "nope")).status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    # Printed once, at creation.
    assert out.count(password) == 1


def test_default_data_dir_is_wharf_data_in_the_working_directory(tmp_path):
    server = WharfServer(data_dir=tmp_path / "unused", port=free_port(), admin_password="pw-1")
    # Run from tmp_path without --data-dir: the data must land in ./wharf-data.
    env = {**os.environ, "WHARF_ADMIN_PASSWORD": "pw-1"}
    env.pop("WHARF_DATA_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wharf", "serve", "--http-addr", server.host],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{server.url}/v2/", auth=("admin", "pw-1")).status_code == 200:
                    break
            except httpx.HTTPError:
                subprocess.run(["sleep", "0.1"], check=True)
        assert (tmp_path / "wharf-data" / "wharf.db").is_file()
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def tls_files(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_serves_with_hsts_and_plain_http_redirects(tmp_path, tls_files):
    cert, key = tls_files
    http_port, https_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wharf",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--http-addr",
            f"127.0.0.1:{http_port}",
            "--https-addr",
            f"127.0.0.1:{https_port}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env={**os.environ, "WHARF_ADMIN_PASSWORD": "pw-1"},
    )
    try:
        verify = ssl.create_default_context(cafile=str(cert))
        for _ in range(300):
            try:
                r = httpx.get(f"https://127.0.0.1:{https_port}/v2/", verify=verify)
                break
            except httpx.HTTPError:
                subprocess.run(["sleep", "0.1"], check=True)
        with httpx.Client(verify=verify, auth=("admin", "pw-1")) as c:
            r = c.get(f"https://127.0.0.1:{https_port}/v2/")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"].startswith("max-age=")
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
        # With an HTTPS listener, plain HTTP (even on loopback) only redirects to it, unless
        # --plain-http says otherwise; HSTS is on every response.
        plain = httpx.get(f"http://127.0.0.1:{http_port}/v2/", auth=("admin", "pw-1"))
        assert plain.status_code == 308
        assert plain.headers["location"] == f"https://127.0.0.1:{https_port}/v2/"
        assert plain.headers["strict-transport-security"].startswith("max-age=")
        # The CA to trust (the operator's chain's last certificate) is public on both.
        ca = httpx.get(f"http://127.0.0.1:{http_port}/ca")
        assert ca.status_code == 200 and ca.text.strip() == cert.read_text().strip()
    finally:
        proc.terminate()
        proc.wait(20)


def test_several_workers_serve_the_same_registry(tmp_path):
    server = start_server(tmp_path, workers=3)
    try:
        statuses = set()
        for _ in range(30):
            with httpx.Client(auth=server.auth) as c:  # new connection each time
                statuses.add(c.get(f"{server.url}/v2/").status_code)
        assert statuses == {200}
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) >= 3
    finally:
        server.stop()
