"""The certificates Wharf makes and the operator's own it accepts (wharf/tls.py): no server,
no metadata store."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import subprocess
import threading

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.tls.helpers import expired_certificate, write_material
from wharf import tls
from wharf.config import ConfigError, load_settings

pytestmark = pytest.mark.once


def handshake(material: tls.TLSMaterial, server_hostname: str, tmp_path) -> dict:
    """A real TLS handshake over a socket pair: the server serves `material`, the client
    trusts only its CA and checks the host name. Returns the client's view of the peer."""
    cert, key, _ = write_material(tmp_path / "hs", material)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cadata=material.ca_pem)
    a, b = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                s.recv(1)
        except (ssl.SSLError, OSError) as e:
            errors.append(e)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=server_hostname) as c:
            peer = c.getpeercert()
            c.sendall(b"x")
    finally:
        thread.join(10)
    return peer


def test_a_generated_certificate_names_the_external_host_and_loopback(tmp_path):
    names = tls.names_for("https://Registry.Example.com:8443", ["10.1.2.3"])
    assert names[:2] == ["registry.example.com", "10.1.2.3"]
    for loopback in ("localhost", "127.0.0.1", "::1"):
        assert loopback in names
    material = tls.self_signed(names)
    leaf = x509.load_pem_x509_certificate(material.cert_pem.encode())
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "registry.example.com" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    assert ipaddress.ip_address("127.0.0.1") in ips
    assert ipaddress.ip_address("::1") in ips
    assert ipaddress.ip_address("10.1.2.3") in ips
    assert material.self_signed
    assert material.fingerprint == leaf.fingerprint(leaf.signature_hash_algorithm).hex()
    assert material.not_after() == leaf.not_valid_after_utc

    # The client checks the chain and the name, as docker or curl would.
    for name in ("registry.example.com", "localhost", "127.0.0.1", "10.1.2.3"):
        assert handshake(material, name, tmp_path)["subjectAltName"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(material, "other.example.com", tmp_path)


def test_the_ca_may_sign_servers_only_and_the_leaf_serves_only(tmp_path):
    material = tls.self_signed(["registry.example.com"])
    ca = x509.load_pem_x509_certificate(material.ca_pem.encode())
    leaf = x509.load_pem_x509_certificate(material.cert_pem.encode())
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    assert leaf.issuer == ca.subject
    leaf_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert not leaf_constraints.ca
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    leaf.verify_directly_issued_by(ca)
    # Each generation is a new CA: the old one does not trust the new certificate.
    again = tls.self_signed(["registry.example.com"])
    assert again.ca_pem != material.ca_pem
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(
            tls.TLSMaterial(again.cert_pem, again.key_pem, material.ca_pem, True),
            "registry.example.com",
            tmp_path,
        )


def test_openssl_agrees_that_the_chain_verifies(tmp_path):
    material = tls.self_signed(tls.names_for("https://registry.example.com"))
    cert, _, ca = write_material(tmp_path, material)
    r = subprocess.run(
        ["openssl", "verify", "-CAfile", str(ca), "-purpose", "sslserver", str(cert)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_private_keys_are_never_in_the_repr():
    material = tls.self_signed(["localhost"])
    assert "PRIVATE" not in repr(material) and "PRIVATE" not in str(material)
    assert material.fingerprint in repr(material)


@pytest.mark.parametrize(
    "url", ["ftp://x.example", "https://x.example/path", "https://u:p@x.example", "https://a_b"]
)
def test_bad_external_urls_are_refused(url):
    with pytest.raises(tls.TLSError):
        tls.names_for(url)
    with pytest.raises(ConfigError) as e:
        load_settings(None, {"external_url": url}, environ={})
    assert "u:p" not in str(e.value)  # credentials are never echoed


@pytest.mark.parametrize("name", ["bad name", "-x.example", "a..b", "x" * 64 + ".example", ""])
def test_bad_names_are_refused(name):
    with pytest.raises(tls.TLSError):
        tls.names_for(None, [name])


def test_external_url_is_normalised():
    s = load_settings(None, {"external_url": "HTTPS://Registry.Example.com:443/"}, environ={})
    assert s.external_url == "https://registry.example.com"


def test_operator_files_are_accepted_with_or_without_a_ca_file(tmp_path):
    material = tls.self_signed(["registry.example.com"])
    cert, key, ca = write_material(tmp_path, material)
    own = tls.from_files(cert, key, ca)
    assert not own.self_signed
    assert own.fingerprint == material.fingerprint
    assert own.ca_pem == material.ca_pem
    # A chain file ending with its CA: that CA is the one clients are given.
    full = tmp_path / "full.pem"
    full.write_text(material.cert_pem + material.ca_pem)
    assert tls.from_files(full, key, None).ca_pem == material.ca_pem


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path):
    cert, _, ca = write_material(tmp_path / "a", tls.self_signed(["a.example"]))
    _, other_key, _ = write_material(tmp_path / "b", tls.self_signed(["a.example"]))
    with pytest.raises(tls.TLSError, match="does not belong to the certificate"):
        tls.from_files(cert, other_key, ca)


def test_an_expired_certificate_is_refused(tmp_path):
    cert, key = expired_certificate(tmp_path)
    with pytest.raises(tls.TLSError, match="expired"):
        tls.from_files(cert, key, None)


def test_a_chain_that_does_not_lead_to_the_ca_is_refused(tmp_path):
    cert, key, _ = write_material(tmp_path / "a", tls.self_signed(["a.example"]))
    _, _, other_ca = write_material(tmp_path / "b", tls.self_signed(["a.example"]))
    with pytest.raises(tls.TLSError, match="does not verify") as e:
        tls.from_files(cert, key, other_ca)
    assert "--ca-file" in str(e.value)


def test_unreadable_or_encrypted_inputs_say_what_is_wrong(tmp_path):
    from cryptography.hazmat.primitives import serialization

    material = tls.self_signed(["a.example"])
    cert, key, ca = write_material(tmp_path, material)
    with pytest.raises(tls.TLSError, match="no PEM certificate"):
        tls.from_files(key, key, None)
    with pytest.raises(tls.TLSError, match="no usable PEM private key"):
        tls.from_files(cert, ca, None)
    private = serialization.load_pem_private_key(material.key_pem.encode(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(tls.TLSError, match="encrypted"):
        tls.from_files(cert, encrypted, ca)
    with pytest.raises(tls.TLSError, match="cannot read"):
        tls.from_files(tmp_path / "missing.pem", key, None)


def test_files_are_written_private_and_atomically(tmp_path):
    material = tls.self_signed(["a.example"])
    cert, key, ca = tls.write_files(tmp_path, material)
    assert (cert, key, ca) == tls.paths(tmp_path)
    assert stat.S_IMODE(cert.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (cert.read_text(), key.read_text(), ca.read_text()) == (
        material.cert_pem,
        material.key_pem,
        material.ca_pem,
    )
    assert sorted(p.name for p in cert.parent.iterdir()) == ["ca.crt", "server.crt", "server.key"]


def test_a_redirect_only_listener_may_bind_any_address(tmp_path):
    material = tls.self_signed(["a.example"])
    cert, key, _ = write_material(tmp_path, material)
    https = {"https_addr": "0.0.0.0:443", "tls_cert": cert, "tls_key": key}
    load_settings(None, {"http_addr": "0.0.0.0:80", **https}, environ={}).check()
    with pytest.raises(ConfigError, match="--plain-http"):
        load_settings(None, {"http_addr": "0.0.0.0:80"}, environ={}).check()
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(None, {"http_addr": "0.0.0.0:443", **https}, environ={}).check()
    # The cluster's own files need not exist yet: the replica writes them when it starts.
    managed = load_settings(
        None,
        {
            "data_dir": tmp_path / "d",
            "https_addr": "127.0.0.1:8443",
            "tls_cert": tmp_path / "d" / "tls" / "server.crt",
            "tls_key": tmp_path / "d" / "tls" / "server.key",
        },
        environ={},
    )
    assert managed.tls_managed and managed.redirect_http
    managed.check()
