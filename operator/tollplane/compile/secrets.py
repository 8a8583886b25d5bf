"""Key Secrets: which exist, which must be generated, which are adopted, which are orphans.

A key's value lives only in its Secret (in the operator's namespace). If a Secret with the
key's name already exists and was not created by the operator (keys migrated from another
gateway, or provisioned by a person), its value is adopted and the Secret is never written.
Otherwise the operator generates a value once; generation is randomness, so the caller passes
generated values in (``generated``) and this module stays deterministic.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tollplane.api.keys import SECRET_KEY_FIELD, hash_key
from tollplane.api.tenants import Key, Tenant
from tollplane.compile.objects import bounded, common_labels, label_value, owner_reference, stamped
from tollplane.compile.routes import Problem
from tollplane.compile.snapshot import (
    ANNOTATION_KEY_ID,
    ANNOTATION_OWNER,
    LABEL_KEY_ID,
    LABEL_TENANT,
    Invalid,
    SecretView,
)

SECRET_PREFIX = "tollplane-key-"  # noqa: S105 - a name prefix, not a secret


@dataclass(frozen=True)
class KeyMaterial:
    """A resolved key: where its value lives and its hash (never the value)."""

    tenant: str
    key_id: str
    secret_name: str
    key_hash: str
    adopted: bool
    expires: datetime | None = None


@dataclass(frozen=True)
class KeyPlan:
    """The outcome of matching Tenants' keys with the Secrets that exist."""

    # (tenant, key id) -> material, for keys whose value is known.
    materials: Mapping[tuple[str, str], KeyMaterial] = field(default_factory=dict)
    # Secrets to generate a value for: (tenant, key id, secret name).
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    # (tenant, key id) -> why the key has no usable value.
    problems: Mapping[tuple[str, str], Problem] = field(default_factory=dict)
    # Secrets the operator created and still wants (apply only if they changed).
    manifests: list[dict[str, Any]] = field(default_factory=list)
    # Names of Secrets the operator created for keys nobody lists any more.
    orphans: list[str] = field(default_factory=list)


def secret_name(tenant: str, key: Key) -> str:
    """The Secret holding a key: ``spec.keys[].secretName`` or tollplane-key-TENANT-ID."""
    return key.secret_name or bounded(f"{SECRET_PREFIX}{tenant}-{key.id}")


def key_secret(tenant: Tenant, key: Key, name: str, namespace: str, value: str) -> dict[str, Any]:
    """The Secret the operator writes for a generated key, owned by its Tenant."""
    tenant_name = tenant.metadata.name
    return stamped(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {
                    **common_labels("api-key"),
                    LABEL_TENANT: label_value(tenant_name),
                    LABEL_KEY_ID: key.id,
                },
                "annotations": {ANNOTATION_OWNER: tenant_name, ANNOTATION_KEY_ID: key.id},
                # Cluster-scoped owner of a namespaced dependant: allowed, and the garbage
                # collector removes the Secret when the Tenant is deleted.
                "ownerReferences": [owner_reference(tenant)],
            },
            "type": "Opaque",
            "data": {SECRET_KEY_FIELD: base64.b64encode(value.encode()).decode()},
        }
    )


def plan_keys(
    tenants: Iterable[Tenant | Invalid],
    secrets: Mapping[str, SecretView],
    namespace: str,
    generated: Mapping[str, str] | None = None,
) -> KeyPlan:
    """Match every Tenant key with its Secret.

    ``generated`` maps Secret names to freshly generated values for Secrets listed as
    ``missing`` by a previous call; they are treated as if the operator had created them.
    """
    generated = generated or {}
    materials: dict[tuple[str, str], KeyMaterial] = {}
    missing: list[tuple[str, str, str]] = []
    problems: dict[tuple[str, str], Problem] = {}
    manifests: list[dict[str, Any]] = []
    claimed: dict[str, tuple[str, str]] = {}
    by_hash: dict[str, tuple[str, str]] = {}
    tenants = list(tenants)
    # An unparsable Tenant still owns its Secrets: losing a key is worse than keeping it.
    unreadable = {t.name for t in tenants if isinstance(t, Invalid)}
    for tenant in tenants:
        if isinstance(tenant, Invalid):
            continue
        tname = tenant.metadata.name
        for key in tenant.spec.keys:
            ident = (tname, key.id)
            name = secret_name(tname, key)
            if name in claimed:
                other = claimed[name]
                problems[ident] = Problem(
                    "SecretConflict",
                    f"Secret {name} already holds key {other[1]} of tenant {other[0]}; "
                    "give this key its own secretName",
                )
                continue
            claimed[name] = ident
            view = secrets.get(name)
            if view is None and name in generated:
                view = SecretView(name, generated[name], managed=True, tenant=tname, key_id=key.id)
            if view is None:
                missing.append((tname, key.id, name))
                continue
            if view.managed and (view.tenant, view.key_id) != ident:
                problems[ident] = Problem(
                    "SecretConflict",
                    f"Secret {name} was generated for key {view.key_id} of tenant "
                    f"{view.tenant}; give this key its own secretName",
                )
                continue
            if not view.value:
                problems[ident] = Problem(
                    "SecretMissingKey",
                    f"Secret {namespace}/{name} exists but has no '{SECRET_KEY_FIELD}' entry; "
                    "add the key value under that name (the operator never overwrites a "
                    "Secret it did not create)",
                )
                continue
            digest = hash_key(view.value)
            if digest in by_hash:
                other = by_hash[digest]
                problems[ident] = Problem(
                    "DuplicateKey",
                    f"Secret {name} holds the same value as key {other[1]} of tenant "
                    f"{other[0]}; every key must be unique",
                )
                continue
            by_hash[digest] = ident
            materials[ident] = KeyMaterial(
                tname, key.id, name, digest, adopted=not view.managed, expires=key.expires
            )
            if view.managed:
                manifests.append(key_secret(tenant, key, name, namespace, view.value))
    wanted = set(claimed)
    orphans = sorted(
        view.name
        for view in secrets.values()
        if view.managed and view.name not in wanted and view.tenant not in unreadable
    )
    return KeyPlan(materials, missing, problems, manifests, orphans)
