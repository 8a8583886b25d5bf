"""The operator as a real process (`tollplane operator`) against the real control plane.

One operator per module; manifests are applied with the pinned kubectl. Cluster-scoped names
carry a random suffix so that tests (and sessions) never collide.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from support.controlplane import REPO, ControlPlane
from support.kube import kubectl, unique_name, wait_for
from support.operator_process import TOLLPLANE, OperatorProcess
from tollplane.api.keys import hash_key
from tollplane.api.shards import INDEX_NAME, SHARD_BYTES, assemble, shard_bytes

pytestmark = pytest.mark.cluster
MANIFESTS = Path(__file__).parent / "manifests"
GROUP, VERSION = "tollplane.io", "v1alpha1"


@pytest.fixture(scope="module")
def operator(
    control_plane: ControlPlane,
    kube: client.ApiClient,
    tollplane_crds: list[str],
    gateway_api_crds: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    ns = unique_name("tp-operator")
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    op = OperatorProcess(control_plane, ns, tmp_path_factory.mktemp("operator") / "operator.log")
    try:
        op.start()  # a start that times out must not leave the process behind
        yield op
    finally:
        op.stop()
        core.delete_namespace(ns)


@pytest.fixture
def applied(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    ident = unique_name("x").removeprefix("x-")
    values = {"NS": namespace, "OPNS": operator.namespace, "ID": ident}
    rendered = tmp_path / "basic.yaml"
    rendered.write_text(Template((MANIFESTS / "basic.yaml").read_text()).substitute(values))
    kubectl(control_plane, "apply", "-f", str(rendered))
    yield values
    kubectl(
        control_plane,
        "delete",
        "--ignore-not-found",
        "--wait=false",
        f"tenant/t-{ident}",
        f"tenant/lost-{ident}",
        f"billingplan/plan-{ident}",
    )


def custom(kube: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(kube)


def get(kube: client.ApiClient, plural: str, name: str, ns: str | None = None) -> dict[str, Any]:
    api = custom(kube)
    if ns:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    return api.get_cluster_custom_object(GROUP, VERSION, plural, name)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == type_), None)


def ready(
    kube: client.ApiClient, plural: str, name: str, ns: str | None = None, status: str = "True"
) -> dict[str, Any] | None:
    obj = get(kube, plural, name, ns)
    c = condition(obj, "Ready")
    generation = obj["metadata"].get("generation")
    if c and c["status"] == status and c.get("observedGeneration") == generation:
        return obj
    return None


def policy(kube: client.ApiClient, ns: str) -> Any:
    core = client.CoreV1Api(kube)
    index = core.read_namespaced_config_map(INDEX_NAME, ns)
    shards = {}
    for name in index.data["shards"].split(","):
        cm = kube.sanitize_for_serialization(core.read_namespaced_config_map(name, ns))
        shards[name] = shard_bytes(cm)
        assert len(shards[name]) <= SHARD_BYTES < 1024 * 1024
        assert cm["metadata"]["labels"]["tollplane.io/revision"] == index.data["revision"]
    return assemble(index.data, shards)


def test_resources_become_routes_policy_secrets_and_status(
    kube: client.ApiClient, operator: OperatorProcess, namespace: str, applied: dict[str, str]
) -> None:
    ident, opns = applied["ID"], operator.namespace
    tenant = wait_for(lambda: ready(kube, "tenants", f"t-{ident}"), what="tenant Ready")
    api = wait_for(lambda: ready(kube, "apis", "weather", namespace), what="api Ready")
    assert api["status"]["url"] == f"https://weather-{ident}.example.com/weather"
    assert api["status"]["subscribers"] == 1
    assert condition(api, "Routed")["reason"] == "RouteApplied"
    draft = wait_for(lambda: ready(kube, "apis", "drafty", namespace), what="draft Ready")
    assert condition(draft, "Routed")["reason"] == "Draft"

    route = custom(kube).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "tollplane-weather"
    )
    assert route["metadata"]["ownerReferences"][0]["uid"] == api["metadata"]["uid"]
    assert route["spec"]["rules"][0]["backendRefs"][0]["namespace"] == opns
    grants = custom(kube).list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1beta1", opns, "referencegrants"
    )["items"]
    assert any(g["spec"]["from"][0]["namespace"] == namespace for g in grants)

    core = client.CoreV1Api(kube)
    generated = core.read_namespaced_secret(f"tollplane-key-t-{ident}-generated", opns)
    assert generated.metadata.owner_references[0].uid == tenant["metadata"]["uid"]
    value = base64.b64decode(generated.data["api-key"]).decode()
    keys = {k["id"]: k for k in tenant["status"]["keys"]}
    assert keys["migrated"]["adopted"] is True
    assert keys["generated"]["adopted"] is False

    compiled = policy(kube, opns)
    assert compiled.keys[hash_key(value)].tenant == f"t-{ident}"
    assert compiled.keys[hash_key(f"tp_adopted_value_{ident}")].id == "migrated"
    assert compiled.tenants[f"t-{ident}"].entitlements == {f"{namespace}/weather": "Active"}
    assert value not in str(compiled.model_dump())

    # A missing plan is a condition on that tenant alone.
    lost = wait_for(lambda: ready(kube, "tenants", f"lost-{ident}", status="False"), what="lost")
    assert condition(lost, "PlanResolved")["reason"] == "PlanNotFound"
    assert f"lost-{ident}" not in compiled.tenants

    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=weather,involvedObject.kind=Api"
    ).items
    assert any(e.reason == "Published" for e in events)


def test_plan_change_publishes_a_new_revision(
    kube: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    applied: dict[str, str],
) -> None:
    ident, opns = applied["ID"], operator.namespace
    wait_for(lambda: ready(kube, "tenants", f"t-{ident}"), what="tenant Ready")
    before = policy(kube, opns).revision
    kubectl(
        control_plane,
        "patch",
        "billingplan",
        f"plan-{ident}",
        "--type=merge",
        "-p",
        '{"spec":{"rateLimit":{"requests":7}}}',
    )

    def changed() -> Any:
        current = policy(kube, opns)
        return current if current.revision != before else None

    current = wait_for(changed, what="a new policy revision")
    assert current.plans[f"plan-{ident}"].rate.limit == 7
    index = client.CoreV1Api(kube).read_namespaced_config_map(INDEX_NAME, opns)
    assert index.metadata.labels["tollplane.io/revision"] == current.revision


def test_deleting_an_api_removes_its_route(
    kube: client.ApiClient, control_plane: ControlPlane, namespace: str, applied: dict[str, str]
) -> None:
    wait_for(lambda: ready(kube, "apis", "weather", namespace), what="api Ready")
    kubectl(control_plane, "delete", "api", "weather", "-n", namespace)

    def gone() -> bool:
        try:
            custom(kube).get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", "tollplane-weather"
            )
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, what="the HTTPRoute to be collected")
    sub = wait_for(
        lambda: ready(kube, "tenants", f"t-{applied['ID']}", status="False"), what="tenant"
    )
    assert sub["status"]["subscriptions"][0]["state"] == "ApiNotFound"


def test_approve_command_activates_a_manual_subscription(
    kube: client.ApiClient, control_plane: ControlPlane, namespace: str, applied: dict[str, str]
) -> None:
    ident = applied["ID"]
    kubectl(
        control_plane,
        "patch",
        "api",
        "weather",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"access":{"approval":"Manual"}}}',
    )

    def state() -> str | None:
        subs = (get(kube, "tenants", f"t-{ident}").get("status") or {}).get("subscriptions")
        return subs[0]["state"] if subs else None

    wait_for(lambda: state() == "PendingApproval", what="PendingApproval")
    cmd = [TOLLPLANE, "approve", f"t-{ident}", f"{namespace}/weather"]
    out = subprocess.run(cmd, env=control_plane.env(), capture_output=True, text=True, check=True)
    assert "approved tenant" in out.stdout
    again = subprocess.run(cmd, env=control_plane.env(), capture_output=True, text=True, check=True)
    assert "already approved" in again.stdout
    wait_for(lambda: state() == "Active", what="Active after approval")


def test_invalid_manifests_are_rejected_with_the_rule_message(
    control_plane: ControlPlane, tollplane_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    rendered = tmp_path / "invalid.yaml"
    rendered.write_text(
        Template((MANIFESTS / "invalid.yaml").read_text()).substitute(
            NS=namespace, ID=unique_name("i")
        )
    )
    result = subprocess.run(
        [str(control_plane.kubectl), "apply", "-f", str(rendered)],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    for message in (
        "a Deprecated Api needs lifecycle.sunset",
        "upstream needs exactly one of service or url",
        "basePath must not end with '/'",
        "a plan whose overage is Block answers 402 and needs paymentUrl",
        "spec.quota.requests: Invalid value: 0",
        "key ids must be unique within a tenant",
    ):
        assert message in result.stderr, (message, result.stderr)


def test_retired_api_cannot_be_republished_on_the_same_version(
    control_plane: ControlPlane, tollplane_crds: list[str], namespace: str, tmp_path: Path
) -> None:
    def api(stage: str) -> str:
        path = tmp_path / f"{stage}.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Api",
                    "metadata": {"name": "old", "namespace": namespace},
                    "spec": {
                        "upstream": {"url": "https://x.example.com"},
                        "lifecycle": {"stage": stage},
                    },
                }
            )
        )
        return str(path)

    kubectl(control_plane, "apply", "-f", api("Retired"))
    result = subprocess.run(
        [str(control_plane.kubectl), "apply", "-f", api("Published")],
        env=control_plane.env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert "a Retired Api cannot be published again" in result.stderr


def _versions(kube: client.ApiClient, namespace: str, opns: str, ident: str) -> dict[str, str]:
    api = custom(kube)
    items: list[dict[str, Any]] = []
    items += api.list_namespaced_custom_object(GROUP, VERSION, namespace, "apis")["items"]
    items += [
        get(kube, "tenants", f"t-{ident}"),
        get(kube, "tenants", f"lost-{ident}"),
        get(kube, "billingplans", f"plan-{ident}"),
    ]
    items += api.list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes"
    )["items"]
    items += api.list_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1beta1", opns, "referencegrants"
    )["items"]
    core = client.CoreV1Api(kube)
    items += [
        kube.sanitize_for_serialization(x) for x in core.list_namespaced_config_map(opns).items
    ]
    items += [kube.sanitize_for_serialization(x) for x in core.list_namespaced_secret(opns).items]
    items += [
        kube.sanitize_for_serialization(x) for x in core.list_namespaced_event(namespace).items
    ]
    return {
        f"{i.get('kind')}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items
    }


def test_restart_writes_nothing(
    kube: client.ApiClient, operator: OperatorProcess, namespace: str, applied: dict[str, str]
) -> None:
    ident = applied["ID"]
    wait_for(lambda: ready(kube, "tenants", f"t-{ident}"), what="tenant Ready")
    operator.wait_quiet()  # other tests' namespaces are still being deleted
    before = _versions(kube, namespace, operator.namespace, ident)
    count = len(operator.publishes())
    operator.stop()
    operator.start()
    operator.wait_quiet(seconds=2)
    assert _versions(kube, namespace, operator.namespace, ident) == before
    for line in operator.publishes()[count:]:
        assert "0 applied, 0 created, 0 deleted, 0 status, 0 events" in line, line


def test_examples_reach_their_documented_state(
    kube: client.ApiClient,
    control_plane: ControlPlane,
    operator: OperatorProcess,
    tmp_path: Path,
) -> None:
    docs = []
    for path in sorted((REPO / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if (
                doc
                and doc["kind"] == "Secret"
                and doc["metadata"].get("namespace") == ("tollplane-system")
            ):
                doc["metadata"]["namespace"] = operator.namespace  # the operator's namespace
            if doc:
                docs.append(doc)
    combined = tmp_path / "examples.yaml"
    combined.write_text(yaml.safe_dump_all(docs))
    kubectl(control_plane, "apply", "-f", str(combined))
    try:
        for doc in docs:
            kind, meta = doc["kind"], doc["metadata"]
            if kind not in ("Api", "BillingPlan", "Tenant"):
                continue
            plural = {"Api": "apis", "BillingPlan": "billingplans", "Tenant": "tenants"}[kind]
            obj = wait_for(
                lambda p=plural, m=meta: ready(kube, p, m["name"], m.get("namespace")),
                what=f"{kind} {meta['name']} Ready",
                timeout=30,
            )
            notes = meta.get("annotations") or {}
            if "tollplane.io/expect-state" in notes:
                assert obj["status"]["state"] == notes["tollplane.io/expect-state"], meta["name"]
            if "tollplane.io/expect-subscriptions" in notes:
                want = dict(
                    p.split("=") for p in notes["tollplane.io/expect-subscriptions"].split(",")
                )
                got = {s["api"]: s["state"] for s in obj["status"]["subscriptions"]}
                assert got == want, meta["name"]
    finally:
        cluster_scoped = [
            f"{d['kind'].lower()}/{d['metadata']['name']}"
            for d in docs
            if d["kind"] in ("Tenant", "BillingPlan")
        ]
        kubectl(
            control_plane,
            "delete",
            "--ignore-not-found",
            "--wait=false",
            *cluster_scoped,
            "namespace/tollplane-examples",
        )
