"""LdapDirectory and LdapConfig against a real OpenLDAP slapd (see conftest.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from wharf.auth.ldap import LdapConfig, LdapDirectory, LdapError, LdapUser

SEEDED = {"alice", "bob", "carol"}


@pytest.fixture
def directory(ldap_config: LdapConfig) -> LdapDirectory:
    return LdapDirectory(ldap_config)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the probe socket is closed


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


# -- LdapConfig ----------------------------------------------------------------------------------

FULL = {
    "url": "ldaps://ldap.example.com:636",
    "bindDN": "cn=svc,dc=example,dc=com",
    "bindPassword": "s3cret-bind-pw",
    "userSearchBase": "ou=people,dc=example,dc=com",
    "userFilter": "(&(objectClass=user)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))",
    "usernameAttr": "sAMAccountName",
    "fullNameAttr": "displayName",
    "groupMemberAttr": "uniqueMember",
    "startTLS": False,
    "caFile": "/etc/ssl/certs/corp-ca.pem",
    "timeout": 3.5,
}


def test_config_round_trip() -> None:
    config = LdapConfig.from_dict(FULL)
    assert config.username_attr == "sAMAccountName"
    assert config.fullname_attr == "displayName"
    assert config.group_member_attr == "uniqueMember"
    assert config.ca_file == "/etc/ssl/certs/corp-ca.pem"
    assert config.to_dict(include_secret=True) == FULL
    assert LdapConfig.from_dict(config.to_dict(include_secret=True)) == config


def test_config_defaults_and_public_dict() -> None:
    config = LdapConfig.from_dict(
        {"url": "ldap://h", "bindDN": "cn=a", "bindPassword": "pw", "userSearchBase": "dc=x"}
    )
    assert config == LdapConfig("ldap://h", "cn=a", "pw", "dc=x")
    assert (config.user_filter, config.username_attr, config.fullname_attr) == (
        "(objectClass=inetOrgPerson)",
        "uid",
        "cn",
    )
    assert config.group_member_attr == "member"
    assert config.start_tls is False and config.ca_file is None and config.timeout == 10.0
    public = config.to_dict()
    assert "bindPassword" not in public
    assert public["url"] == "ldap://h" and public["startTLS"] is False and public["caFile"] is None


def test_config_int_timeout_and_null_optionals() -> None:
    config = LdapConfig.from_dict({**FULL, "timeout": 2, "caFile": None, "userFilter": None})
    assert config.timeout == 2.0 and isinstance(config.timeout, float)
    assert config.ca_file is None
    assert config.user_filter == "(objectClass=inetOrgPerson)"


def test_config_repr_hides_password() -> None:
    config = LdapConfig.from_dict(FULL)
    assert "s3cret-bind-pw" not in repr(config)
    assert "s3cret-bind-pw" not in str(config)
    assert "s3cret-bind-pw" not in repr(LdapDirectory(config))
    assert "s3cret-bind-pw" not in str(config.to_dict())


@pytest.mark.parametrize("key", ["url", "bindDN", "bindPassword", "userSearchBase"])
def test_config_missing_required(key: str) -> None:
    with pytest.raises(ValueError, match=f"missing LDAP setting.*{key}"):
        LdapConfig.from_dict({k: v for k, v in FULL.items() if k != key})
    with pytest.raises(ValueError, match=key):
        LdapConfig.from_dict({**FULL, key: ""})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "http://ldap.example.com"}, "must start with ldap:// or ldaps://"),
        ({"url": "ldap.example.com:389"}, "must start with ldap:// or ldaps://"),
        ({"url": "ldap://"}, r"ldap\[s\]://host\[:port\]"),
        ({"url": "ldap://h:99999"}, "invalid LDAP url"),
        ({"url": "ldap://h/dc=x?uid"}, r"ldap\[s\]://host\[:port\]"),
        ({"url": 389}, "url"),
        ({"startTLS": True}, "cannot be combined with an ldaps://"),
        ({"startTLS": "yes"}, "start_tls"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"caFile": ""}, "ca_file"),
        ({"usernameAttr": "uid)(uid=*"}, "username_attr"),
        ({"fullNameAttr": ""}, "fullname_attr"),
        ({"groupMemberAttr": "member;x"}, "group_member_attr"),
        ({"userSearchBase": "people"}, "user_search_base must be a DN"),
        ({"userSearchBase": "ou=people,"}, "user_search_base must be a DN"),
        ({"userFilter": "objectClass=person"}, "user_filter"),
        ({"userFilter": "(objectClass=person)(uid=*)"}, "user_filter"),
        ({"userFilter": "(&(objectClass=person)"}, "user_filter"),
        ({"userFilter": "(uid~~x)"}, "user_filter"),
        ({"bindDn": "cn=typo"}, "unknown LDAP setting.*bindDn"),
    ],
)
def test_config_invalid(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as exc:
        LdapConfig.from_dict({**FULL, **changes})
    assert "s3cret-bind-pw" not in str(exc.value)


def test_config_not_a_dict() -> None:
    with pytest.raises(ValueError, match="must be an object"):
        LdapConfig.from_dict(["url"])  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    config = LdapConfig.from_dict(FULL)
    with pytest.raises(AttributeError):
        config.url = "ldap://other"  # type: ignore[misc]


# -- authenticate --------------------------------------------------------------------------------


def test_authenticate_success(directory: LdapDirectory, slapd) -> None:
    user = directory.authenticate("alice", "alice-pw")
    assert user == LdapUser(
        username="alice", dn=f"uid=alice,{slapd.people_base}", full_name="Alice Liddell"
    )
    assert directory.authenticate("carol", "carol-pw") == LdapUser(
        "carol", f"uid=carol,{slapd.people_base}", "Carol Danvers"
    )


def test_authenticate_username_case_insensitive(directory: LdapDirectory) -> None:
    for login in ("ALICE", "Alice", " alice "):  # uid's matching rule (caseIgnoreMatch)
        user = directory.authenticate(login, "alice-pw")
        assert user is not None and user.username == "alice"  # as spelt in the directory


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong"),
        ("alice", "bob-pw"),
        ("alice", "ALICE-PW"),
        ("alice", " "),
        ("alice", ""),  # would be an unauthenticated bind, which "succeeds"
        ("", "alice-pw"),
        ("nobody", "whatever"),
        ("nobody", ""),
    ],
)
def test_authenticate_refused(directory: LdapDirectory, username: str, password: str) -> None:
    assert directory.authenticate(username, password) is None


@pytest.mark.parametrize(
    "username",
    [
        "*",
        "a*",
        "*e",
        "alice*",
        "alice)(uid=*",
        "alice)(|(uid=*",
        "*)(uid=*))(|(uid=*",
        "alice\\",
        "alice\x00",
        "(uid=alice)",
        "uid=alice,ou=people,dc=wharf,dc=test",
    ],
)
def test_authenticate_filter_injection(directory: LdapDirectory, username: str) -> None:
    for password in ("alice-pw", "bob-pw", "carol-pw", "x"):
        assert directory.authenticate(username, password) is None


def test_authenticate_overlong_username(directory: LdapDirectory) -> None:
    assert directory.authenticate("a" * 10_000, "alice-pw") is None


def test_authenticate_outside_search_base(directory: LdapDirectory) -> None:
    # robot1 exists (ou=robots), has a password and is in cn=developers, but is not under
    # ou=people.
    assert directory.authenticate("robot1", "robot1-pw") is None


def test_authenticate_respects_user_filter(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, user_filter="(&(objectClass=inetOrgPerson)(!(uid=bob)))")
    directory = LdapDirectory(config)
    assert directory.authenticate("bob", "bob-pw") is None
    assert directory.authenticate("alice", "alice-pw") is not None


def test_authenticate_ambiguous_username(directory: LdapDirectory, slapd) -> None:
    """Two entries with the same username: refuse rather than pick one."""
    dns = [f"uid=twin,{slapd.people_base}", f"cn=twin 2,{slapd.people_base}"]
    with slapd.admin() as conn:
        for dn in dns:
            conn.add(
                dn,
                ["inetOrgPerson"],
                {"uid": "twin", "cn": dn, "sn": "Twin", "userPassword": slapd.ssha("twin-pw")},
            )
    try:
        assert directory.authenticate("twin", "twin-pw") is None
    finally:
        with slapd.admin() as conn:
            for dn in dns:
                conn.delete(dn)


def test_user_added_at_runtime(directory: LdapDirectory, slapd) -> None:
    password = "pä$$ wörd)(*\\"
    dn = slapd.add_user("dave", password, "Dave Lister")
    try:
        assert directory.authenticate("dave", password) == LdapUser("dave", dn, "Dave Lister")
        assert "dave" in {u.username for u in directory.list_users()}

        slapd.set_password("dave", "new-pw")
        assert directory.authenticate("dave", password) is None
        assert directory.authenticate("dave", "new-pw") is not None

        slapd.add_to_group("ops", "dave")
        assert directory.group_members(slapd.group_dn("ops")) == {"carol", "dave"}
    finally:
        slapd.delete_user("dave")
    assert directory.authenticate("dave", "new-pw") is None
    assert directory.group_members(slapd.group_dn("ops")) == {"carol"}


def test_authenticate_concurrently(directory: LdapDirectory) -> None:
    attempts = [("alice", "alice-pw"), ("bob", "bob-pw"), ("carol", "nope"), ("*", "x")] * 10
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda a: directory.authenticate(*a), attempts))
    names = [r.username if r else None for r in results]
    assert names == ["alice", "bob", None, None] * 10


# -- list_users ----------------------------------------------------------------------------------


def test_list_users(directory: LdapDirectory, slapd) -> None:
    users = directory.list_users()
    assert [u.username for u in users] == sorted(SEEDED | slapd.extra_uids)
    by_name = {u.username: u for u in users}
    assert by_name["alice"] == LdapUser("alice", f"uid=alice,{slapd.people_base}", "Alice Liddell")
    assert by_name["bob"].full_name == "Bob Builder"


def test_list_users_pages_past_the_server_size_limit(ldap_config: LdapConfig, slapd) -> None:
    directory = LdapDirectory(replace(ldap_config, user_search_base=slapd.bulk_base))
    users = directory.list_users()
    assert len(users) == slapd.bulk_users  # > 2 pages of 500; > slapd's default sizelimit
    assert users[0] == LdapUser(
        "bulk0000", slapd.user_dn("bulk0000", slapd.bulk_base), "Bulk bulk0000"
    )
    assert len({u.dn for u in users}) == slapd.bulk_users


def test_list_users_size_limit_is_an_error(ldap_config: LdapConfig, slapd) -> None:
    """An account capped by the server's sizelimit gets an error, not a truncated list."""
    config = replace(ldap_config, user_search_base=slapd.bulk_base, bind_dn=slapd.limited_dn)
    with pytest.raises(LdapError, match="size limit") as exc:
        LdapDirectory(config).list_users()
    assert slapd.service_password not in str(exc.value)


