"""Which blob storage a replica uses, and the credentials kept for it.

The cluster's storage URL is recorded in the metadata store the first time a replica starts,
and every replica, now and later, must use that same storage: a replica on other storage would
serve manifests whose blobs it does not have, which looks exactly like lost data. Changing it is
`wharf reconfigure --storage`, which checks the new storage first (never touching metadata).

A replica configured without --storage takes the recorded one (or the embedded default, a
folder in its data directory, when the cluster has always used that).

Credentials imported from a reference-registry YAML file are kept, 0600, in
`<data-dir>/storage.env` as environment variables the cloud SDKs read; the process environment
wins over the file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

STORAGE_SETTING = "cluster.storage"
EMBEDDED = ""  # recorded for clusters on each replica's default data-directory storage
CREDENTIALS_FILE = "storage.env"


class StorageMismatch(Exception):
    """This replica's storage is not the cluster's."""


def resolve_storage_url(settings: Any, identities: Any, *, record: bool = False) -> str:
    """The storage URL this replica must use; with `record`, remember it for the cluster."""
    explicit = settings.storage or EMBEDDED
    recorded = identities.get_setting(STORAGE_SETTING)
    if recorded is None:
        if record:
            identities.set_setting_if_missing(STORAGE_SETTING, explicit)
            recorded = identities.get_setting(STORAGE_SETTING)
        else:
            recorded = explicit
    if settings.storage and settings.storage != recorded:
        shown = recorded or "the default storage in each replica's data directory"
        raise StorageMismatch(
            f"this replica is configured with storage {settings.storage} but the cluster's "
            f"blobs are in {shown}. Starting on other storage would make every image "
            "unpullable. Start with the cluster's storage (or without --storage), or move the "
            "cluster with `wharf reconfigure --storage URL` (with --storage-migrated once the "
            "blobs are copied)."
        )
    return recorded or settings.storage_url


def load_credentials(data_dir: Path) -> None:
    """Put the saved storage credentials into the environment (without overriding it)."""
    path = data_dir / CREDENTIALS_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() and not name.startswith("#"):
            os.environ.setdefault(name.strip(), value)


def save_credentials(data_dir: Path, secrets: dict[str, str]) -> Path:
    """Write (replace) the storage credentials file, readable by its owner only."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = data_dir / CREDENTIALS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("# storage credentials imported by wharf; the environment overrides them\n")
        for name, value in secrets.items():
            if "\n" in value or "\n" in name:
                raise ValueError(f"{name}: credentials may not contain newlines")
            f.write(f"{name}={value}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
