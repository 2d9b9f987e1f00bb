"""The reference registry's `storage:` YAML, to and from Wharf's storage URL.

Operators coming from the Go registry (or DTR, which let them upload that YAML) bring a file
like::

    storage:
      s3:
        bucket: images
        region: eu-west-1
        regionendpoint: https://minio.example:9000
        forcepathstyle: true
        rootdirectory: /registry
        encrypt: true
        keyid: arn:aws:kms:...
      redirect:
        disable: false

`from_yaml` turns it into a storage URL plus the credentials it holds (access keys, account
keys), which Wharf keeps out of the URL: the caller stores them as environment variables in a
0600 file. Options Wharf has no use for (caches, chunk sizes, maintenance) are reported, not
silently dropped. `to_yaml` writes the same schema back, without secrets.

One deliberate difference: the reference registry redirects blob GETs to the cloud unless
`redirect.disable` is true; Wharf serves them itself unless `redirect.disable: false` is
written explicitly, because a redirect needs every client to reach the object store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import yaml

from wharf.storage import StorageURLError, parse_storage_url

DRIVERS = ("filesystem", "s3", "gcs", "azure")
IGNORED_SECTIONS = ("cache", "delete", "maintenance", "tag")


@dataclass
class ImportedStorage:
    url: str
    secrets: dict[str, str] = field(default_factory=dict)  # environment variable -> value
    ignored: list[str] = field(default_factory=list)  # options Wharf does not use


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


def _url(scheme: str, bucket: str, root: str, params: dict[str, str]) -> str:
    path = "/" + root.strip("/") if root.strip("/") else ""
    query = urlencode({k: v for k, v in params.items() if v})
    return f"{scheme}://{bucket}{path}" + (f"?{query}" if query else "")


def from_yaml(text: str) -> ImportedStorage:
    """Parse a reference-registry configuration (the whole file or just `storage:`)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise StorageURLError(f"not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise StorageURLError("expected a mapping with a `storage:` section")
    storage = doc.get("storage", doc)
    if not isinstance(storage, dict):
        raise StorageURLError("`storage:` must be a mapping")
    drivers = [d for d in DRIVERS if d in storage]
    if len(drivers) != 1:
        raise StorageURLError(
            f"`storage:` must configure exactly one of {', '.join(DRIVERS)} "
            f"(found: {', '.join(drivers) or 'none'})"
        )
    driver = drivers[0]
    options = storage[driver] or {}
    if not isinstance(options, dict):
        raise StorageURLError(f"`storage.{driver}` must be a mapping")
    ignored = [
        f"storage.{k}" for k in storage if k not in (driver, "redirect") and k in IGNORED_SECTIONS
    ]
    unknown = [k for k in storage if k not in (*DRIVERS, "redirect", *IGNORED_SECTIONS)]
    if unknown:
        raise StorageURLError(f"unknown `storage:` entries: {', '.join(sorted(unknown))}")
    redirect_opts = storage.get("redirect") or {}
    redirect = "disable" in redirect_opts and not _bool(redirect_opts["disable"])
    opts = dict(options)
    result = ImportedStorage(url="")

    def take(name: str, required: bool = False) -> str:
        value = opts.pop(name, None)
        if value is None or value == "":
            if required:
                raise StorageURLError(f"`storage.{driver}.{name}` is required")
            return ""
        return str(value)

    if driver == "filesystem":
        root = take("rootdirectory") or "/var/lib/registry"
        result.url = f"file://{root}"
    elif driver == "s3":
        bucket = take("bucket", required=True)
        params = {
            "region": take("region"),
            "endpoint": take("regionendpoint"),
            "path_style": "true" if _bool(opts.pop("forcepathstyle", False)) else "",
        }
        encrypt = _bool(opts.pop("encrypt", False))
        keyid = take("keyid")
        if encrypt or keyid:
            params["sse"] = "aws:kms" if keyid else "AES256"
            params["kms_key_id"] = keyid
        access, secret = take("accesskey"), take("secretkey")
        if access or secret:
            result.secrets.update({"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret})
        session = take("sessiontoken")
        if session:
            result.secrets["AWS_SESSION_TOKEN"] = session
        if redirect:
            params["redirect"] = "true"
        result.url = _url("s3", bucket, take("rootdirectory"), params)
    elif driver == "gcs":
        bucket = take("bucket", required=True)
        keyfile = take("keyfile")
        if keyfile:
            result.secrets["GOOGLE_APPLICATION_CREDENTIALS"] = keyfile
        params = {"redirect": "true" if redirect else ""}
        result.url = _url("gs", bucket, take("rootdirectory"), params)
    else:
        account = take("accountname", required=True)
        container = take("container", required=True)
        key = take("accountkey")
        if key:
            result.secrets["AZURE_STORAGE_KEY"] = key
        realm = take("realm") or "core.windows.net"
        params = {"account": account}
        if realm != "core.windows.net":
            params["endpoint"] = f"https://{account}.blob.{realm}"
        if redirect:
            params["redirect"] = "true"
        result.url = _url("az", container, take("rootdirectory"), params)
    result.ignored = ignored + [f"storage.{driver}.{k}" for k in sorted(opts)]
    parse_storage_url(result.url)  # the same checks as a --storage flag
    return result


def to_yaml(url: str) -> str:
    """The reference registry's `storage:` section for a storage URL (no secrets in it)."""
    scheme, bucket, prefix, params = parse_storage_url(url)
    section: dict[str, Any]
    if scheme == "file":
        section = {"filesystem": {"rootdirectory": prefix}}
    elif scheme == "s3":
        s3: dict[str, Any] = {"bucket": bucket}
        if params.get("region"):
            s3["region"] = params["region"]
        if params.get("endpoint"):
            s3["regionendpoint"] = params["endpoint"]
        if params.get("path_style", "").lower() in ("1", "true", "yes", "on"):
            s3["forcepathstyle"] = True
        if params.get("sse"):
            s3["encrypt"] = True
        if params.get("kms_key_id"):
            s3["keyid"] = params["kms_key_id"]
        if prefix:
            s3["rootdirectory"] = "/" + prefix
        section = {"s3": s3}
    elif scheme == "gs":
        gcs: dict[str, Any] = {"bucket": bucket}
        if prefix:
            gcs["rootdirectory"] = "/" + prefix
        section = {"gcs": gcs}
    else:
        az: dict[str, Any] = {"accountname": params.get("account", ""), "container": bucket}
        endpoint = params.get("endpoint", "")
        marker = f"https://{az['accountname']}.blob."
        if endpoint.startswith(marker):
            az["realm"] = endpoint[len(marker) :]
        if prefix:
            az["rootdirectory"] = "/" + prefix
        section = {"azure": az}
    redirect = params.get("redirect", "").lower() in ("1", "true", "yes", "on")
    if scheme != "file":
        section["redirect"] = {"disable": not redirect}
    header = (
        "# Wharf storage configuration in the reference registry's schema.\n"
        "# Credentials are not written here: Wharf reads them from the environment.\n"
    )
    return header + yaml.safe_dump({"storage": section}, sort_keys=False)
