"""The control plane behaves like a real cluster in the ways Tollplane relies on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from support.controlplane import HELM, KUBE, ControlPlane, pinned_version
from support.kube import (
    TOLLPLANE_CRDS_DIR,
    install_tollplane_crds,
    kubectl,
    unique_name,
    wait_for,
    wait_for_crds_established,
)

pytestmark = pytest.mark.cluster


def test_binaries_report_the_pinned_versions(control_plane: ControlPlane) -> None:
    versions = json.loads(kubectl(control_plane, "version", "--output=json"))
    kubernetes = pinned_version(KUBE.module_dir, "k8s.io/kubernetes")
    assert versions["clientVersion"]["gitVersion"] == kubernetes
    assert versions["serverVersion"]["gitVersion"] == kubernetes

    helm = subprocess.run(
        [str(control_plane.helm), "version", "--short"],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert helm.stdout.startswith(pinned_version(HELM.module_dir, "helm.sh/helm/v3"))


@pytest.fixture
def widget_crd(kube: client.ApiClient) -> Iterator[tuple[str, str]]:
    """A namespaced CRD with a status subresource, in a group of its own; (group, plural)."""
    group = f"{unique_name('t')}.tests.tollplane.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {"phase": {"type": "string"}},
                                },
                            },
                        }
                    },
                }
            ],
        },
    }
    extensions = client.ApiextensionsV1Api(kube)
    extensions.create_custom_resource_definition(crd)
    wait_for_crds_established(kube, [crd["metadata"]["name"]])
    yield group, "widgets"
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])


def _next_event(events: Iterator[dict], expected: str, name: str) -> dict:
    for event in events:
        if event["object"]["metadata"]["name"] == name:
            assert event["type"] == expected, event
            return event["object"]
    raise AssertionError(f"the watch ended before the {expected} event for {name}")


def test_custom_resource_lifecycle_is_seen_on_a_watch(
    kube: client.ApiClient, namespace: str, widget_crd: tuple[str, str]
) -> None:
    group, plural = widget_crd
    custom = client.CustomObjectsApi(kube)
    listing = custom.list_namespaced_custom_object(group, "v1", namespace, plural)
    events = watch.Watch().stream(
        custom.list_namespaced_custom_object,
        group,
        "v1",
        namespace,
        plural,
        resource_version=listing["metadata"]["resourceVersion"],
        timeout_seconds=30,
    )

    body = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    created = custom.create_namespaced_custom_object(group, "v1", namespace, plural, body)
    assert _next_event(events, "ADDED", "w1")["spec"] == {"size": 3}

    # Through the status subresource only status changes: the spec in the patch is ignored
    # and the generation (which counts spec changes) stays put.
    patched = custom.patch_namespaced_custom_object_status(
        group,
        "v1",
        namespace,
        plural,
        "w1",
        {"status": {"phase": "Ready"}, "spec": {"size": 99}},
    )
    assert patched["status"] == {"phase": "Ready"}
    assert patched["spec"] == {"size": 3}
    assert patched["metadata"]["generation"] == created["metadata"]["generation"]
    modified = _next_event(events, "MODIFIED", "w1")
    assert modified["status"] == {"phase": "Ready"}
    assert modified["spec"] == {"size": 3}

    custom.delete_namespaced_custom_object(group, "v1", namespace, plural, "w1")
    _next_event(events, "DELETED", "w1")


def test_owner_reference_garbage_collection(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="owned", owner_references=[reference])
        ),
    )

    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        try:
            core.read_namespaced_config_map("owned", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(collected, timeout=60, what="the garbage collector to delete the owned ConfigMap")


def test_namespace_deletion_completes(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    name = unique_name("doomed")
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"))
    )

    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(gone, timeout=60, what=f"the namespace controller to finalize {name}")


def test_gateway_api_crds_are_established(
    kube: client.ApiClient, gateway_api_crds: list[str]
) -> None:
    assert "httproutes.gateway.networking.k8s.io" in gateway_api_crds
    crd = client.ApiextensionsV1Api(kube).read_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io"
    )
    assert "v1" in {version.name for version in crd.spec.versions if version.served}


def test_tollplane_crds_install(control_plane: ControlPlane) -> None:
    if not list(TOLLPLANE_CRDS_DIR.glob("*.yaml")):
        pytest.skip("crds/ is empty: nothing generated yet")
    assert install_tollplane_crds(control_plane)
