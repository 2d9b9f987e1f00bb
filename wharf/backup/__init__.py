"""Backup and restore of a Wharf installation (`wharf backup`, `wharf restore`,
`wharf storage check`).

- `archive.py`: the archive's layout, how rows are written (JSON Lines), the manifest, and
  the optional passphrase encryption (chunked AES-256-GCM, scrypt);
- `create.py`: `wharf backup`: one snapshot of the metadata store, streamed as a tar;
- `restore.py`: verifying an archive (before anything changes) and loading it into a fresh
  installation;
- `storagecheck.py`: which manifests have blobs missing from the blob storage.

Image contents (blob storage) and the vulnerability database are never in a backup.
"""
