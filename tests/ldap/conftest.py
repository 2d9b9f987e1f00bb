"""A real OpenLDAP `slapd` for the LDAP tests, started once per session.

slapd runs in the foreground (`-d 0`) from a generated `slapd.conf` in a temp dir (mdb backend,
suffix dc=wharf,dc=test), listening on ldap:// (StartTLS available) and ldaps:// on free
127.0.0.1 ports, with a throwaway CA. The seed data is loaded offline with `slapadd`. Installed
by `scripts/install-test-deps`; a missing slapd is a failure, not a skip.

Directory layout:
    dc=wharf,dc=test
        cn=admin            rootdn (not an entry)          -> slapd.bind_dn / bind_password
        cn=wharf-svc        read-only service account      -> used by `ldap_config`
        cn=limited-svc      the same without `limits` (same password as wharf-svc)
        ou=people           alice, bob, carol (inetOrgPerson)
        ou=groups           cn=developers (alice, bob), cn=ops (carol), cn=big (all bulk users)
        ou=bulk             BULK_USERS users bulk0000..  (paging beyond slapd's sizelimit 500)
        ou=robots           robot1: an inetOrgPerson outside ou=people, member of developers
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE

from wharf.auth.ldap import LdapConfig

SUFFIX = "dc=wharf,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
SERVICE_DN = f"cn=wharf-svc,{SUFFIX}"
LIMITED_DN = f"cn=limited-svc,{SUFFIX}"  # like SERVICE_DN, but subject to slapd's sizelimit
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
BULK = f"ou=bulk,{SUFFIX}"
ROBOTS = f"ou=robots,{SUFFIX}"
BULK_USERS = 1234  # > 2 pages of 500, and more than slapd's default sizelimit (500)

SEED_USERS = {
    "alice": ("alice-pw", "Alice Liddell"),
    "bob": ("bob-pw", "Bob Builder"),
    "carol": ("carol-pw", "Carol Danvers"),
}
SEED_GROUPS = {"developers": ["alice", "bob"], "ops": ["carol"]}

STARTUP_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} userPassword value."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        pytest.fail(f"{name} is not installed; run scripts/install-test-deps")
    return path


def user_dn(uid: str, base: str = PEOPLE) -> str:
    return f"uid={uid},{base}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


@dataclass
class Slapd:
    """A running slapd plus helpers that write to it as the rootdn."""

    url: str
    ldaps_url: str
    bind_dn: str
    bind_password: str = field(repr=False)
    service_dn: str
    service_password: str = field(repr=False)
    limited_dn: str
    ca_file: str
    work_dir: Path
    proc: subprocess.Popen
    startup_seconds: float
    base: str = SUFFIX
    people_base: str = PEOPLE
    groups_base: str = GROUPS
    bulk_base: str = BULK
    robots_base: str = ROBOTS
    # uids added by add_user and not yet deleted (tests compare full user lists against these)
    extra_uids: set[str] = field(default_factory=set)
    bulk_users: int = BULK_USERS

    # Helpers for tests (which should not import this conftest: it is loaded by pytest).
    user_dn = staticmethod(user_dn)
    group_dn = staticmethod(group_dn)
    ssha = staticmethod(ssha)
    free_port = staticmethod(free_port)

    def admin(self) -> ldap3.Connection:
        server = ldap3.Server(self.url, get_info=ldap3.NONE, connect_timeout=5)
        return ldap3.Connection(
            server,
            self.bind_dn,
            self.bind_password,
            auto_bind=True,
            receive_timeout=10,
            raise_exceptions=True,
        )

    def add_user(self, uid: str, password: str, cn: str) -> str:
        with self.admin() as conn:
            conn.add(
                user_dn(uid),
                ["inetOrgPerson"],
                {"uid": uid, "cn": cn, "sn": cn.split()[-1], "userPassword": ssha(password)},
            )
        self.extra_uids.add(uid)
        return user_dn(uid)

    def delete_user(self, uid: str) -> None:
        """Remove the user and their group memberships."""
        dn = user_dn(uid)
        with self.admin() as conn:
            conn.search(GROUPS, f"(member={dn})", attributes=["1.1"])
            for entry in list(conn.response):
                conn.modify(entry["dn"], {"member": [(MODIFY_DELETE, [dn])]})
            conn.delete(dn)
        self.extra_uids.discard(uid)

    def set_password(self, uid: str, password: str) -> None:
        with self.admin() as conn:
            conn.modify(user_dn(uid), {"userPassword": [(MODIFY_REPLACE, [ssha(password)])]})

    def add_to_group(self, group_cn: str, uid: str) -> None:
        with self.admin() as conn:
            conn.modify(group_dn(group_cn), {"member": [(MODIFY_ADD, [user_dn(uid)])]})

    def remove_from_group(self, group_cn: str, uid: str) -> None:
        with self.admin() as conn:
            conn.modify(group_dn(group_cn), {"member": [(MODIFY_DELETE, [user_dn(uid)])]})


def _make_tls(work: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for IP 127.0.0.1 only (not "localhost")."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wharf test LDAP CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = work / "ca.pem", work / "server.pem", work / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


def _slapd_conf(work: Path, root_password: str, tls: tuple[Path, Path, Path]) -> str:
    ca_file, cert_file, key_file = tls
    schema = Path("/etc/ldap/schema")
    return f"""\
include {schema / "core.schema"}
include {schema / "cosine.schema"}
include {schema / "inetorgperson.schema"}

pidfile {work / "slapd.pid"}
argsfile {work / "slapd.args"}
modulepath /usr/lib/ldap
moduleload back_mdb

