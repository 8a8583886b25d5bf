"""The compiler's input: every Api, BillingPlan, Tenant and key Secret, plus settings and now.

A :class:`Snapshot` is frozen plain data. The operator builds it from the objects its kopf
handlers keep; a command that works on a folder of manifests builds it from files. Nothing
here does I/O.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from tollplane.api.apis import Api
from tollplane.api.base import Resource
from tollplane.api.keys import SECRET_KEY_FIELD
from tollplane.api.plans import BillingPlan
from tollplane.api.tenants import Tenant

DEFAULT_NAMESPACE = "tollplane-system"
DEFAULT_GATE_NAME = "tollplane-gate"
DEFAULT_GATE_PORT = 8080
FIELD_MANAGER = "tollplane-operator"

# Labels and annotations on everything the operator writes.
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_TENANT = "tollplane.io/tenant"
LABEL_KEY_ID = "tollplane.io/key-id"
LABEL_API = "tollplane.io/api"
# Label values are limited to 63 characters; these annotations hold the full identity.
ANNOTATION_OWNER = "tollplane.io/owner"
ANNOTATION_KEY_ID = "tollplane.io/key-id"
ANNOTATION_APPLIED = "tollplane.io/applied-hash"


class RouteKind(StrEnum):
    """Which Kubernetes object routes an Api's traffic to the gate."""

    HTTPROUTE = "HTTPRoute"
    INGRESS = "Ingress"
    NONE = "None"  # the platform team routes traffic to the gate itself


class GateMode(StrEnum):
    """How the gate sits in the request path."""

    PROXY = "proxy"  # routes point at the gate, which forwards allowed calls upstream
    FORWARD_AUTH = "forward-auth"  # the proxy asks the gate, then calls the upstream itself


class IngressController(StrEnum):
    """The Ingress controller in use (only matters for Ingress routes)."""

    NGINX = "nginx"
    OTHER = "other"


