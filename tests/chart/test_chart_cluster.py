"""The chart on a real kube-apiserver: it applies, its CRDs accept the examples, and its RBAC
is exactly enough.

No kubelet runs, so the chart's Deployments never get pods. Instead the operator and the gate
run on the host with the environment of their rendered containers and a token of the chart's
own ServiceAccounts: if a permission were missing they would fail here as they would in a
cluster; if one were too broad, the access reviews below would say so.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.chart import (
    CHART_DIR,
    Manifest,
    can_i,
    container_env,
    free_port,
    helm,
    one,
    render,
    run_tollplane,
    service_account_token,
    token_kubeconfig,
)
from support.controlplane import REPO, ControlPlane
from support.kube import kubectl, token_client, unique_name, wait_for
from tollplane.api.apis import Stage
from tollplane.api.keys import SECRET_KEY_FIELD, hash_key
from tollplane.api.policy import KeyPolicy, PlanPolicy, Policy, RoutePolicy, TenantPolicy
from tollplane.api.shards import configmaps
from tollplane.api.tenants import SubscriptionState

pytestmark = pytest.mark.cluster

EXAMPLES = REPO / "examples"
UPSTREAM_BODY = {"city": "Lisbon", "current": {"tempC": 19}}


@dataclass(frozen=True)
class Installed:
    """A chart release applied to the control plane."""

    release: str
    namespace: str
    manifests: list[Manifest]

    def deployment(self, component: str) -> Manifest:
        """The rendered Deployment of ``component`` (operator or gate)."""
        return one(self.manifests, "Deployment", component)

    def service_account(self, component: str) -> str:
        """The name of ``component``'s ServiceAccount."""
        return str(one(self.manifests, "ServiceAccount", component)["metadata"]["name"])


