"""How a Policy travels through ConfigMaps: gzip'd JSON split into shards plus an index.

A ConfigMap holds at most 1 MiB, so the compressed policy is cut into shards of at most
``SHARD_BYTES``.  Shards are immutable and named after the revision; the index ConfigMap
names the current revision, its shards and the SHA-256 of their concatenation.  A reader
switches revisions only when the index and every shard it names have arrived and the
digest matches, so it never sees half a policy.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Mapping
from typing import Any

from tollplane.api.policy import Policy

SHARD_BYTES = 900 * 1024
INDEX_NAME = "tollplane-policy"
SHARD_FIELD = "policy.json.gz"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_REVISION = "tollplane.io/revision"
COMPONENT_INDEX = "policy-index"
COMPONENT_SHARD = "policy-shard"
POLICY_SELECTOR = f"{LABEL_PART_OF}=tollplane,{LABEL_COMPONENT} in (policy-index,policy-shard)"


class PolicyAssemblyError(ValueError):
    """The ConfigMaps do not (yet) hold a complete, valid policy."""


def shard_name(revision: str, index: int) -> str:
    """Name of shard ``index`` of ``revision``."""
    return f"{INDEX_NAME}-{revision}-{index}"


def encode(policy: Policy) -> list[bytes]:
    """The sealed policy as compressed shards (deterministic: same policy, same bytes)."""
    data = gzip.compress(policy.model_dump_json(by_alias=True).encode(), mtime=0)
    return [data[i : i + SHARD_BYTES] for i in range(0, len(data), SHARD_BYTES)] or [b""]


def configmaps(policy: Policy, namespace: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The index ConfigMap and the shard ConfigMaps that carry ``policy``."""
    if not policy.revision:
        raise ValueError("policy must be sealed (have a revision) before it is published")
    parts = encode(policy)
    names = [shard_name(policy.revision, i) for i in range(len(parts))]
    shards = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    LABEL_PART_OF: "tollplane",
                    LABEL_COMPONENT: COMPONENT_SHARD,
                    LABEL_REVISION: policy.revision,
                },
            },
            "immutable": True,
            "binaryData": {SHARD_FIELD: base64.b64encode(part).decode()},
        }
        for name, part in zip(names, parts, strict=True)
    ]
    index = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": INDEX_NAME,
            "namespace": namespace,
            "labels": {
                LABEL_PART_OF: "tollplane",
                LABEL_COMPONENT: COMPONENT_INDEX,
                LABEL_REVISION: policy.revision,
            },
        },
        "data": {
            "revision": policy.revision,
            "shards": ",".join(names),
            "sha256": hashlib.sha256(b"".join(parts)).hexdigest(),
            "routes": str(len(policy.routes)),
            "tenants": str(len(policy.tenants)),
            "keys": str(len(policy.keys)),
        },
    }
    return index, shards


def assemble(index_data: Mapping[str, str], shard_data: Mapping[str, bytes]) -> Policy:
    """Rebuild the policy the index names from shard bytes keyed by ConfigMap name.

    Raises :class:`PolicyAssemblyError` when a shard is missing, the digest does not
    match, or the document does not validate; the caller keeps its last good policy.
    """
    try:
        revision = index_data["revision"]
        names = [n for n in index_data["shards"].split(",") if n]
        digest = index_data["sha256"]
    except KeyError as exc:
        raise PolicyAssemblyError(f"policy index lacks field {exc}") from exc
    missing = [n for n in names if n not in shard_data]
    if missing:
        raise PolicyAssemblyError(f"revision {revision}: waiting for shard(s) {', '.join(missing)}")
    blob = b"".join(shard_data[n] for n in names)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise PolicyAssemblyError(f"revision {revision}: shard digest mismatch")
    try:
        policy = Policy.model_validate_json(gzip.decompress(blob))
    except (OSError, ValueError) as exc:
        raise PolicyAssemblyError(f"revision {revision}: invalid policy: {exc}") from exc
    if policy.revision != revision:
        raise PolicyAssemblyError(
            f"index names revision {revision} but the shards hold {policy.revision}"
        )
    return policy


def shard_bytes(configmap: Mapping[str, Any]) -> bytes:
    """The shard payload of a ConfigMap as read from the API (base64 in binaryData)."""
    raw = (configmap.get("binaryData") or {}).get(SHARD_FIELD, "")
    return base64.b64decode(raw)