def test_list_users_respects_filter(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, user_filter="(|(uid=alice)(cn=Carol*))")
    assert [u.username for u in LdapDirectory(config).list_users()] == ["alice", "carol"]


def test_list_users_unknown_base(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, user_search_base="ou=nowhere,dc=wharf,dc=test")
    with pytest.raises(LdapError, match="noSuchObject"):
        LdapDirectory(config).list_users()


# -- group_members -------------------------------------------------------------------------------


def test_group_members(directory: LdapDirectory, slapd) -> None:
    # cn=developers also lists robot1, which is outside ou=people: skipped.
    assert directory.group_members(slapd.group_dn("developers")) == {"alice", "bob"}
    assert directory.group_members(slapd.group_dn("ops")) == {"carol"}


def test_group_members_dn_spelling(directory: LdapDirectory) -> None:
    assert directory.group_members("CN=Developers, OU=Groups, DC=wharf, DC=test") == {
        "alice",
        "bob",
    }


@pytest.mark.parametrize(
    "dn",
    [
        "cn=nope,ou=groups,dc=wharf,dc=test",
        "cn=developers,ou=nowhere,dc=wharf,dc=test",
        "cn=developers,dc=elsewhere,dc=test",
    ],
)
def test_group_members_unknown_group(directory: LdapDirectory, dn: str) -> None:
    assert directory.group_members(dn) == set()


