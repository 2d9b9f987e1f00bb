"""Parsing and structural validation of pushed manifests.

Pure functions: no I/O. Whether the referenced blobs and manifests exist is checked by the
service, which knows the repository.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from wharf.registry import mediatypes as mt
from wharf.registry.digest import Digest, parse_digest
from wharf.registry.errors import DigestInvalid, ManifestInvalid

MAX_SIZE = 2**63 - 1  # sizes are stored in BigInteger columns: 0 <= size < 2**63
# Real manifests nest 4 or 5 levels deep; Python's JSON parser and serialiser recurse, and a
# document nested near the interpreter's recursion limit would fail in one place and not in
# another.
MAX_DEPTH = 100
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as signed bytes


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()

    @property
    def is_foreign(self) -> bool:
        # Only the non-distributable layer types may live elsewhere (as distribution has it):
        # `urls` on any other descriptor does not excuse its blob from being in the repository.
        return self.media_type in mt.NON_DISTRIBUTABLE_LAYERS


@dataclass(frozen=True, slots=True)
class ParsedManifest:
    media_type: str
    blobs: tuple[Descriptor, ...] = ()  # config and layers
    manifests: tuple[Descriptor, ...] = ()  # children of an index
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Parse a manifest body, deciding its media type from Content-Type and the body."""
    if _depth(body) > MAX_DEPTH:
        raise ManifestInvalid(f"manifest nests arrays and objects over {MAX_DEPTH} levels deep")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {e}") from None
    except RecursionError:  # a UTF-16 or UTF-32 body can hide its depth from _depth()
        raise ManifestInvalid("manifest nests arrays and objects too deep") from None
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest must be a JSON object")

    content_type = (content_type or "").split(";")[0].strip().lower() or None
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ManifestInvalid("mediaType must be a string")
    if content_type in mt.SCHEMA1 or body_type in mt.SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ManifestInvalid(
            "Docker schema 1 manifests are not supported; push the image as Docker schema 2 "
            "or OCI (e.g. skopeo copy --format v2s2 or --format oci)"
        )
    media_type = content_type if content_type in mt.MANIFEST_TYPES else None
    if media_type is None:
        media_type = body_type if body_type in mt.MANIFEST_TYPES else None
    if media_type is None:
        # No usable Content-Type and no mediaType: infer OCI types from the body's shape.
        if "manifests" in doc:
            media_type = mt.OCI_INDEX
        elif "config" in doc:
            media_type = mt.OCI_MANIFEST
        else:
            raise ManifestInvalid(f"unsupported manifest media type {content_type or body_type!r}")
    if body_type is not None and body_type != media_type:
        raise ManifestInvalid(
            f"manifest mediaType {body_type!r} does not match Content-Type {media_type!r}"
        )
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")

    subject = _descriptor(doc["subject"], "subject") if "subject" in doc else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestInvalid("artifactType must be a string")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ManifestInvalid("annotations must be an object")

    if media_type in mt.IMAGE_MANIFESTS:
        if "config" not in doc:
            raise ManifestInvalid("image manifest has no config")
        config = _descriptor(doc["config"], "config")
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestInvalid("layers must be a list")
        blobs = (config, *(_descriptor(layer, "layers[]") for layer in layers))
        # The image size (manifest, config and layers) is stored too.
        if len(body) + sum(d.size for d in blobs) > MAX_SIZE:
            raise ManifestInvalid("the sizes of the config and layers add up past 2^63 - 1")
        # The referrers API reports the config's media type when a manifest has no artifactType.
        artifact_type = artifact_type or config.media_type
        return ParsedManifest(media_type, blobs, (), subject, artifact_type, annotations)

    children = doc.get("manifests")
    if not isinstance(children, list):
        raise ManifestInvalid("index must have a manifests list")
    manifests = tuple(_descriptor(child, "manifests[]") for child in children)
    return ParsedManifest(media_type, (), manifests, subject, artifact_type, annotations)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where}: descriptor must be an object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}: descriptor has no mediaType")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}: descriptor has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise ManifestInvalid(f"{where}: descriptor size must be an integer from 0 to 2^63 - 1")
    try:
        parsed = parse_digest(digest)
    except DigestInvalid as e:
        raise ManifestInvalid(f"{where}: {e.message}: {digest}") from None
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}: urls must be a list of strings")
    return Descriptor(media_type, parsed, size, tuple(urls))


def _depth(body: bytes) -> int:
    """How deep arrays and objects nest (brackets in strings aside), found without recursing:
    the running sum of +1 per opening and -1 per closing bracket, at its highest."""
    steps = _STRING.sub(b"", body).translate(_STEP, _NOT_BRACKET)
    return max(accumulate(memoryview(steps).cast("b")), default=0)
