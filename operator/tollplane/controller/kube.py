"""The thin Kubernetes I/O the operator needs: list, server-side apply, create, delete.

Everything goes through one ``kubernetes`` ApiClient as raw JSON (no generated models), so
any kind (Gateway API, our CRDs, core) is handled the same way. Calls are blocking; the
operator runs them in threads.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kubernetes import client, config

APPLY = "application/apply-patch+yaml"
REQUEST_TIMEOUT = 30.0
# Lists of PartialObjectMetadata: names, uids and labels without spec and status.
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# kind -> (group/version, plural, namespaced) for everything the operator touches.
KINDS: dict[str, tuple[str, str, bool]] = {
    "Api": ("tollplane.io/v1alpha1", "apis", True),
    "BillingPlan": ("tollplane.io/v1alpha1", "billingplans", False),
    "Tenant": ("tollplane.io/v1alpha1", "tenants", False),
    "HTTPRoute": ("gateway.networking.k8s.io/v1", "httproutes", True),
    "ReferenceGrant": ("gateway.networking.k8s.io/v1beta1", "referencegrants", True),
    "Ingress": ("networking.k8s.io/v1", "ingresses", True),
    "Service": ("v1", "services", True),
    "ConfigMap": ("v1", "configmaps", True),
    "Secret": ("v1", "secrets", True),
    "Event": ("v1", "events", True),
}


class KubeError(Exception):
    """A failed API call, with the apiserver's own message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Ref:
    """Kind, namespace and name of an object."""

    kind: str
    namespace: str | None
    name: str

    @classmethod
    def of(cls, manifest: Mapping[str, Any]) -> Ref:
        """The ref of a manifest or live object."""
        meta = manifest["metadata"]
        return cls(manifest["kind"], meta.get("namespace"), meta.get("name", ""))


def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    """REST path of a collection (name None) or object; namespace None lists all namespaces."""
    group_version, plural, namespaced = KINDS[kind]
    root = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    where = f"/namespaces/{namespace}" if namespaced and namespace else ""
    return f"{root}{where}/{plural}" + (f"/{name}" if name else "")


def new_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An ApiClient from the in-cluster service account, or a kubeconfig file."""
    configuration = client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    # Publishes run many calls in parallel threads.
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)


class Kube:
    """Blocking JSON calls to the apiserver."""

    def __init__(self, api: client.ApiClient, field_manager: str):
        self.api = api
        self.field_manager = field_manager

    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        """One call; returns the decoded JSON answer, raises :class:`KubeError`."""
        headers = {"Accept": accept, "Content-Type": content_type}
        serialized = self.api.param_serialize(
            method=method,
            resource_path=resource_path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
        response.read()  # type: ignore[no-untyped-call]
        data = response.data or b"{}"
        try:
            # orjson: listing 30,000 key Secrets is megabytes of JSON every publish.
            decoded: dict[str, Any] = orjson.loads(data)
        except ValueError:
            decoded = {"message": data.decode(errors="replace")}
        if response.status >= 400:
            raise KubeError(response.status, str(decoded.get("message", response.reason)))
        return decoded

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        selector: str | None = None,
        *,
        metadata_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Every object of ``kind`` (in ``namespace``, or everywhere), page by page; with
        ``metadata_only``, only their metadata (a fraction of the bytes).

        A kind whose API is not installed (e.g. no Gateway API CRDs) lists as empty.
        """
        accept = METADATA_LIST if metadata_only else "application/json"
        items: list[dict[str, Any]] = []
        query: list[tuple[str, str]] = [("limit", "500")]
        if selector:
            query.append(("labelSelector", selector))
        token = ""
        while True:
            page_query = [*query, ("continue", token)] if token else query
            try:
                page = self.request("GET", path(kind, namespace), query=page_query, accept=accept)
            except KubeError as exc:
                if exc.status == 404:
                    return []
                raise
            api_version, _, _ = KINDS[kind]
            for item in page.get("items") or []:  # null in an empty metadata list
                # List items carry no kind/apiVersion; the rest of the code relies on them.
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                items.append(item)
            token = page.get("metadata", {}).get("continue", "")
            if not token:
                return items

    def apply(self, manifest: Mapping[str, Any], *, subresource: str | None = None) -> None:
        """Server-side apply under the operator's field manager, taking over conflicts."""
        ref = Ref.of(manifest)
        resource_path = path(ref.kind, ref.namespace, ref.name)
        if subresource:
            resource_path += f"/{subresource}"
        self.request(
            "PATCH",
            resource_path,
            query=[("fieldManager", self.field_manager), ("force", "true")],
            body=manifest,
            content_type=APPLY,
        )

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Create; fails with 409 if the object exists (used where overwriting would be wrong)."""
        ref = Ref.of(manifest)
        self.request(
            "POST",
            path(ref.kind, ref.namespace),
            query=[("fieldManager", self.field_manager)],
            body=manifest,
        )

    def delete(self, ref: Ref) -> None:
        """Delete; an object that is already gone is fine."""
        try:
            self.request(
                "DELETE",
                path(ref.kind, ref.namespace, ref.name),
                body={"propagationPolicy": "Background"},
            )
        except KubeError as exc:
            if exc.status != 404:
                raise
