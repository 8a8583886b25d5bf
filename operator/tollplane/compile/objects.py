"""Small helpers shared by the modules that build Kubernetes manifests."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tollplane.api.base import API_VERSION, Resource
from tollplane.compile.snapshot import (
    ANNOTATION_APPLIED,
    FIELD_MANAGER,
    LABEL_MANAGED_BY,
    LABEL_PART_OF,
)

MAX_NAME = 253
MAX_LABEL = 63


def bounded(name: str, limit: int = MAX_NAME) -> str:
    """``name`` if it fits in ``limit`` characters, else a prefix plus a short hash of it.

    Object names derived from user names can exceed Kubernetes' limits; a hash suffix keeps
    them unique and stable.
    """
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: limit - 11].rstrip('-.')}-{digest}"


def label_value(value: str) -> str:
    """A label value for ``value`` (63 characters at most, alphanumeric at both ends)."""
    return bounded(value, MAX_LABEL).strip("-.")


def common_labels(component: str) -> dict[str, str]:
    """The labels every object written by the operator carries."""
    return {
        LABEL_PART_OF: "tollplane",
        LABEL_MANAGED_BY: FIELD_MANAGER,
        "app.kubernetes.io/component": component,
    }


def owner_reference(owner: Resource) -> dict[str, Any]:
    """An ownerReference to a custom resource, so the garbage collector removes dependants."""
    return {
        "apiVersion": API_VERSION,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": False,
    }


def content_hash(manifest: dict[str, Any]) -> str:
    """Stable hash of a manifest (what the operator would apply), for change detection.

    orjson with sorted keys gives the bytes of compact, key-sorted ``json.dumps`` for ASCII
    content, an order of magnitude faster: 30,000 key Secrets are hashed on every publish.
    """
    return hashlib.sha256(orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def stamped(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its own content hash in an annotation.

    The operator compares this annotation with the live object's to skip writes that would
    change nothing, including the removal of a field (which a subset comparison cannot see).
    """
    meta = manifest["metadata"]
    annotations = {k: v for k, v in meta.get("annotations", {}).items() if k != ANNOTATION_APPLIED}
    unstamped = {**manifest, "metadata": {**meta, "annotations": annotations}}
    annotations = {**annotations, ANNOTATION_APPLIED: content_hash(unstamped)}
    return {**manifest, "metadata": {**meta, "annotations": annotations}}
