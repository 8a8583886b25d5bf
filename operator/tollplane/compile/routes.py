"""Which Apis get a route, and the HTTPRoute / Ingress manifests that send their traffic to
the gate.

Published and Deprecated Apis are routed. Retired Apis keep their route too, so that callers
get a clear 410 from the gate (with the successor link) instead of a 404 from the Gateway;
deleting the Api (or moving it back to Draft) removes the route. Draft Apis are not routed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tollplane.api.apis import Api, Stage
from tollplane.compile.objects import (
    bounded,
    common_labels,
    label_value,
    owner_reference,
    stamped,
)
from tollplane.compile.snapshot import (
    ANNOTATION_OWNER,
    LABEL_API,
    GateMode,
    IngressController,
    Invalid,
    RouteKind,
    Settings,
)

ROUTED_STAGES = frozenset({Stage.PUBLISHED, Stage.DEPRECATED, Stage.RETIRED})
GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTPROUTE_API_VERSION = f"{GATEWAY_GROUP}/v1"
REFERENCEGRANT_API_VERSION = f"{GATEWAY_GROUP}/v1beta1"
GATE_ALIAS = "tollplane-gate"  # ExternalName Service beside Ingresses (Ingress backends are local)
ROUTE_PREFIX = "tollplane-"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Problem:
    """Why something could not be done: a condition reason (CamelCase) and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class RoutePlan:
    """The routing outcome for every Api."""

    # Api key -> manifests to apply (the route itself).
    routes: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Api key -> "HTTPRoute ns/name" shown in status.
    references: Mapping[str, str] = field(default_factory=dict)
    # Manifests shared by several Apis (ReferenceGrants, ExternalName Services).
    shared: list[dict[str, Any]] = field(default_factory=list)
    # Api key -> why it is not routed (or served) although its stage asks for it.
    problems: Mapping[str, Problem] = field(default_factory=dict)
    # Apis that answer in the policy (routed stages, no conflict), by key.
    served: Mapping[str, Api] = field(default_factory=dict)


def api_namespace(api: Api) -> str:
    """The Api's namespace ("default" for a manifest that names none)."""
    return api.metadata.namespace or "default"


def api_key(api: Api) -> str:
    """``namespace/name`` of an Api, even when read from a file without a namespace."""
    return f"{api_namespace(api)}/{api.metadata.name}"


def public_url(api: Api, settings: Settings) -> str:
    """Where callers reach the Api: its first hostname and basePath (basePath alone when the
    Api answers on every hostname the Gateway serves)."""
    base = api.spec.base_path
    if not api.spec.hostnames:
        return base
    path = "" if base == "/" else base
    return f"{settings.public_scheme}://{api.spec.hostnames[0]}{path or '/'}"


def _claim_order(api: Api) -> tuple[datetime, str]:
    return (api.metadata.creation_timestamp or _EPOCH, api_key(api))


def served_apis(apis: Iterable[Api | Invalid]) -> tuple[dict[str, Api], dict[str, Problem]]:
    """Apis whose stage asks for a route, minus those whose address an older Api already has.

    Two Apis claiming the same hostname and basePath cannot both be served; the older one
    (then the one whose key sorts first) keeps it, so adding a clashing Api never takes an
    address away from a working one.
    """
    served: dict[str, Api] = {}
    problems: dict[str, Problem] = {}
    claims: dict[tuple[str, str], str] = {}
    candidates = [a for a in apis if isinstance(a, Api) and a.spec.lifecycle.stage in ROUTED_STAGES]
    for api in sorted(candidates, key=_claim_order):
        key = api_key(api)
        wanted = [(h, api.spec.base_path) for h in api.spec.hostnames or ["*"]]
        taken = [claims[w] for w in wanted if w in claims]
        if taken:
            problems[key] = Problem(
                "PathConflict",
                f"basePath {api.spec.base_path} on the same hostname is already served by "
                f"Api {taken[0]}; change basePath or hostnames",
            )
            continue
        for w in wanted:
            claims[w] = key
        served[key] = api
    return served, problems


def _parent_ref(api: Api, settings: Settings) -> dict[str, Any] | None:
    if api.spec.gateway is not None:
        ref = {
            "group": GATEWAY_GROUP,
            "kind": "Gateway",
            "namespace": api.spec.gateway.namespace or api_namespace(api),
            "name": api.spec.gateway.name,
        }
        if api.spec.gateway.section_name:
            ref["sectionName"] = api.spec.gateway.section_name
        return ref
    if settings.gateway is None:
        return None
    ref = {
        "group": GATEWAY_GROUP,
        "kind": "Gateway",
        "namespace": settings.gateway.namespace,
        "name": settings.gateway.name,
    }
    if settings.gateway.section:
        ref["sectionName"] = settings.gateway.section
    return ref


def _metadata(api: Api, kind: str) -> dict[str, Any]:
    return {
        "name": bounded(ROUTE_PREFIX + api.metadata.name),
        "namespace": api_namespace(api),
        "labels": {**common_labels(kind.lower()), LABEL_API: label_value(api.metadata.name)},
        "annotations": {ANNOTATION_OWNER: api_key(api)},
        "ownerReferences": [owner_reference(api)],
    }


def _backend(api: Api, settings: Settings) -> tuple[str, str, int] | Problem:
    """(namespace, service, port) that the route sends traffic to."""
    if settings.gate_mode is GateMode.PROXY:
        gate = settings.gate
        return gate.namespace, gate.name, gate.port
    # forward-auth: the proxy calls the upstream itself and asks the gate first.
    service = api.spec.upstream.service
    if service is None:
        return Problem(
            "UpstreamNotRoutable",
            "in forward-auth mode routes point at the upstream Service, but this Api's "
            "upstream is a URL; use a Service upstream or run the gate in proxy mode",
        )
    return api_namespace(api), service.name, service.port


