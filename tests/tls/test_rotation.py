"""Certificates change without a restart: the cluster's (from the metadata store, written to
every replica's tls/) and an operator's own files (read, never written)."""

from __future__ import annotations

import socket
import time

from tests.tls.helpers import (
    TLSServer,
    record_certificate,
    served_fingerprint,
    tls_server,
    trusting,
    wharf,
    write_material,
)
from wharf import tls


def wait_for_fingerprint(port: int, expected: str, timeout: float = 20) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if served_fingerprint(port) == expected:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"still serving {served_fingerprint(port)}, not {expected}")


def test_a_new_cluster_certificate_is_served_without_a_restart(tmp_path):
    first = tls.self_signed(tls.names_for(None))
    server = tls_server(tmp_path, first, workers=2)
    try:
        pid = server.proc.pid
        assert served_fingerprint(server.https_port) == first.fingerprint
        with server.client(first.ca_pem) as kept:  # a connection open across the change
            assert kept.get("/v2/").status_code == 200

            second = tls.self_signed(tls.names_for(None))
            record_certificate(server.db_url, second)
            wait_for_fingerprint(server.https_port, second.fingerprint)
            # Every worker switches (each on its own poll): soon new connections all get the
            # new certificate.
            deadline = time.monotonic() + 20
            seen = {served_fingerprint(server.https_port) for _ in range(12)}
            while seen != {second.fingerprint} and time.monotonic() < deadline:
                time.sleep(0.2)
                seen = {served_fingerprint(server.https_port) for _ in range(12)}
            assert seen == {second.fingerprint}
            assert kept.get("/v2/").status_code == 200  # not dropped
        assert server.proc.pid == pid and server.proc.poll() is None
        # The replica's files and /ca follow.
        cert, key, ca = tls.paths(server.data_dir)
        assert ca.read_text() == second.ca_pem
        assert cert.read_text() == second.cert_pem and key.read_text() == second.key_pem
        deadline = time.monotonic() + 5
        while server.ca_pem() != second.ca_pem and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.ca_pem() == second.ca_pem
        with server.client(second.ca_pem) as c:
            assert c.get("/v2/").status_code == 200
    finally:
        server.stop()


def test_operator_files_are_reloaded_when_they_change_and_never_written(tmp_path):
    first = tls.self_signed(["localhost", "127.0.0.1"])
    own = tmp_path / "operator"
    cert, key, _ = write_material(own, first)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    from tests import metadata_db

    db_url = metadata_db.server_db_url(data_dir)
    # The cluster has a certificate too: a replica given its own files does not use it.
    cluster = tls.self_signed(["localhost"])
    record_certificate(db_url, cluster)
    server = TLSServer(data_dir, db_url, config={"tls_cert": cert, "tls_key": key})
    server.start()
    try:
        pid = server.proc.pid
        assert served_fingerprint(server.https_port) == first.fingerprint
        # Without a CA file, the last certificate of the chain is the one to trust.
        assert server.ca_pem() == first.cert_pem

        second = tls.self_signed(["localhost", "127.0.0.1"])
        # A half-done replacement (new certificate, old key) is not loaded...
        cert.write_text(second.cert_pem)
        time.sleep(3)
        assert served_fingerprint(server.https_port) == first.fingerprint
        # ...and once the key follows, the pair is.
        key.write_text(second.key_pem)
        wait_for_fingerprint(server.https_port, second.fingerprint)
        assert server.proc.pid == pid
        assert cert.read_text() == second.cert_pem and key.read_text() == second.key_pem
        time.sleep(2.5)  # the cluster's record is never applied to the operator's files
        assert served_fingerprint(server.https_port) == second.fingerprint
        assert cert.read_text() == second.cert_pem
    finally:
        server.stop()


def test_reconfigure_installs_an_operator_certificate_and_regenerates(tmp_path):
    server = tls_server(tmp_path, config={"external_url": "https://registry.example.com"})
    where = ["--data-dir", str(server.data_dir), "--db", server.db_url]
    try:
        pid = server.proc.pid
        theirs = tls.self_signed(["localhost", "127.0.0.1", "registry.example.com"])
        cert, key, ca = write_material(tmp_path / "theirs", theirs)
        r = wharf(
            "reconfigure",
            *where,
            "--cert-file",
            str(cert),
            "--key-file",
            str(key),
            "--ca-file",
            str(ca),
        )
        assert r.returncode == 0, r.stderr
        assert theirs.fingerprint in r.stdout and "without a restart" in r.stdout
        assert "PRIVATE KEY" not in r.stdout + r.stderr
        wait_for_fingerprint(server.https_port, theirs.fingerprint)
        deadline = time.monotonic() + 5
        while server.ca_pem() != theirs.ca_pem and time.monotonic() < deadline:
            time.sleep(0.2)
        assert server.ca_pem() == theirs.ca_pem

        r = wharf("reconfigure", *where, "--regenerate-certs")
        assert r.returncode == 0, r.stderr
        fingerprint = r.stdout.split("certificate is now ")[1].split()[0]
        wait_for_fingerprint(server.https_port, fingerprint)
        deadline = time.monotonic() + 5
        while server.ca_pem() == theirs.ca_pem and time.monotonic() < deadline:
            time.sleep(0.2)
        new_ca = server.ca_pem()
        # Made for the external URL's name (a client that resolves it to this replica).
        with (
            socket.create_connection(("127.0.0.1", server.https_port)) as raw,
            trusting(new_ca).wrap_socket(raw, server_hostname="registry.example.com") as conn,
        ):
            assert conn.version()
        assert server.proc.pid == pid
    finally:
        server.stop()
