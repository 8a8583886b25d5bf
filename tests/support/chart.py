"""Helpers for testing the Helm chart: render and lint it with the pinned helm, and run the
chart's processes locally as its own ServiceAccounts.

The control plane has no kubelet, so the chart's Deployments never start pods. To prove the
chart's RBAC is enough, the tests run ``tollplane operator`` / ``tollplane gate`` on the host
with exactly the environment of the rendered container and a kubeconfig holding a token of the
chart's ServiceAccount (TokenRequest API), i.e. with the identity a pod would have.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from support.controlplane import REPO, ControlPlane

CHART_DIR = REPO / "charts" / "tollplane"
CHART_CRDS_DIR = CHART_DIR / "crds-generated"
REPO_CRDS_DIR = REPO / "crds"
TOLLPLANE = REPO / ".venv" / "bin" / "tollplane"

Manifest = dict[str, Any]


class HelmError(RuntimeError):
    """helm exited non-zero; the message carries its stderr."""


def helm(helm_bin: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run helm; returns stdout, raises :class:`HelmError` with stderr on failure.

    HELM_* state directories point at a throwaway location so a test never reads or writes
    the developer's helm configuration or repository cache.
    """
    home = Path(tempfile.gettempdir()) / "tollplane-helm-home"
    full_env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        **(env or {}),
    }
    result = subprocess.run(
        [str(helm_bin), *args], env=full_env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def _values_args(values: Mapping[str, Any] | None, workdir: Path) -> list[str]:
    if not values:
        return []
    path = workdir / "values.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["--values", str(path)]


def render(
    helm_bin: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "tollplane",
    namespace: str = "tollplane-system",
    include_crds: bool = True,
) -> list[Manifest]:
    """``helm template`` the chart; the rendered objects (empty documents dropped)."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["template", release, str(CHART_DIR), "--namespace", namespace]
        if include_crds:
            args.append("--include-crds")
        out = helm(helm_bin, *args, *_values_args(values, Path(tmp)))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def lint(helm_bin: Path, values: Mapping[str, Any] | None = None) -> str:
    """``helm lint --strict`` the chart with ``values``; returns helm's report."""
    with tempfile.TemporaryDirectory() as tmp:
        return helm(helm_bin, "lint", "--strict", str(CHART_DIR), *_values_args(values, Path(tmp)))


def of_kind(manifests: Sequence[Manifest], kind: str) -> list[Manifest]:
    """The manifests of one kind."""
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: Sequence[Manifest], kind: str, component: str | None = None) -> Manifest:
    """The single manifest of ``kind`` (for ``component``, by app.kubernetes.io/component)."""
    found = [
        m
        for m in of_kind(manifests, kind)
        if component is None
        or m["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
    return found[0]


def pod_specs(manifests: Sequence[Manifest]) -> list[tuple[str, Manifest]]:
    """(``Kind/name``, pod spec) of every workload in the rendering."""
    workloads = ("Deployment", "StatefulSet", "DaemonSet", "Job")
    return [
        (f"{m['kind']}/{m['metadata']['name']}", m["spec"]["template"]["spec"])
        for m in manifests
        if m.get("kind") in workloads
    ]


def container_env(deployment: Manifest, namespace: str) -> dict[str, str]:
    """The environment a pod of ``deployment`` gets, as plain strings.

    Downward-API fields resolve as the kubelet would (``metadata.namespace``); env from
    Secrets is left out (a local process has no kubelet to read them for it).
    """
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[var["name"]] = namespace
    return env


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_account_token(kube: client.ApiClient, namespace: str, name: str) -> str:
    """A short-lived token for a ServiceAccount, from the TokenRequest API (what a pod gets)."""
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    response = client.CoreV1Api(kube).create_namespaced_service_account_token(
        name, namespace, request
    )
    return str(response.status.token)


def token_kubeconfig(control_plane: ControlPlane, token: str, path: Path) -> Path:
    """Write a kubeconfig that authenticates to the control plane with ``token`` only."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tollplane-test",
                "cluster": {
                    "server": control_plane.server,
                    "certificate-authority": str(control_plane.ca_file),
                },
            }
        ],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [
            {
                "name": "service-account",
                "context": {"cluster": "tollplane-test", "user": "service-account"},
            }
        ],
        "current-context": "service-account",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(
    api: client.ApiClient,
    verb: str,
    resource: str,
    *,
    namespace: str | None = None,
    group: str = "",
) -> bool:
    """SelfSubjectAccessReview: may the identity behind ``api`` do ``verb`` on ``resource``?"""
    review = client.AuthorizationV1Api(api).create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb, resource=resource, group=group, namespace=namespace
                )
            )
        )
    )
    return bool(review.status.allowed)


@dataclass
class LocalProcess:
    """A ``tollplane`` subcommand running on the host, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self, tail: int = 60) -> str:
        """The last ``tail`` lines it wrote (for assertion messages)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.process.poll() is None


@contextlib.contextmanager
def run_tollplane(
    name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path
) -> Iterator[LocalProcess]:
    """Run ``tollplane <args>`` with exactly ``env`` (plus PATH/HOME) and stop it afterwards.

    The parent's environment is not inherited: KUBECONFIG and every TOLLPLANE_* setting must
    come from the caller, so the test sees what the chart's container would see.
    """
    binary = TOLLPLANE if TOLLPLANE.exists() else Path(shutil.which("tollplane") or "tollplane")
    log = log_dir / f"{name}.log"
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(log_dir), "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(binary), *args],
            env={**base, **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = LocalProcess(name, process, log)
    try:
        yield running
    finally:
        if process.poll() is None:
            # SIGTERM first: kopf and uvicorn shut down cleanly (kopf removes its finalizers'
            # in-flight state), then SIGKILL if it hangs.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        if os.environ.get("TOLLPLANE_TEST_SHOW_LOGS") == "1":
            sys.stderr.write(f"--- {name} log ---\n{running.output(200)}\n")