def httproute(api: Api, settings: Settings) -> dict[str, Any] | Problem:
    """The HTTPRoute of an Api: its hostnames and basePath, to the gate (or upstream)."""
    parent = _parent_ref(api, settings)
    if parent is None:
        return Problem(
            "NoGateway",
            "no Gateway to attach the HTTPRoute to: start the operator with --gateway "
            "NAMESPACE/NAME or set spec.gateway on the Api",
        )
    backend = _backend(api, settings)
    if isinstance(backend, Problem):
        return backend
    namespace, service, port = backend
    backend_ref: dict[str, Any] = {"group": "", "kind": "Service", "name": service, "port": port}
    if namespace != api_namespace(api):
        backend_ref["namespace"] = namespace
    spec: dict[str, Any] = {
        "parentRefs": [parent],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": api.spec.base_path}}],
                "backendRefs": [backend_ref],
            }
        ],
    }
    if api.spec.hostnames:
        spec["hostnames"] = list(api.spec.hostnames)
    return stamped(
        {
            "apiVersion": HTTPROUTE_API_VERSION,
            "kind": "HTTPRoute",
            "metadata": _metadata(api, "HTTPRoute"),
            "spec": spec,
        }
    )


def ingress(api: Api, settings: Settings) -> dict[str, Any] | Problem:
    """The Ingress of an Api. Ingress backends must be Services in the Ingress's namespace,
    so in proxy mode it points at an ExternalName alias of the gate (see :func:`gate_alias`)."""
    if settings.gate_mode is GateMode.FORWARD_AUTH and (
        settings.ingress_controller is IngressController.NGINX
    ):
        return Problem(
            "UnsupportedGateMode",
            "forward-auth through ingress-nginx cannot work: its auth-url turns every denial "
            "other than 401/403 (the gate's 402 and 429) into a 500; run the gate in proxy mode "
            "(--gate-mode proxy) or use Gateway API routes",
        )
    backend = _backend(api, settings)
    if isinstance(backend, Problem):
        return backend
    _, service, port = backend
    if settings.gate_mode is GateMode.PROXY:
        service = GATE_ALIAS
    path = {
        "path": api.spec.base_path,
        "pathType": "Prefix",
        "backend": {"service": {"name": service, "port": {"number": port}}},
    }
    rules = [{"host": h, "http": {"paths": [path]}} for h in api.spec.hostnames] or [
        {"http": {"paths": [path]}}
    ]
    spec: dict[str, Any] = {"rules": rules}
    if settings.ingress_class:
        spec["ingressClassName"] = settings.ingress_class
    return stamped(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": _metadata(api, "Ingress"),
            "spec": spec,
        }
    )


def reference_grant(source_namespace: str, settings: Settings) -> dict[str, Any]:
    """Allows HTTPRoutes in ``source_namespace`` to send traffic to the gate Service.

    Gateway API requires the grant in the *target* namespace for cross-namespace backendRefs.
    One grant per source namespace, owned by nothing: it outlives any single Api.
    """
    gate = settings.gate
    return stamped(
        {
            "apiVersion": REFERENCEGRANT_API_VERSION,
            "kind": "ReferenceGrant",
            "metadata": {
                "name": bounded(f"tollplane-from-{source_namespace}"),
                "namespace": gate.namespace,
                "labels": common_labels("referencegrant"),
                "annotations": {ANNOTATION_OWNER: source_namespace},
            },
            "spec": {
                "from": [
                    {"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": source_namespace}
                ],
                "to": [{"group": "", "kind": "Service", "name": gate.name}],
            },
        }
    )


def gate_alias(namespace: str, settings: Settings) -> dict[str, Any]:
    """An ExternalName Service named tollplane-gate in an Api namespace, for Ingress backends."""
    gate = settings.gate
    return stamped(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": GATE_ALIAS,
                "namespace": namespace,
                "labels": common_labels("gate-alias"),
                "annotations": {ANNOTATION_OWNER: namespace},
            },
            "spec": {
                "type": "ExternalName",
                "externalName": f"{gate.name}.{gate.namespace}.svc.cluster.local",
                "ports": [{"name": "http", "port": gate.port, "protocol": "TCP"}],
            },
        }
    )


def plan_routes(apis: Iterable[Api | Invalid], settings: Settings) -> RoutePlan:
    """Routes for every servable Api, and why the others have none."""
    served, problems = served_apis(apis)
    routes: dict[str, list[dict[str, Any]]] = {}
    references: dict[str, str] = {}
    namespaces: set[str] = set()
    for key, api in served.items():
        if settings.route_kind is RouteKind.NONE:
            continue
        build = httproute if settings.route_kind is RouteKind.HTTPROUTE else ingress
        manifest = build(api, settings)
        if isinstance(manifest, Problem):
            problems[key] = manifest
            continue
        routes[key] = [manifest]
        meta = manifest["metadata"]
        references[key] = f"{manifest['kind']} {meta['namespace']}/{meta['name']}"
        namespaces.add(api_namespace(api))
    shared: list[dict[str, Any]] = []
    if settings.gate_mode is GateMode.PROXY:
        for namespace in sorted(namespaces):
            if settings.route_kind is RouteKind.HTTPROUTE:
                if namespace != settings.gate.namespace:
                    shared.append(reference_grant(namespace, settings))
            else:
                shared.append(gate_alias(namespace, settings))
    # Served in the policy even when routing failed: a route made by hand still works.
    return RoutePlan(
        routes=routes, references=references, shared=shared, problems=problems, served=served
    )
