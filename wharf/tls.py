"""The cluster's TLS certificate: generated (a self-signed CA and a server certificate signed
by it) or the operator's own, kept in the metadata store so that every replica and every
backup has it, and written by each replica into `<data-dir>/tls/` for its HTTPS listener.

Keys are EC P-256: generating one takes ~0.03 ms against ~25 ms for RSA-2048 (~175 ms for
RSA-3072, its equal in strength), and the signature each TLS handshake costs the server is
~0.05 ms against ~0.3 ms for RSA-2048; every container client (Go's crypto/tls, OpenSSL,
NSS) accepts it.

Private keys are never logged or printed: `TLSMaterial`'s repr leaves them out.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import re
import secrets
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from wharf.config import ConfigError, parse_external_url

if TYPE_CHECKING:
    from wharf.metadata.identity import IdentityStore

CLUSTER_TLS_SETTING = "tls"
TLS_DIR = "tls"
CERT_FILE, KEY_FILE, CA_FILE = "server.crt", "server.key", "ca.crt"
# Certificates are back-dated a little, so that a client whose clock is slightly behind
# accepts a certificate made a moment ago.
_BACKDATE = timedelta(minutes=5)


class TLSError(ValueError):
    """Certificates or keys that cannot be used; the message says what is wrong and what to
    do instead."""


@dataclass(frozen=True)
class TLSMaterial:
    cert_pem: str = field(repr=False)  # the server certificate, then any intermediates
    key_pem: str = field(repr=False)  # the server's private key (unencrypted PKCS8 PEM)
    ca_pem: str = field(repr=False)  # the CA clients should trust (served at /ca)
    self_signed: bool  # Wharf generated the CA

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the leaf certificate's DER."""
        return _fingerprint(self.cert_pem)

    def not_after(self) -> datetime:
        return _leaf(self.cert_pem).not_valid_after_utc

    def __repr__(self) -> str:
        return (
            f"TLSMaterial(fingerprint={self.fingerprint!r}, self_signed={self.self_signed}, "
            f"not_after={self.not_after().isoformat()!r})"
        )


