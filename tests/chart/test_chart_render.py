"""The chart renders what an operator of a production cluster expects, for every supported
combination of values: lint-clean, restricted pods, least-privilege RBAC, the CRDs of crds/,
and the settings contract of `tollplane operator` / `tollplane gate`.

These tests only run helm (no control plane); tests/chart/test_chart_cluster.py applies the
rendering to a real apiserver.
"""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.chart import (
    CHART_CRDS_DIR,
    REPO_CRDS_DIR,
    HelmError,
    Manifest,
    container_env,
    lint,
    of_kind,
    one,
    pod_specs,
    render,
)

NAMESPACE = "tollplane-system"
GATEWAY = {"namespace": "gateway-system", "name": "public", "sectionName": "https"}

# Every combination a user is expected to install: the default, each route kind, Redis with
# autoscaling, monitoring, peering, forward-auth behind ingress-nginx.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "httproute": {"route": {"kind": "HTTPRoute", "gateway": GATEWAY}},
    "ingress": {"route": {"kind": "Ingress", "ingress": {"className": "nginx"}}},
    "forward-auth": {
        "route": {"kind": "Ingress", "ingress": {"className": "nginx", "controller": "nginx"}},
        "gate": {"mode": "forward-auth"},
    },
    "redis-hpa": {
        "gate": {
            "redis": {"existingSecret": "tollplane-redis", "key": "url"},
            "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        }
    },
    "redis-replicas": {"gate": {"replicas": 3, "redis": {"existingSecret": "tollplane-redis"}}},
    "servicemonitor": {"gate": {"serviceMonitor": {"enabled": True, "labels": {"team": "api"}}}},
    "no-pdb-no-crds": {
        "gate": {"podDisruptionBudget": {"enabled": False}},
        "crds": {"install": False},
    },
    "peering": {"operator": {"peering": {"enabled": True}}},
}


@pytest.fixture(scope="module")
def renderings(helm_bin: Path) -> dict[str, list[Manifest]]:
    """Each variant rendered once for the whole module."""
    return {name: render(helm_bin, values) for name, values in VARIANTS.items()}


def _rules(role: Manifest) -> list[dict[str, Any]]:
    return list(role.get("rules", []))


