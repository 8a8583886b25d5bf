"""Fixtures shared by every suite: the real control plane and per-test namespaces.

The control plane (etcd + kube-apiserver + kube-controller-manager, see
docs/controlplane.md) is started once per session, or reused when `make cluster` (or another
pytest run) already runs one. One that a test session started is stopped when the last session
using it ends, unless TOLLPLANE_KEEP_CLUSTER=1.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from support import controlplane
from support.controlplane import ControlPlane
from support.kube import api_client, install_gateway_api_crds, install_tollplane_crds, unique_name

CONTROL_PLANE_FIXTURE = "control_plane"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the control plane `cluster`, even if its module forgot to,
    so that `-m "not cluster"` never starts one."""
    for item in items:
        if CONTROL_PLANE_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The running control plane: kubeconfig, server, CA and the kubectl/helm binaries."""
    with controlplane.session(keep=os.environ.get("TOLLPLANE_KEEP_CLUSTER") == "1") as plane:
        yield plane


@pytest.fixture(scope="session")
def kube(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """A `kubernetes` ApiClient authenticated as cluster admin."""
    with api_client(control_plane) as api:
        yield api


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace named after the test, deleted (with its contents) afterwards."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = unique_name(base or "test")
    core = client.CoreV1Api(kube)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"tollplane.io/test": "true"})
        )
    )
    yield name
    # Deletion completes asynchronously (the namespace controller empties it); nothing waits.
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)


@pytest.fixture(scope="session")
def gateway_api_crds(control_plane: ControlPlane) -> list[str]:
    """The pinned Gateway API standard-channel CRDs, installed; their names."""
    return install_gateway_api_crds(control_plane)


@pytest.fixture(scope="session")
def tollplane_crds(control_plane: ControlPlane) -> list[str]:
    """Tollplane's generated CRDs (crds/*.yaml), installed; their names."""
    return install_tollplane_crds(control_plane)