@functools.lru_cache(maxsize=16)
def _leaf(cert_pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(cert_pem.encode())


@functools.lru_cache(maxsize=16)
def _fingerprint(cert_pem: str) -> str:
    return _leaf(cert_pem).fingerprint(hashes.SHA256()).hex()


def leaf_fingerprint(chain_pem: str) -> str | None:
    """SHA-256 (hex) of the first certificate of a PEM chain; None when it holds none."""
    try:
        return _fingerprint(chain_pem)
    except ValueError:
        return None


def certificate_names(chain_pem: str) -> list[str]:
    """The DNS names and IP addresses the first certificate of a PEM chain is valid for
    (its subjectAltName); empty when it has none or the chain holds no certificate."""
    try:
        san = _leaf(chain_pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    names = [str(n).lower() for n in san.value.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)]


def last_certificate(chain_pem: str) -> str | None:
    """The last certificate of a PEM chain (the one closest to its root), as PEM."""
    try:
        certs = x509.load_pem_x509_certificates(chain_pem.encode())
    except ValueError:
        return None
    return _pem(certs[-1]) if certs else None


# -- names -------------------------------------------------------------------------------

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")  # matched whole


def check_name(name: str) -> str:
    """A DNS name (optionally with a leading `*.` label) or an IP address, normalised
    (lower case, IPv6 compressed); TLSError otherwise."""
    name = name.strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    labels = name.rstrip(".").split(".")
    if labels and labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise TLSError(
            f"{name!r} is not a valid DNS name or IP address for a certificate (letters, "
            "digits and hyphens in dot-separated labels, or an IPv4/IPv6 address)"
        )
    return name.rstrip(".")


def names_for(external_url: str | None, extra: Iterable[str] = ()) -> list[str]:
    """The names a generated certificate is valid for: the external URL's host first, then
    `extra`, localhost, 127.0.0.1, ::1 and this machine's hostname (when it is a valid DNS
    name). TLSError on a bad URL or name."""
    names: list[str] = []
    if external_url:
        try:
            url = parse_external_url(external_url)
        except ConfigError as e:
            raise TLSError(str(e)) from None
        names.append(check_name(urlsplit(url).hostname or ""))
    names.extend(check_name(n) for n in extra)
    names.extend(["localhost", "127.0.0.1", "::1"])
    with contextlib.suppress(TLSError):
        names.append(check_name(socket.gethostname()))
    return list(dict.fromkeys(names))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


# -- generation --------------------------------------------------------------------------


def self_signed(names: list[str], days: int = 825) -> TLSMaterial:
    """A new CA (CA:TRUE, pathlen 0, keyCertSign) and a server certificate it signed for
    `names` (serverAuth). The CA's key is discarded: rotating makes a new CA. 825 days is
    the longest validity Apple's clients accept for a server certificate."""
    if not names:
        raise TLSError("a certificate needs at least one name")
    names = [check_name(n) for n in names]
    if not 1 <= days <= 3650:
        raise TLSError("a certificate's validity must be between 1 and 3650 days")
    now = datetime.now(UTC)
    not_before, not_after = now - _BACKDATE, now + timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Wharf"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Wharf CA {secrets.token_hex(4)}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    common = names[0] if len(names[0]) <= 64 else "wharf"
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return TLSMaterial(
        cert_pem=_pem(leaf),
        key_pem=_key_pem(key),
        ca_pem=_pem(ca),
        self_signed=True,
    )


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


# -- the operator's own ------------------------------------------------------------------


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read the {what} {path}: {e.strerror or e}") from None


def _certificates(data: bytes, path: Path, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TLSError(f"{path} holds no PEM certificate (the {what} must be PEM-encoded)")
    return certs


def from_files(cert_file: Path, key_file: Path, ca_file: Path | None) -> TLSMaterial:
    """The operator's certificate: `cert_file` holds the server certificate and any
    intermediates, `key_file` its private key, `ca_file` (optional) the CA clients trust.
    Checks that the key matches the certificate, that the certificate is valid now, and
    that the chain verifies to the CA; without a CA file, the last certificate of the chain
    is taken as the CA."""
    chain = _certificates(_read(cert_file, "certificate"), cert_file, "certificate")
    key_data = _read(key_file, "private key")
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise TLSError(
            f"the private key in {key_file} is encrypted: give it unencrypted (for example "
            f"`openssl pkey -in {key_file} -out plain.key`; keep that file private)"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:  # malformed, or an unsupported kind
        raise TLSError(f"{key_file} holds no usable PEM private key ({type(e).__name__})") from None
    leaf = chain[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise TLSError(
            f"the private key in {key_file} does not belong to the certificate in {cert_file} "
            "(the first certificate of the file must be the server's own, and the key its key)"
        )
    now = datetime.now(UTC)
    if leaf.not_valid_after_utc <= now:
        raise TLSError(
            f"the certificate in {cert_file} expired on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC: renew it, or use "
            "--regenerate-certs for a self-signed one"
        )
    if leaf.not_valid_before_utc > now:
        raise TLSError(
            f"the certificate in {cert_file} is not valid before "
            f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check this machine's clock)"
        )
    if ca_file is not None:
        cas = _certificates(_read(ca_file, "CA certificate"), ca_file, "CA certificate")
    else:
        cas = [chain[-1]]
    material = TLSMaterial(
        cert_pem="".join(_pem(c) for c in chain),
        key_pem=_key_pem(key),
        ca_pem="".join(_pem(c) for c in cas),
        self_signed=False,
    )
    problem = _handshake_problem(material)
    if problem:
        source = f"the CA in {ca_file}" if ca_file else f"the last certificate of {cert_file}"
        raise TLSError(
            f"the certificate chain in {cert_file} does not verify against {source}: "
            f"{problem}. Give the CA that issued it with --ca-file (and any intermediates "
            "after the server certificate in the certificate file)"
        )
    return material


def _handshake_problem(material: TLSMaterial) -> str | None:
    """Why a client trusting `material.ca_pem` would refuse the chain, found by a TLS
    handshake in memory (OpenSSL's own verification, as clients do it); None when it
    succeeds. Host names are not checked here: the certificate names the operator's."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _private_files(material) as (cert, key):
        try:
            server_ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            return f"OpenSSL cannot use it ({e.reason or e})"
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    # The CA may be an intermediate (a chain file without its root, as most public CAs
    # hand them out): trusting it is what the operator asks for.
    client_ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        client_ctx.load_verify_locations(cadata=material.ca_pem)
    except ssl.SSLError as e:
        return f"the CA is not usable ({e.reason or e})"
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client), ("server", server)):
            if done[name]:
                continue
            try:
                side.do_handshake()
                done[name] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as e:
                return e.verify_message or str(e)
            except ssl.SSLError as e:
                if name == "client":
                    return e.reason or str(e)
                done[name] = True  # the server sees the client's alert; the client says why
        if c_out.pending:
            s_in.write(c_out.read())
        if s_out.pending:
            c_in.write(s_out.read())
        if all(done.values()):
            return None
    return "the TLS handshake did not complete"


@contextlib.contextmanager
def _private_files(material: TLSMaterial):
    """The chain and key in temporary files (mode 0600, removed after), for `ssl`, which
    loads certificates only from files."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wharf-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        cert.write_text(material.cert_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(material.key_pem)
        yield str(cert), str(key)


# -- the cluster record and the replica's files ------------------------------------------


def save(identities: IdentityStore, material: TLSMaterial) -> None:
    """Make `material` the cluster's certificate. Running replicas switch to it within a
    few seconds, without a restart."""
    identities.set_setting(
        CLUSTER_TLS_SETTING,
        {
            "cert": material.cert_pem,
            "key": material.key_pem,
            "ca": material.ca_pem,
            "selfSigned": material.self_signed,
            "fingerprint": material.fingerprint,
        },
    )


def load(identities: IdentityStore) -> TLSMaterial | None:
    """The cluster's certificate, or None when it has none."""
    record = identities.get_setting(CLUSTER_TLS_SETTING)
    return None if record is None else _from_record(record)


def _from_record(record: Any) -> TLSMaterial:
    try:
        return TLSMaterial(
            cert_pem=record["cert"],
            key_pem=record["key"],
            ca_pem=record["ca"],
            self_signed=bool(record["selfSigned"]),
        )
    except (KeyError, TypeError):
        raise TLSError(
            f"the cluster's TLS record ({CLUSTER_TLS_SETTING!r} in the settings) is damaged: "
            "replace it with `wharf reconfigure --regenerate-certs` or --cert-file/--key-file"
        ) from None


def recorded_fingerprint(identities: IdentityStore) -> str | None:
    """The fingerprint of the cluster's certificate (cheap: no certificate is parsed)."""
    record = identities.get_setting(CLUSTER_TLS_SETTING)
    if record is None:
        return None
    if isinstance(record, dict) and isinstance(record.get("fingerprint"), str):
        return record["fingerprint"]
    return _from_record(record).fingerprint


def paths(data_dir: Path) -> tuple[Path, Path, Path]:
    """Where a replica keeps the cluster's certificate: (chain, key, CA)."""
    tls = data_dir / TLS_DIR
    return tls / CERT_FILE, tls / KEY_FILE, tls / CA_FILE


def write_files(data_dir: Path, material: TLSMaterial) -> tuple[Path, Path, Path]:
    """Write the material to <data-dir>/tls/ (directory 0700, key 0600), each file
    atomically. The CA goes first and the chain last, so a reader that sees the new chain
    also sees its CA. Returns (chain, key, CA)."""
    cert, key, ca = paths(data_dir)
    cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(cert.parent, 0o700)
    _write_atomic(ca, material.ca_pem, 0o644)
    _write_atomic(key, material.key_pem, 0o600)
    _write_atomic(cert, material.cert_pem, 0o644)
    with contextlib.suppress(OSError):  # make the renames durable
        fd = os.open(cert.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return cert, key, ca


def _write_atomic(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _holds(data_dir: Path, material: TLSMaterial) -> bool:
    try:
        return tuple(p.read_text() for p in paths(data_dir)) == (
            material.cert_pem,
            material.key_pem,
            material.ca_pem,
        )
    except OSError:
        return False


def sync_files(data_dir: Path, identities: IdentityStore) -> TLSMaterial | None:
    """Bring <data-dir>/tls/ up to date with the cluster's certificate (written only when
    the files do not already hold it); returns it, or None when the cluster has none."""
    material = load(identities)
    if material is not None and not _holds(data_dir, material):
        write_files(data_dir, material)
    return material