def _grants(role: Manifest, resource: str) -> set[str]:
    """Verbs ``role`` grants on ``resource`` (any API group)."""
    return {
        verb
        for rule in _rules(role)
        if resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def test_chart_crds_are_a_byte_identical_copy_of_the_generated_crds() -> None:
    repo = sorted(p.name for p in REPO_CRDS_DIR.glob("*.yaml"))
    chart = sorted(p.name for p in CHART_CRDS_DIR.glob("*.yaml"))
    assert chart == repo
    _, mismatch, errors = filecmp.cmpfiles(REPO_CRDS_DIR, CHART_CRDS_DIR, repo, shallow=False)
    assert not mismatch, (
        f"charts/tollplane/crds-generated is stale ({', '.join(mismatch)}): run "
        "`cp crds/*.yaml charts/tollplane/crds-generated/` after `make crds`"
    )
    assert not errors


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_lints_strictly(helm_bin: Path, variant: str) -> None:
    report = lint(helm_bin, VARIANTS[variant])
    assert "0 chart(s) failed" in report


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_meets_the_restricted_pod_security_profile(
    renderings: dict[str, list[Manifest]], variant: str
) -> None:
    specs = pod_specs(renderings[variant])
    assert len(specs) == 2  # operator and gate
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == 65532, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in spec["containers"] + spec.get("initContainers", []):
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            assert not ctx["capabilities"].get("add"), name
            assert ctx.get("privileged", False) is False, name
            assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
            assert ctx.get("runAsUser", 65532) == 65532, name
            # A read-only root needs a writable /tmp, from an emptyDir.
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, name
            assert container["resources"]["requests"], name
            assert container.get("livenessProbe"), name
            assert container.get("readinessProbe"), name


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_operator_is_a_single_replica_that_is_replaced_not_rolled(
    renderings: dict[str, list[Manifest]], variant: str
) -> None:
    operator = one(renderings[variant], "Deployment", "operator")
    assert operator["spec"]["replicas"] == 1
    # Recreate: the old operator is gone before the new one starts, never two at once.
    assert operator["spec"]["strategy"] == {"type": "Recreate"}


def test_gate_role_reads_configmaps_and_nothing_else(renderings: dict[str, list[Manifest]]) -> None:
    for variant, manifests in renderings.items():
        gate_sa = one(manifests, "ServiceAccount", "gate")["metadata"]["name"]
        bound_roles = [
            b["roleRef"]
            for b in of_kind(manifests, "RoleBinding") + of_kind(manifests, "ClusterRoleBinding")
            if any(s["name"] == gate_sa for s in b["subjects"])
        ]
        assert bound_roles == [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": gate_sa}
        ], variant
        role = one(manifests, "Role", "gate")
        assert _rules(role) == [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
        ], variant


def test_operator_rbac_is_least_privilege(renderings: dict[str, list[Manifest]]) -> None:
    for variant, manifests in renderings.items():
        cluster_role = one(manifests, "ClusterRole", "operator")
        role = one(manifests, "Role", "operator")
        assert role["metadata"]["namespace"] == NAMESPACE
        for rule in _rules(cluster_role) + _rules(role):
            assert "*" not in rule["verbs"], (variant, rule)
            assert "*" not in rule["resources"], (variant, rule)
            assert "*" not in rule["apiGroups"], (variant, rule)
            assert "update" not in rule["verbs"], (variant, rule)  # everything is patched/applied
        # Secrets and ConfigMaps only in its own namespace, never cluster-wide.
        assert not _grants(cluster_role, "secrets"), variant
        assert not _grants(cluster_role, "configmaps"), variant
        assert _grants(role, "secrets") == {"get", "list", "watch", "create", "patch", "delete"}
        assert _grants(role, "configmaps") == {"get", "list", "watch", "create", "patch", "delete"}
        # Its own resources are read and patched, never created or deleted.
        assert _grants(cluster_role, "tenants") == {"get", "list", "watch", "patch"}
        assert _grants(cluster_role, "tenants/status") == {"get", "patch"}
        assert _grants(cluster_role, "httproutes") >= {"create", "patch", "delete"}
        assert _grants(cluster_role, "ingresses") >= {"create", "patch", "delete"}
        assert _grants(cluster_role, "customresourcedefinitions") == {"get", "list", "watch"}
        # Cluster-wide watching needs no namespace access (kopf only lists them for patterns).
        assert not _grants(cluster_role, "namespaces"), variant
        # Services are read everywhere (stale aliases are found by label) but written only
        # in Ingress mode, where ExternalName aliases of the gate sit beside the Ingresses.
        ingress = VARIANTS[variant].get("route", {}).get("kind") == "Ingress"
        writes = {"create", "patch", "delete"} if ingress else set()
        assert _grants(cluster_role, "services") == {"get", "list", "watch"} | writes, variant
        peering = VARIANTS[variant].get("operator", {}).get("peering", {}).get("enabled", False)
        assert bool(_grants(cluster_role, "clusterkopfpeerings")) == peering, variant


def test_operator_environment_follows_the_settings_contract(
    renderings: dict[str, list[Manifest]],
) -> None:
    env = container_env(one(renderings["httproute"], "Deployment", "operator"), NAMESPACE)
    assert env["TOLLPLANE_NAMESPACE"] == NAMESPACE
    assert env["POD_NAMESPACE"] == NAMESPACE
    assert env["TOLLPLANE_ROUTE_KIND"] == "HTTPRoute"
    assert env["TOLLPLANE_GATEWAY"] == "gateway-system/public/https"
    assert env["TOLLPLANE_GATE_SERVICE"] == f"{NAMESPACE}/tollplane-gate:80"
    assert env["TOLLPLANE_GATE_MODE"] == "proxy"
    assert env["TOLLPLANE_HEALTH_PORT"] == "8081"
    assert env["TOLLPLANE_PEERING"] == ""
    assert env["TOLLPLANE_LOG_LEVEL"] == "INFO"

    ingress = container_env(one(renderings["forward-auth"], "Deployment", "operator"), NAMESPACE)
    assert ingress["TOLLPLANE_ROUTE_KIND"] == "Ingress"
    assert ingress["TOLLPLANE_INGRESS_CLASS"] == "nginx"
    assert ingress["TOLLPLANE_INGRESS_CONTROLLER"] == "nginx"
    assert ingress["TOLLPLANE_GATE_MODE"] == "forward-auth"
    assert "TOLLPLANE_GATEWAY" not in ingress

    peering = container_env(one(renderings["peering"], "Deployment", "operator"), NAMESPACE)
    assert peering["TOLLPLANE_PEERING"] == "tollplane"
    peer = one(renderings["peering"], "ClusterKopfPeering")
    assert peer["metadata"]["name"] == "tollplane"


def test_gate_environment_ports_and_service(renderings: dict[str, list[Manifest]]) -> None:
    manifests = renderings["defaults"]
    gate = one(manifests, "Deployment", "gate")
    env = container_env(gate, NAMESPACE)
    assert env["TOLLPLANE_POLICY_SOURCE"] == "kubernetes"
    assert env["TOLLPLANE_NAMESPACE"] == NAMESPACE
    assert env["TOLLPLANE_GATE_PORT"] == "8080"
    assert env["TOLLPLANE_ADMIN_PORT"] == "9090"
    assert env["TOLLPLANE_LOG_LEVEL"] == "info"  # the gate's --log-level takes lower case
    assert "TOLLPLANE_REDIS_URL" not in env
    container = gate["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["gate"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "admin": 9090}

    services = {s["metadata"]["name"]: s for s in of_kind(manifests, "Service")}
    traffic = services["tollplane-gate"]["spec"]
    # Routes reach only the traffic port; metrics/health stay on a Service of their own.
    assert [(p["port"], p["targetPort"]) for p in traffic["ports"]] == [(80, "http")]
    assert traffic["selector"] == gate["spec"]["selector"]["matchLabels"]
    metrics = services["tollplane-gate-metrics"]["spec"]
    assert [p["targetPort"] for p in metrics["ports"]] == ["admin"]


def test_redis_url_comes_from_the_secret_and_hpa_owns_the_replica_count(
    renderings: dict[str, list[Manifest]],
) -> None:
    manifests = renderings["redis-hpa"]
    gate = one(manifests, "Deployment", "gate")
    env = gate["spec"]["template"]["spec"]["containers"][0]["env"]
    redis = next(e for e in env if e["name"] == "TOLLPLANE_REDIS_URL")
    assert redis["valueFrom"] == {"secretKeyRef": {"name": "tollplane-redis", "key": "url"}}
    # With an HPA the Deployment must not set replicas, or every `helm upgrade` resets them.
    assert "replicas" not in gate["spec"]
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == gate["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert not of_kind(renderings["defaults"], "HorizontalPodAutoscaler")


def test_pdb_and_service_monitor_select_the_gate(renderings: dict[str, list[Manifest]]) -> None:
    gate = one(renderings["defaults"], "Deployment", "gate")
    pdb = one(renderings["defaults"], "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == gate["spec"]["selector"]["matchLabels"]
    assert not of_kind(renderings["no-pdb-no-crds"], "PodDisruptionBudget")

    assert not of_kind(renderings["defaults"], "ServiceMonitor")
    monitor = one(renderings["servicemonitor"], "ServiceMonitor")
    assert monitor["metadata"]["labels"]["team"] == "api"
    metrics_service = next(
        s
        for s in of_kind(renderings["servicemonitor"], "Service")
        if s["metadata"]["name"].endswith("-metrics")
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "admin"


def test_crds_are_the_generated_ones_and_kept_on_uninstall(
    renderings: dict[str, list[Manifest]], helm_bin: Path
) -> None:
    generated = {
        doc["metadata"]["name"]: doc
        for path in sorted(REPO_CRDS_DIR.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
    }
    rendered = {
        crd["metadata"]["name"]: crd
        for crd in of_kind(renderings["defaults"], "CustomResourceDefinition")
        if crd["spec"]["group"] == "tollplane.io"
    }
    assert rendered.keys() == generated.keys()
    for name, crd in rendered.items():
        annotations = crd["metadata"].pop("annotations")
        assert annotations == {"helm.sh/resource-policy": "keep"}, name
        assert crd == generated[name], name

    unkept = render(helm_bin, {"crds": {"keep": False}})
    for crd in of_kind(unkept, "CustomResourceDefinition"):
        if crd["spec"]["group"] == "tollplane.io":
            assert "annotations" not in crd["metadata"]
    not_installed = renderings["no-pdb-no-crds"]
    assert not [
        c
        for c in of_kind(not_installed, "CustomResourceDefinition")
        if c["spec"]["group"] == "tollplane.io"
    ]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"route": {"kind": "HTTPRoute"}}, "route.gateway.name"),
        ({"gate": {"replicas": 2}}, "gate.redis.existingSecret"),
        ({"gate": {"autoscaling": {"enabled": True}}}, "shared counters"),
        ({"gate": {"mode": "forward-auth"}}, "forward-auth"),
        ({"route": {"kind": "Gateway"}}, "route/kind"),
        ({"gate": {"replicaz": 2}}, "replicaz"),
        ({"gate": {"redis": {"failure": "maybe"}}}, "failure"),
    ],
    ids=[
        "httproute-without-gateway",
        "replicas-without-redis",
        "hpa-without-redis",
        "forward-auth-without-ingress",
        "unknown-route-kind",
        "typo",
        "bad-enum",
    ],
)
def test_values_that_cannot_work_are_refused_with_a_clear_message(
    helm_bin: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm_bin, values)


def test_per_replica_counters_can_be_accepted_explicitly(helm_bin: Path) -> None:
    manifests = render(helm_bin, {"gate": {"replicas": 2, "allowPerReplicaCounters": True}})
    assert one(manifests, "Deployment", "gate")["spec"]["replicas"] == 2