def test_group_members_of_a_non_group(directory: LdapDirectory, slapd) -> None:
    assert directory.group_members(slapd.user_dn("alice")) == set()
    assert directory.group_members(slapd.people_base) == set()


@pytest.mark.parametrize("dn", ["not a dn", "", "cn=x,"])
def test_group_members_invalid_dn(directory: LdapDirectory, dn: str) -> None:
    with pytest.raises(LdapError, match="invalid LDAP group DN"):
        directory.group_members(dn)


def test_search_base_spelling(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, user_search_base="OU=People, DC=wharf, DC=test")
    directory = LdapDirectory(config)
    directory.check()
    assert [u.username for u in directory.list_users()][:3] == ["alice", "bob", "carol"]
    assert directory.authenticate("bob", "bob-pw") is not None
    assert directory.group_members("cn=developers,ou=groups,dc=wharf,dc=test") == {"alice", "bob"}


def test_group_members_respects_user_filter(ldap_config: LdapConfig, slapd) -> None:
    config = replace(ldap_config, user_filter="(&(objectClass=inetOrgPerson)(!(uid=bob)))")
    assert LdapDirectory(config).group_members(slapd.group_dn("developers")) == {"alice"}


def test_group_members_skips_non_user_entries(directory: LdapDirectory, slapd) -> None:
    """Members under the base that are not users (here a device) or do not exist are skipped."""
    printer = f"cn=printer,{slapd.people_base}"
    ghost = f"uid=ghost,{slapd.people_base}"
    with slapd.admin() as conn:
        conn.add(printer, ["device"], {"cn": "printer"})
        conn.modify(slapd.group_dn("ops"), {"member": [("MODIFY_ADD", [printer, ghost])]})
    try:
        assert directory.group_members(slapd.group_dn("ops")) == {"carol"}
    finally:
        with slapd.admin() as conn:
            conn.modify(slapd.group_dn("ops"), {"member": [("MODIFY_DELETE", [printer, ghost])]})
            conn.delete(printer)


