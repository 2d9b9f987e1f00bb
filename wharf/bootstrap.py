"""First-start work of a replica: schema migrations and the initial admin account."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from wharf.auth.passwords import hash_password
from wharf.cluster import ReplicaRemoved, register, replica_id
from wharf.config import Settings
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore
from wharf.storage.config import StorageMismatch, resolve_storage_url
from wharf.tls import sync_files
from wharf.upgrade.engine import UpgradeRefused, check_start, initialize, read_state

EXIT_REFUSED = 3
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD_FILE = "admin-password"  # noqa: S105 - a file name
ADMIN_PASSWORD_ENV = "WHARF_ADMIN_PASSWORD"  # noqa: S105 - a variable name


def prepare(settings: Settings) -> None:
    # The data directory holds password hashes and, later, keys: private to its owner.
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    store = MetadataStore(settings.db_url)
    try:
        try:
            if read_state(store).version is None:
                initialize(store)  # a new cluster, created by its first replica
            else:
                check_start(store)
            identities = IdentityStore(store)
            resolve_storage_url(settings, identities, record=True)
            register(store, replica_id(settings.data_dir), advertised_address(settings))
        except (UpgradeRefused, StorageMismatch, ReplicaRemoved) as e:
            print(f"wharf: refused: {e}", file=sys.stderr)
            sys.exit(EXIT_REFUSED)
        if store.embedded:  # this replica is the only one, and it is not running yet
            store.clear_upload_leases()
        ensure_admin(store, settings.data_dir)
        sync_files(settings.data_dir, identities)
    finally:
        store.dispose()


def advertised_address(settings: Settings) -> str:
    if settings.https_addr:
        return f"https://{settings.https_addr}"
    return f"http://{settings.http_addr}"


def ensure_admin(store: MetadataStore, data_dir: Path) -> None:
    """Create the admin account once. Its password is WHARF_ADMIN_PASSWORD, or generated,
    printed once and saved (mode 0600) in the data directory."""
    if store.get_user(ADMIN_USERNAME) is not None:
        return
    password = os.environ.get(ADMIN_PASSWORD_ENV)
    generated = not password
    if generated:
        password = secrets.token_urlsafe(18)
    assert password is not None
    store.create_user(ADMIN_USERNAME, hash_password(password), is_admin=True)
    if generated:
        path = data_dir / ADMIN_PASSWORD_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        print(
            f"Created the admin account. Password (shown once, also saved in {path}): {password}",
            file=sys.stderr,
        )