TLSCACertificateFile {ca_file}
TLSCertificateFile {cert_file}
TLSCertificateKeyFile {key_file}

database mdb
maxsize 268435456
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ssha(root_password)}
directory {work / "db"}
dbnosync
index objectClass eq
index uid,cn eq,sub
index member eq

# What an admin does for a directory-sync account: slapd otherwise caps even paged searches
# at its default sizelimit (500 entries). LIMITED_DN keeps the default (tests the error).
limits dn.exact="{SERVICE_DN}" size.prtotal=unlimited

access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by dn.exact="{SERVICE_DN}" read
    by dn.exact="{LIMITED_DN}" read
    by self read
    by * none
"""


def _ldif(entries: list[dict[str, str | list[str]]]) -> str:
    out = []
    for entry in entries:
        lines = []
        for key, value in entry.items():
            for v in value if isinstance(value, list) else [value]:
                lines.append(f"{key}: {v}")
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _seed(service_password: str) -> str:
    entries: list[dict[str, str | list[str]]] = [
        {"dn": SUFFIX, "objectClass": ["dcObject", "organization"], "dc": "wharf", "o": "Wharf"},
        {
            "dn": SERVICE_DN,
            "objectClass": ["organizationalRole", "simpleSecurityObject"],
            "cn": "wharf-svc",
            "userPassword": ssha(service_password),
        },
        {
            "dn": LIMITED_DN,
            "objectClass": ["organizationalRole", "simpleSecurityObject"],
            "cn": "limited-svc",
            "userPassword": ssha(service_password),
        },
    ]
    for ou in ("people", "groups", "bulk", "robots"):
        entries.append({"dn": f"ou={ou},{SUFFIX}", "objectClass": "organizationalUnit", "ou": ou})
    for uid, (password, cn) in SEED_USERS.items():
        entries.append(
            {
                "dn": user_dn(uid),
                "objectClass": "inetOrgPerson",
                "uid": uid,
                "cn": cn,
                "sn": cn.split()[-1],
                "userPassword": ssha(password),
            }
        )
    entries.append(
        {
            "dn": user_dn("robot1", ROBOTS),
            "objectClass": "inetOrgPerson",
            "uid": "robot1",
            "cn": "Robot One",
            "sn": "One",
            "userPassword": ssha("robot1-pw"),
        }
    )
    bulk = [f"bulk{i:04d}" for i in range(BULK_USERS)]
    for uid in bulk:
        entries.append(
            {
                "dn": user_dn(uid, BULK),
                "objectClass": "inetOrgPerson",
                "uid": uid,
                "cn": f"Bulk {uid}",
                "sn": uid,
            }
        )
    members = {cn: [user_dn(u) for u in uids] for cn, uids in SEED_GROUPS.items()}
    members["developers"].append(user_dn("robot1", ROBOTS))  # outside ou=people: not a user
    members["big"] = [user_dn(u, BULK) for u in bulk]
    for cn, dns in members.items():
        entries.append({"dn": group_dn(cn), "objectClass": "groupOfNames", "cn": cn, "member": dns})
    return _ldif(entries)


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            pytest.fail(f"slapd exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
        # A fresh Server each time: after a refused connection ldap3 marks the address
        # unavailable and fails further attempts ("invalid server address") for 5 s.
        server = ldap3.Server(url, get_info=ldap3.NONE, connect_timeout=1)
        try:
            conn = ldap3.Connection(server, receive_timeout=1)  # anonymous
            if conn.bind():
                conn.unbind()
                return
        except ldap3.core.exceptions.LDAPException:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"slapd did not answer on {url}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    slapd_bin = require_tool("slapd")
    slapadd_bin = require_tool("slapadd")
    started = time.monotonic()
    work = tmp_path_factory.mktemp("slapd")
    (work / "db").mkdir()
    root_password = secrets.token_urlsafe(12)
    service_password = secrets.token_urlsafe(12)
    tls = _make_tls(work)
    conf = work / "slapd.conf"
    conf.write_text(_slapd_conf(work, root_password, tls))
    seed = work / "seed.ldif"
    seed.write_text(_seed(service_password))
    load = subprocess.run(
        [slapadd_bin, "-q", "-f", str(conf), "-l", str(seed)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if load.returncode != 0:
        pytest.fail(f"slapadd failed ({load.returncode}):\n{load.stdout}\n{load.stderr}")

    port, tls_port = free_port(), free_port()
    url, ldaps_url = f"ldap://127.0.0.1:{port}", f"ldaps://127.0.0.1:{tls_port}"
    log_path = work / "slapd.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [slapd_bin, "-d", "0", "-f", str(conf), "-h", f"{url}/ {ldaps_url}/"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LDAPNOINIT": "1"},
        )
    try:
        _wait_ready(proc, url, log_path, time.monotonic() + STARTUP_DEADLINE)
        yield Slapd(
            url=url,
            ldaps_url=ldaps_url,
            bind_dn=ROOT_DN,
            bind_password=root_password,
            service_dn=SERVICE_DN,
            service_password=service_password,
            limited_dn=LIMITED_DN,
            ca_file=str(tls[0]),
            work_dir=work,
            proc=proc,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def ldap_config(slapd: Slapd) -> LdapConfig:
    """Settings for the test slapd, searching ou=people with the read-only service account."""
    return LdapConfig(
        url=slapd.url,
        bind_dn=slapd.service_dn,
        bind_password=slapd.service_password,
        user_search_base=slapd.people_base,
        timeout=5.0,
    )