@dataclass(frozen=True)
class ParentRef:
    """A Gateway to attach HTTPRoutes to: ``NAMESPACE/NAME[/SECTION]``."""

    namespace: str
    name: str
    section: str | None = None

    @classmethod
    def parse(cls, text: str) -> ParentRef:
        """Parse ``NAMESPACE/NAME[/SECTION]``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"gateway must be NAMESPACE/NAME[/SECTION], not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def __str__(self) -> str:
        return "/".join(p for p in (self.namespace, self.name, self.section) if p)


@dataclass(frozen=True)
class ServiceRef:
    """The gate's Service: ``NAMESPACE/NAME:PORT``."""

    namespace: str
    name: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ServiceRef:
        """Parse ``NAMESPACE/NAME:PORT``."""
        match = re.fullmatch(r"([a-z0-9.-]+)/([a-z0-9.-]+):([0-9]{1,5})", text)
        if not match or not 0 < int(match.group(3)) < 65536:
            raise ValueError(f"gate service must be NAMESPACE/NAME:PORT, not {text!r}")
        return cls(match.group(1), match.group(2), int(match.group(3)))

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Operator settings that change what is compiled (flags / environment variables)."""

    namespace: str = DEFAULT_NAMESPACE
    route_kind: RouteKind = RouteKind.HTTPROUTE
    gateway: ParentRef | None = None
    ingress_class: str | None = None
    gate_service: ServiceRef | None = None  # None: <namespace>/tollplane-gate:8080
    gate_mode: GateMode = GateMode.PROXY
    ingress_controller: IngressController = IngressController.NGINX
    # Scheme of the public URLs shown in Api and Tenant status.
    public_scheme: str = "https"

    @property
    def gate(self) -> ServiceRef:
        """The gate Service, defaulted from the namespace."""
        return self.gate_service or ServiceRef(self.namespace, DEFAULT_GATE_NAME, DEFAULT_GATE_PORT)


@dataclass(frozen=True)
class Invalid:
    """An object the apiserver accepted but the models reject (e.g. written before a CRD
    upgrade). It becomes a status condition; the objects it produced are left alone."""

    kind: str
    name: str
    namespace: str | None
    uid: str | None
    generation: int | None
    message: str

    @property
    def key(self) -> str:
        """``namespace/name`` or ``name``, like :attr:`Resource.key`."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class SecretView:
    """What the compiler may know about a Secret in the operator's namespace."""

    name: str
    # The key value (decoded), or None when the Secret lacks the key field.
    value: str | None
    # Created by the operator (managed-by label), as opposed to provisioned by someone else.
    managed: bool = False
    # For managed Secrets: the tenant and key id they were generated for.
    tenant: str | None = None
    key_id: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything a compile needs. Mappings are keyed by :attr:`Resource.key`."""

    apis: Mapping[str, Api | Invalid] = field(default_factory=dict)
    plans: Mapping[str, BillingPlan | Invalid] = field(default_factory=dict)
    tenants: Mapping[str, Tenant | Invalid] = field(default_factory=dict)
    # Secrets in the operator's namespace, by name.
    secrets: Mapping[str, SecretView] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    now: datetime | None = None


KINDS: dict[str, type[Resource]] = {"Api": Api, "BillingPlan": BillingPlan, "Tenant": Tenant}


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err["loc"])
        text = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {text}" if where else text)
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def parse(body: Mapping[str, Any]) -> Resource | Invalid:
    """One object as read from the apiserver (or a file) -> its model, or :class:`Invalid`."""
    kind = str(body.get("kind", ""))
    meta = body.get("metadata") or {}
    model = KINDS.get(kind)
    if model is None:
        return Invalid(
            kind, str(meta.get("name", "")), meta.get("namespace"), None, None, "unknown kind"
        )
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc
    if "status" in body:
        # A status this version cannot read (written by another version) must not make the
        # spec unreadable: the status is recomputed anyway.
        try:
            return model.model_validate({k: v for k, v in body.items() if k != "status"})
        except ValidationError as exc:
            error = exc
    return Invalid(
        kind=kind,
        name=str(meta.get("name", "")),
        namespace=meta.get("namespace"),
        uid=meta.get("uid"),
        generation=meta.get("generation"),
        message=_first_error(error),
    )


def secret_view(body: Mapping[str, Any]) -> SecretView:
    """A Secret (as read from the apiserver, or a manifest with stringData) as the compiler
    sees it: its key value and whether the operator created it."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    value = (body.get("stringData") or {}).get(SECRET_KEY_FIELD)
    if value is None and SECRET_KEY_FIELD in (body.get("data") or {}):
        value = base64.b64decode(body["data"][SECRET_KEY_FIELD]).decode(errors="replace")
    managed = labels.get(LABEL_MANAGED_BY) == FIELD_MANAGER
    return SecretView(
        name=str(meta.get("name", "")),
        value=value or None,
        managed=managed,
        tenant=annotations.get(ANNOTATION_OWNER) if managed else None,
        key_id=annotations.get(ANNOTATION_KEY_ID) if managed else None,
    )


def snapshot_from_objects(
    objects: list[Mapping[str, Any]],
    *,
    settings: Settings | None = None,
    now: datetime,
) -> Snapshot:
    """A snapshot from a flat list of manifests, e.g. a folder of YAML files.

    Secrets in the operator's namespace become key Secrets; other kinds are ignored. Objects
    without a creationTimestamp count as created ``now`` (so a trial starts when applied).
    """
    settings = settings or Settings()
    buckets: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
    secrets: dict[str, SecretView] = {}
    for body in objects:
        kind = str(body.get("kind", ""))
        meta = body.get("metadata") or {}
        if kind == "Secret" and meta.get("namespace") == settings.namespace:
            view = secret_view(body)
            secrets[view.name] = view
        elif kind in buckets:
            stamped = body
            if "creationTimestamp" not in meta:
                stamped = {**body, "metadata": {**meta, "creationTimestamp": now.isoformat()}}
            parsed = parse(stamped)
            buckets[kind][parsed.key] = parsed
    return Snapshot(
        apis=buckets["Api"],
        plans=buckets["BillingPlan"],
        tenants=buckets["Tenant"],
        secrets=secrets,
        settings=settings,
        now=now,
    )