def test_group_members_large_group(ldap_config: LdapConfig, slapd) -> None:
    big = slapd.group_dn("big")  # every bulk user: resolved with one paged search, not 1234 lookups
    bulk = LdapDirectory(replace(ldap_config, user_search_base=slapd.bulk_base))
    started = time.monotonic()
    members = bulk.group_members(big)
    assert members == {f"bulk{i:04d}" for i in range(slapd.bulk_users)}
    assert time.monotonic() - started < 5
    # The same members are all outside ou=people.
    assert LdapDirectory(ldap_config).group_members(big) == set()


def test_group_members_unique_member(ldap_config: LdapConfig, slapd) -> None:
    dn = slapd.group_dn("auditors")
    with slapd.admin() as conn:
        conn.add(
            dn,
            ["groupOfUniqueNames"],
            {"cn": "auditors", "uniqueMember": [slapd.user_dn("alice"), slapd.user_dn("carol")]},
        )
    try:
        config = replace(ldap_config, group_member_attr="uniqueMember")
        assert LdapDirectory(config).group_members(dn) == {"alice", "carol"}
        assert LdapDirectory(ldap_config).group_members(dn) == set()  # no `member` values
    finally:
        with slapd.admin() as conn:
            conn.delete(dn)


# -- check and failures --------------------------------------------------------------------------


def test_check_passes(directory: LdapDirectory) -> None:
    directory.check()