@pytest.fixture(scope="module")
def installed(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    gateway_api_crds: list[str],
    helm_bin: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Installed]:
    """The chart rendered in HTTPRoute mode and server-side applied into a fresh namespace.

    The release name is unique, so its ClusterRole/ClusterRoleBinding never collide with
    another test's; the CRDs are shared (identical to crds/) and stay.
    """
    release = unique_name("tpchart")
    namespace = release
    core = client.CoreV1Api(kube)
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=namespace, labels={"tollplane.io/test": "true"})
        )
    )
    values = {
        "route": {"kind": "HTTPRoute", "gateway": {"namespace": namespace, "name": "public"}},
        # Peering on, so the operator below also proves the chart's kopf peering RBAC.
        "operator": {"peering": {"enabled": True}},
        "logLevel": "debug",
    }
    manifests = render(helm_bin, values, release=release, namespace=namespace)
    workdir = tmp_path_factory.mktemp("chart")
    crds = [m for m in manifests if m["kind"] == "CustomResourceDefinition"]
    rest = [m for m in manifests if m["kind"] != "CustomResourceDefinition"]
    # CRDs first, as Helm does: the ClusterKopfPeering object needs its CRD to be served.
    for step, docs in (("crds", crds), ("objects", rest)):
        path = workdir / f"{step}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        kubectl(
            control_plane,
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=tollplane-chart-test",
            "-f",
            str(path),
        )
        if step == "crds":
            names = [f"crd/{m['metadata']['name']}" for m in crds]
            kubectl(control_plane, "wait", "--for=condition=Established", "--timeout=60s", *names)
    yield Installed(release, namespace, manifests)
    # Cluster-scoped RBAC goes explicitly; the namespace takes everything else with it.
    rbac = client.RbacAuthorizationV1Api(kube)
    for manifest in manifests:
        name = manifest["metadata"]["name"]
        with contextlib.suppress(ApiException):
            if manifest["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)
            elif manifest["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif manifest["kind"] == "ClusterKopfPeering":
                client.CustomObjectsApi(kube).delete_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", name
                )
    with contextlib.suppress(ApiException):
        core.delete_namespace(namespace)


@contextlib.contextmanager
def _as(
    control_plane: ControlPlane, kube: client.ApiClient, installed: Installed, component: str
) -> Iterator[client.ApiClient]:
    token = service_account_token(kube, installed.namespace, installed.service_account(component))
    with token_client(control_plane, token) as api:
        yield api


def _kubeconfig_for(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    installed: Installed,
    component: str,
    tmp: Path,
) -> Path:
    token = service_account_token(kube, installed.namespace, installed.service_account(component))
    return token_kubeconfig(control_plane, token, tmp / f"{component}.kubeconfig")


# --------------------------------------------------------------------------- a local upstream


class _Upstream(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the same JSON: what the weather upstream would say."""

    def do_GET(self) -> None:
        body = json.dumps({**UPSTREAM_BODY, "path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the gate's access log is what the tests read."""


@pytest.fixture
def upstream() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a loopback upstream, stopped after the test."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- tests


def test_rendered_chart_applies_and_creates_every_object(
    control_plane: ControlPlane, installed: Installed
) -> None:
    for manifest in installed.manifests:
        kind, meta = manifest["kind"], manifest["metadata"]
        args = ["get", kind, meta["name"], "-o", "name"]
        if meta.get("namespace"):
            args += ["-n", meta["namespace"]]
        assert kubectl(control_plane, *args).strip(), f"{kind}/{meta['name']} was not created"


def test_chart_crds_accept_every_example(
    control_plane: ControlPlane, installed: Installed, tmp_path: Path
) -> None:
    """A server-side dry run: schema, CEL rules and defaults of the chart's CRDs, for real."""
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] == "Namespace":
                continue  # a dry run creates no namespace: re-home everything in ours instead
            if doc["metadata"].get("namespace"):
                doc["metadata"]["namespace"] = installed.namespace
            docs.append(doc)
    manifest = tmp_path / "examples.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    out = kubectl(control_plane, "apply", "--dry-run=server", "-f", str(manifest), "-o", "name")
    accepted = out.split()
    assert len(accepted) == len(docs), out
    assert "tenant.tollplane.io/globex" in accepted


def test_gate_service_account_can_read_configmaps_but_no_secrets(
    control_plane: ControlPlane, kube: client.ApiClient, installed: Installed
) -> None:
    ns = installed.namespace
    with _as(control_plane, kube, installed, "gate") as gate:
        assert can_i(gate, "watch", "configmaps", namespace=ns)
        assert not can_i(gate, "create", "configmaps", namespace=ns)
        for verb in ("get", "list", "watch"):
            assert not can_i(gate, verb, "secrets", namespace=ns), verb
        assert not can_i(gate, "list", "tenants", group="tollplane.io")
        # Not just the review: the API itself refuses.
        with pytest.raises(ApiException) as refused:
            client.CoreV1Api(gate).list_namespaced_secret(ns)
        assert refused.value.status == 403


def test_operator_service_account_is_confined_to_what_it_writes(
    control_plane: ControlPlane, kube: client.ApiClient, installed: Installed
) -> None:
    ns = installed.namespace
    with _as(control_plane, kube, installed, "operator") as operator:
        assert can_i(operator, "create", "secrets", namespace=ns)
        assert can_i(operator, "patch", "configmaps", namespace=ns)
        # Key Secrets live only in its namespace: no Secret anywhere else is readable.
        assert not can_i(operator, "get", "secrets", namespace="default")
        assert not can_i(operator, "list", "secrets")
        assert can_i(
            operator, "create", "httproutes", namespace="any", group="gateway.networking.k8s.io"
        )
        assert can_i(operator, "patch", "tenants/status", group="tollplane.io")
        # It reconciles Apis, plans and tenants; people create and delete them.
        assert not can_i(operator, "create", "tenants", group="tollplane.io")
        assert not can_i(operator, "delete", "apis", namespace=ns, group="tollplane.io")
        assert not can_i(operator, "list", "pods", namespace=ns)


def _wait_http(url: str, timeout: float, process: Any) -> httpx.Response:
    def probe() -> httpx.Response | None:
        assert process.alive(), f"{process.name} exited:\n{process.output()}"
        try:
            response = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return None
        return response if response.status_code == 200 else None

    try:
        return wait_for(probe, timeout=timeout, what=url)
    except TimeoutError as error:
        raise AssertionError(f"{error}\n{process.name} log:\n{process.output()}") from None


def _gate_env(installed: Installed, kubeconfig: Path) -> tuple[dict[str, str], int, int]:
    """The rendered gate container's environment, on free loopback ports."""
    port, admin = free_port(), free_port()
    env = container_env(installed.deployment("gate"), installed.namespace)
    env |= {
        "KUBECONFIG": str(kubeconfig),
        "TOLLPLANE_GATE_PORT": str(port),
        "TOLLPLANE_ADMIN_PORT": str(admin),
    }
    return env, port, admin


def _gate_args(installed: Installed) -> list[str]:
    # The container's args, plus loopback: this process is on a shared host, not in a pod.
    return [
        *installed.deployment("gate")["spec"]["template"]["spec"]["containers"][0]["args"],
        "--host",
        "127.0.0.1",
    ]


def test_gate_loads_the_policy_with_its_service_account(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    installed: Installed,
    upstream: str,
    tmp_path: Path,
) -> None:
    """The policy ConfigMaps (published here as admin, as the operator would) are enough for
    the gate, running as its ServiceAccount, to load the policy and answer calls."""
    ns = installed.namespace
    key = "tp_chart_test_key_0123456789abcdef"
    api = f"{ns}/echo"
    policy = Policy(
        routes=[
            RoutePolicy(
                api=api,
                version="v1",
                base_path="/echo",
                stage=Stage.PUBLISHED,
                upstream_url=upstream,
            )
        ],
        plans={"plan": PlanPolicy(name="plan")},
        tenants={
            "tenant": TenantPolicy(
                name="tenant", plan="plan", entitlements={api: SubscriptionState.ACTIVE}
            )
        },
        keys={hash_key(key): KeyPolicy(tenant="tenant", id="default")},
    ).sealed()
    index, shards = configmaps(policy, ns)
    core = client.CoreV1Api(kube)
    for configmap in [*shards, index]:
        core.create_namespaced_config_map(ns, configmap)

    kubeconfig = _kubeconfig_for(control_plane, kube, installed, "gate", tmp_path)
    env, port, admin = _gate_env(installed, kubeconfig)
    with run_tollplane("gate", _gate_args(installed), env, tmp_path) as gate:
        _wait_http(f"http://127.0.0.1:{admin}/readyz", 30, gate)
        allowed = httpx.get(
            f"http://127.0.0.1:{port}/echo/today", headers={"Authorization": f"Bearer {key}"}
        )
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["city"] == "Lisbon"
        assert httpx.get(f"http://127.0.0.1:{port}/echo/today").status_code == 401
        # The watch of the policy ConfigMaps was never refused.
        assert "Forbidden" not in gate.output(500), gate.output()
    for configmap in [index, *shards]:
        core.delete_namespaced_config_map(configmap["metadata"]["name"], ns)


def _secret(kube: client.ApiClient, name: str, namespace: str) -> Any:
    try:
        return client.CoreV1Api(kube).read_namespaced_secret(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _example(path: str, kind: str, name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((EXAMPLES / path).read_text()):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
            return copy.deepcopy(doc)
    raise LookupError(f"{kind}/{name} not in examples/{path}")


def _ready(
    api: client.CustomObjectsApi, plural: str, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    try:
        if namespace:
            obj = api.get_namespaced_custom_object(
                "tollplane.io", "v1alpha1", namespace, plural, name
            )
        else:
            obj = api.get_cluster_custom_object("tollplane.io", "v1alpha1", plural, name)
    except ApiException:
        return None
    conditions = (obj.get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    return obj if ready and ready["status"] == "True" else None


@pytest.mark.skipif(
    importlib.util.find_spec("tollplane.controller.main") is None,
    reason="`tollplane operator` (tollplane.controller.main) has not landed yet",
)
def test_operator_reconciles_an_example_with_its_service_account_and_the_gate_serves_it(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    installed: Installed,
    upstream: str,
    tmp_path: Path,
) -> None:
    """The free-trial plan, the weather v2 Api and the trial tenant acme from examples/,
    re-homed in this test's namespace (and, being cluster-scoped, renamed), reach Ready under
    the operator running as its ServiceAccount; the gate then serves acme's generated key."""
    ns = installed.namespace
    suffix = ns.rsplit("-", 1)[-1]
    plan = _example("30-plans.yaml", "BillingPlan", "free-trial")
    plan["metadata"]["name"] = f"free-trial-{suffix}"
    api = _example("21-api-weather-v2.yaml", "Api", "weather-v2")
    api["metadata"]["namespace"] = ns
    # The example's Service upstream has no pods here; a loopback URL stands in for it.
    api["spec"]["upstream"] = {"url": upstream}
    tenant = _example("40-tenants.yaml", "Tenant", "acme")
    tenant_name = f"acme-{suffix}"
    tenant["metadata"]["name"] = tenant_name
    tenant["spec"]["plan"] = plan["metadata"]["name"]
    tenant["spec"]["subscriptions"] = [{"namespace": ns, "name": "weather-v2"}]
    objects = [plan, api, tenant]
    manifest = tmp_path / "example.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    kubectl(control_plane, "apply", "-f", str(manifest))

    custom = client.CustomObjectsApi(kube)
    operator_env = container_env(installed.deployment("operator"), ns)
    operator_env |= {
        "KUBECONFIG": str(_kubeconfig_for(control_plane, kube, installed, "operator", tmp_path)),
        "TOLLPLANE_HEALTH_PORT": str(free_port()),
    }
    operator_args = installed.deployment("operator")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    gate_env, port, admin = _gate_env(
        installed, _kubeconfig_for(control_plane, kube, installed, "gate", tmp_path)
    )
    with run_tollplane("operator", operator_args, operator_env, tmp_path) as operator:
        try:
            health = f"http://127.0.0.1:{operator_env['TOLLPLANE_HEALTH_PORT']}/healthz"
            _wait_http(health, 30, operator)

            def all_ready() -> bool:
                assert operator.alive(), operator.output()
                return bool(
                    _ready(custom, "billingplans", plan["metadata"]["name"])
                    and _ready(custom, "apis", "weather-v2", ns)
                    and _ready(custom, "tenants", tenant_name)
                )

            try:
                wait_for(all_ready, timeout=60, what="the example to become Ready")
            except TimeoutError as error:
                raise AssertionError(f"{error}\noperator log:\n{operator.output()}") from None
            reconciled = _ready(custom, "tenants", tenant_name)
            assert reconciled is not None
            assert reconciled["status"]["state"] == "Trial"
            secret = wait_for(
                lambda: _secret(kube, f"tollplane-key-{tenant_name}-default", ns),
                timeout=30,
                what="the generated key Secret",
            )
            key = base64.b64decode(secret.data[SECRET_KEY_FIELD]).decode()
            # kopf degrades quietly (a warning) when it may not list or watch something.
            log = operator.output(2000)
            assert "Not enough permissions" not in log, log
            assert "Forbidden" not in log, log
            # kopf keeps itself alive in the chart's ClusterKopfPeering (patch permission).
            peering = one(installed.manifests, "ClusterKopfPeering")["metadata"]["name"]
            peers = wait_for(
                lambda: custom.get_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", peering
                ).get("status"),
                timeout=30,
                what="a kopf keep-alive in the ClusterKopfPeering",
            )
            assert len(peers) == 1, peers

            with run_tollplane("gate", _gate_args(installed), gate_env, tmp_path) as gate:
                _wait_http(f"http://127.0.0.1:{admin}/readyz", 30, gate)
                call = httpx.get(
                    f"http://127.0.0.1:{port}/weather/v2/forecast",
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert call.status_code == 200, call.text
                assert call.json()["city"] == "Lisbon"
        finally:
            # Delete while the operator still runs, so it releases its finalizers; these
            # cluster-scoped objects would otherwise outlive the test on a shared cluster.
            kubectl(
                control_plane, "delete", "--ignore-not-found", "--timeout=30s", "-f", str(manifest)
            )


def test_helm_install_prints_next_steps_and_uninstall_keeps_the_crds(
    control_plane: ControlPlane, kube: client.ApiClient, installed: Installed, helm_bin: Path
) -> None:
    """A real `helm install` (CRDs already present, so crds.install=false) and uninstall."""
    release = unique_name("tphelm")
    ns = installed.namespace
    env = control_plane.env()
    out = helm(
        helm_bin,
        "install",
        release,
        str(CHART_DIR),
        "-n",
        ns,
        "--set",
        "crds.install=false",
        env=env,
    )
    try:
        assert "STATUS: deployed" in out
        # NOTES: what to check and what to apply next, with this release's names.
        assert f"deployment/{release}-tollplane-operator" in out
        assert "kubectl apply -f examples/" in out
        assert f"port-forward service/{release}-tollplane-gate" in out
        apps = client.AppsV1Api(kube)
        operator = apps.read_namespaced_deployment(f"{release}-tollplane-operator", ns)
        assert operator.spec.strategy.type == "Recreate"
    finally:
        helm(helm_bin, "uninstall", release, "-n", ns, "--wait=false", env=env)
    rbac = client.RbacAuthorizationV1Api(kube)
    with pytest.raises(ApiException) as gone:
        rbac.read_cluster_role(f"{release}-tollplane-operator")
    assert gone.value.status == 404
    # The CRDs (and so every Api, BillingPlan and Tenant) survive an uninstall.
    client.ApiextensionsV1Api(kube).read_custom_resource_definition("tenants.tollplane.io")
