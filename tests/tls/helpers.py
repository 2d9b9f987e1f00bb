"""A `wharf serve` with an HTTPS listener (and a plain one that redirects), the cluster's
certificate in its metadata store, and ways to look at what a client sees."""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests import metadata_db
from tests.conftest import free_port
from wharf import tls
from wharf.config import write_replica_config


def wharf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def record_certificate(db_url: str, material: tls.TLSMaterial) -> None:
    """Make `material` the cluster's certificate, as `wharf install` or `reconfigure` do."""
    from wharf.metadata.identity import IdentityStore
    from wharf.metadata.store import MetadataStore

    store = MetadataStore(db_url)
    try:
        store.migrate()
        tls.save(IdentityStore(store), material)
    finally:
        store.dispose()


def served_fingerprint(port: int, host: str = "127.0.0.1") -> str:
    """SHA-256 of the certificate a new TLS connection is given (not verified)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def trusting(ca_pem: str) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem)


@dataclass
class TLSServer:
    """`wharf serve --config <data-dir>/wharf.toml` with the cluster's certificate: HTTPS,
    and plain HTTP that redirects (unless the configuration says otherwise)."""

    data_dir: Path
    db_url: str
    http_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    workers: int = 1
    config: dict = field(default_factory=dict)  # more keys for wharf.toml
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def config_file(self) -> Path:
        return self.data_dir / "wharf.toml"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def auth(self) -> tuple[str, str]:
        return ("admin", self.admin_password)

    def write_config(self, **changes) -> None:
        cert, key, _ = tls.paths(self.data_dir)
        values = {
            "data_dir": self.data_dir.resolve(),
            "db": self.db_url,
            "http_addr": f"127.0.0.1:{self.http_port}",
            "https_addr": f"127.0.0.1:{self.https_port}",
            "tls_cert": cert,
            "tls_key": key,
            "workers": self.workers,
            **self.config,
            **changes,
        }
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_replica_config(self.data_dir, values)

    def start(self) -> None:
        if not self.config_file.exists():
            self.write_config()
        env = {**os.environ, "WHARF_ADMIN_PASSWORD": self.admin_password}
        self.log_path = self.data_dir.parent / f"wharf-{self.https_port}.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wharf", "serve", "--config", str(self.config_file)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_serving()

    def wait_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"wharf exited early:\n{self.log()}")
            try:
                # /ca is served on the plain listener without a redirect.
                if (
                    httpx.get(f"{self.http_url}/ca", timeout=1).status_code == 200
                    and (self.data_dir / "wharf.pid").exists()  # written once serving
                ):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"wharf did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path else ""

    def ca_pem(self) -> str:
        r = httpx.get(f"{self.http_url}/ca", timeout=10)
        assert r.status_code == 200, r.text
        return r.text

    def client(self, ca_pem: str | None = None, **kwargs) -> httpx.Client:
        return httpx.Client(
            base_url=self.https_url,
            verify=trusting(ca_pem or self.ca_pem()),
            auth=self.auth,
            timeout=30,
            **kwargs,
        )

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tls_server(tmp_path: Path, material: tls.TLSMaterial | None = None, **kwargs) -> TLSServer:
    """A started TLSServer whose cluster holds `material` (a new self-signed one by default);
    the replica's files are written from the store when it starts, and here too, so that the
    test does not depend on who writes them."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700, parents=True)
    db_url = metadata_db.server_db_url(data_dir)
    material = material or tls.self_signed(tls.names_for(None))
    record_certificate(db_url, material)
    tls.write_files(data_dir, material)
    server = TLSServer(data_dir=data_dir, db_url=db_url, **kwargs)
    server.start()
    return server


def expired_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate that expired yesterday, and its key."""
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=30))
        .not_valid_after(now - timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("old.example.com")]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "expired.crt", tmp_path / "expired.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def write_material(directory: Path, material: tls.TLSMaterial) -> tuple[Path, Path, Path]:
    """An operator's files: chain, key, CA (anywhere but a data directory's tls/)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, ca = directory / "chain.pem", directory / "key.pem", directory / "ca.pem"
    cert.write_text(material.cert_pem)
    key.write_text(material.key_pem)
    key.chmod(0o600)
    ca.write_text(material.ca_pem)
    return cert, key, ca
