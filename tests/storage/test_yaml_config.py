"""The reference registry's `storage:` YAML schema, to and from Wharf storage URLs."""

from __future__ import annotations

import pytest

from wharf.storage import StorageURLError
from wharf.storage.yamlconf import from_yaml, to_yaml

# Blob storage alone, no metadata store: one pass of the suite is enough.
pytestmark = pytest.mark.once


def test_s3_with_kms_keys_and_redirect():
    imported = from_yaml(
        """
storage:
  s3:
    bucket: images
    region: eu-west-1
    regionendpoint: https://minio.example:9000
    forcepathstyle: true
    rootdirectory: /registry
    encrypt: true
    keyid: arn:aws:kms:eu-west-1:1:key/k
    accesskey: AKIAEXAMPLE
    secretkey: shh
    multipartcopychunksize: 33554432
  redirect:
    disable: false
"""
    )
    assert imported.url.startswith("s3://images/registry?")
    for part in ("region=eu-west-1", "path_style=true", "sse=aws%3Akms", "redirect=true"):
        assert part in imported.url
    assert imported.secrets == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "shh"}
    assert imported.ignored == ["storage.s3.multipartcopychunksize"]
    assert "shh" not in imported.url
    # And back: the same settings, without the keys.
    text = to_yaml(imported.url)
    assert "shh" not in text and "AKIA" not in text
    again = from_yaml(text)
    assert again.url == imported.url and again.secrets == {}


def test_redirect_stays_off_unless_asked_for():
    assert "redirect" not in from_yaml("storage: {s3: {bucket: b}}").url
    assert "redirect" not in from_yaml("storage: {s3: {bucket: b}, redirect: {disable: true}}").url


@pytest.mark.parametrize(
    ("text", "url", "secrets"),
    [
        ("storage: {filesystem: {rootdirectory: /srv/reg}}", "file:///srv/reg", {}),
        (
            "storage: {gcs: {bucket: g, keyfile: /etc/key.json, rootdirectory: /r}}",
            "gs://g/r",
            {"GOOGLE_APPLICATION_CREDENTIALS": "/etc/key.json"},
        ),
        (
            "storage: {azure: {accountname: acct, accountkey: k==, container: c1c, "
            "realm: core.chinacloudapi.cn}}",
            "az://c1c?account=acct&endpoint=https%3A%2F%2Facct.blob.core.chinacloudapi.cn",
            {"AZURE_STORAGE_KEY": "k=="},
        ),
    ],
)
def test_each_driver(text, url, secrets):
    imported = from_yaml(text)
    assert imported.url == url
    assert imported.secrets == secrets
    assert from_yaml(to_yaml(url)).url == url


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storage: {s3: {bucket: a}, gcs: {bucket: b}}", "exactly one"),
        ("storage: {}", "exactly one"),
        ("storage: {s3: {region: x}}", "storage.s3.bucket` is required"),
        ("storage: {azure: {container: c}}", "accountname` is required"),
        ("storage: {s3: {bucket: a}, swift: {}}", "unknown `storage:` entries: swift"),
        ("storage: [1, 2]", "must be a mapping"),
        ("storage: {s3: {bucket: 'a b'}}", "invalid bucket"),
        (": : :", "not valid YAML"),
    ],
)
def test_bad_yaml_is_refused_with_the_reason(text, message):
    with pytest.raises(StorageURLError, match=message.replace("`", ".")):
        from_yaml(text)
