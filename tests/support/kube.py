"""Helpers for tests against the real control plane (see support.controlplane)."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from support.controlplane import REPO, ControlPlane

T = TypeVar("T")

TOLLPLANE_CRDS_DIR = REPO / "crds"


def api_client(control_plane: ControlPlane) -> client.ApiClient:
    """A `kubernetes` ApiClient authenticated as the cluster admin."""
    return config.new_client_from_config(config_file=str(control_plane.kubeconfig))


def token_client(control_plane: ControlPlane, token: str) -> client.ApiClient:
    """An ApiClient that authenticates with a bearer token (e.g. from the TokenRequest API)."""
    configuration = client.Configuration()
    configuration.host = control_plane.server
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    configuration.api_key = {"authorization": token}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


def kubectl(control_plane: ControlPlane, *args: str) -> str:
    """Run the pinned kubectl against the control plane; returns stdout, raises on failure."""
    result = subprocess.run(
        [str(control_plane.kubectl), *args],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def unique_name(prefix: str) -> str:
    """A DNS-1123 label unlikely to collide with any other test's objects."""
    return f"{prefix}-{secrets.token_hex(3)}"


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.2, what: str = ""
) -> T:
    """Poll `probe` until it returns something other than None/False, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or probe}")
        time.sleep(interval)


def _crd_names(paths: Iterable[Path]) -> list[str]:
    names = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.append(doc["metadata"]["name"])
    return names


def wait_for_crds_established(
    api: client.ApiClient, names: Iterable[str], timeout: float = 60
) -> None:
    """Wait until every named CRD reports Established=True (its resource is then served)."""
    extensions = client.ApiextensionsV1Api(api)

    def established(name: str) -> bool:
        try:
            crd = extensions.read_custom_resource_definition(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        conditions = (crd.status and crd.status.conditions) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        wait_for(lambda name=name: established(name), timeout=timeout, what=f"CRD {name}")


def install_crds(control_plane: ControlPlane, paths: Iterable[Path]) -> list[str]:
    """Server-side apply YAML files (CRDs and anything beside them) and wait for the CRDs.

    Server-side apply keeps this idempotent on a reused cluster and, unlike client-side apply,
    has no size limit from the last-applied annotation (the Gateway API CRDs exceed it).
    Returns the names of the CRDs found in the files.
    """
    paths = list(paths)
    if not paths:
        return []
    files = [arg for path in paths for arg in ("-f", str(path))]
    kubectl(
        control_plane,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=tollplane-tests",
        *files,
    )
    names = _crd_names(paths)
    with api_client(control_plane) as api:
        wait_for_crds_established(api, names)
    return names


def install_gateway_api_crds(control_plane: ControlPlane) -> list[str]:
    """Install the pinned Gateway API standard-channel CRDs; returns the CRD names."""
    return install_crds(control_plane, control_plane.gateway_api_crds)


def install_tollplane_crds(control_plane: ControlPlane) -> list[str]:
    """Install crds/*.yaml from the repository; returns the CRD names ([] while none exist)."""
    return install_crds(control_plane, sorted(TOLLPLANE_CRDS_DIR.glob("*.yaml")))