def test_wrong_service_password(ldap_config: LdapConfig, slapd) -> None:
    bad = "Wr0ng-Service-Pa55word"
    directory = LdapDirectory(replace(ldap_config, bind_password=bad))
    with pytest.raises(LdapError, match="invalid credentials") as exc:
        directory.check()
    message = str(exc.value)
    assert slapd.service_dn in message
    assert bad not in message and bad not in repr(exc.value)
    assert exc.value.__cause__ is None and exc.value.__context__ is None
    # Every operation reports it as a directory problem, not as "wrong user password".
    with pytest.raises(LdapError):
        directory.authenticate("alice", "alice-pw")
    with pytest.raises(LdapError):
        directory.list_users()
    with pytest.raises(LdapError):
        directory.group_members(slapd.group_dn("ops"))


def test_check_unknown_bind_dn(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, bind_dn="cn=nobody,dc=wharf,dc=test")
    with pytest.raises(LdapError, match="cn=nobody"):
        LdapDirectory(config).check()


def test_check_unknown_search_base(ldap_config: LdapConfig) -> None:
    config = replace(ldap_config, user_search_base="ou=nowhere,dc=wharf,dc=test")
    with pytest.raises(LdapError, match=r"ou=nowhere.*does not exist"):
        LdapDirectory(config).check()


def test_unreachable_server(ldap_config: LdapConfig, slapd, closed_port: int) -> None:
    config = replace(ldap_config, url=f"ldap://127.0.0.1:{closed_port}", timeout=1.0)
    directory = LdapDirectory(config)
    for call in (
        directory.check,
        directory.list_users,
        lambda: directory.authenticate("alice", "alice-pw"),
        lambda: directory.group_members(slapd.group_dn("ops")),
    ):
        started = time.monotonic()
        with pytest.raises(LdapError, match=str(closed_port)) as exc:
            call()
        assert time.monotonic() - started < 2
        assert config.bind_password not in str(exc.value)


def test_server_that_never_answers_times_out(ldap_config: LdapConfig, silent_port: int) -> None:
    config = replace(ldap_config, url=f"ldap://127.0.0.1:{silent_port}", timeout=1.0)
    started = time.monotonic()
    with pytest.raises(LdapError) as exc:
        LdapDirectory(config).check()
    assert 0.5 < time.monotonic() - started < 5
    assert config.bind_password not in str(exc.value)


# -- TLS -----------------------------------------------------------------------------------------


def test_ldaps(ldap_config: LdapConfig, slapd) -> None:
    directory = LdapDirectory(replace(ldap_config, url=slapd.ldaps_url, ca_file=slapd.ca_file))
    directory.check()
    assert directory.authenticate("alice", "alice-pw") is not None
    assert directory.authenticate("alice", "nope") is None


def test_start_tls(ldap_config: LdapConfig, slapd) -> None:
    directory = LdapDirectory(replace(ldap_config, start_tls=True, ca_file=slapd.ca_file))
    directory.check()
    assert directory.authenticate("bob", "bob-pw") is not None
    assert directory.group_members(slapd.group_dn("developers")) == {"alice", "bob"}


@pytest.mark.parametrize("start_tls", [False, True])
def test_tls_certificate_is_verified(ldap_config: LdapConfig, slapd, start_tls: bool) -> None:
    """Without the test CA (system trust store only) the server's certificate is refused."""
    url = slapd.url if start_tls else slapd.ldaps_url
    directory = LdapDirectory(replace(ldap_config, url=url, start_tls=start_tls))
    with pytest.raises(LdapError, match="certificate verify failed"):
        directory.check()
    with pytest.raises(LdapError):
        directory.authenticate("alice", "alice-pw")


def test_tls_hostname_is_verified(ldap_config: LdapConfig, slapd) -> None:
    # The certificate names IP 127.0.0.1 only; "localhost" reaches the same server.
    url = slapd.ldaps_url.replace("127.0.0.1", "localhost")
    directory = LdapDirectory(replace(ldap_config, url=url, ca_file=slapd.ca_file))
    with pytest.raises(LdapError, match="Hostname mismatch"):
        directory.check()


def test_tls_missing_ca_file(ldap_config: LdapConfig, slapd) -> None:
    config = replace(ldap_config, url=slapd.ldaps_url, ca_file=str(slapd.work_dir / "nope.pem"))
    with pytest.raises(LdapError, match=r"nope\.pem"):
        LdapDirectory(config).check()
