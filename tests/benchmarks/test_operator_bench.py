"""Operator benchmark (not in the default run): `make bench-operator`.

1. compile: 1,000 Apis x 10,000 Tenants x 3 keys through compile_all + statuses, in process;
   reports compile time, policy size, shard count and the RSS growth.
2. publish (cluster): the same objects created in the real control plane, `tollplane operator`
   started; reports the time to the first complete publish, the operator's RSS, and the time
   from `kubectl apply` of one changed Tenant to the new revision in the index ConfigMap.

Scale with TOLLPLANE_BENCH_APIS / TOLLPLANE_BENCH_TENANTS (defaults 1000 / 10000).
"""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.kube import kubectl, unique_name, wait_for
from support.operator_process import OperatorProcess
from tollplane.api.shards import INDEX_NAME, encode
from tollplane.compile import ParentRef, Settings, compile_all, snapshot_from_objects, statuses

APIS = int(os.environ.get("TOLLPLANE_BENCH_APIS", "1000"))
TENANTS = int(os.environ.get("TOLLPLANE_BENCH_TENANTS", "10000"))
KEYS = 3


def objects(apis: int = APIS, tenants: int = TENANTS) -> list[dict[str, Any]]:
    """Apis spread over 10 namespaces, 3 plans, tenants subscribed to 5 Apis with 3 keys."""
    out: list[dict[str, Any]] = []
    for i in range(apis):
        out.append(
            {
                "apiVersion": "tollplane.io/v1alpha1",
                "kind": "Api",
                "metadata": {"name": f"api-{i}", "namespace": f"team-{i % 10}", "uid": f"a{i}"},
                "spec": {
                    "basePath": f"/api-{i}",
                    "upstream": {"service": {"name": "s", "port": 80}},
                    "lifecycle": {"stage": "Published"},
                },
            }
        )
    for name, fee in (("free", "0"), ("pro", "49.00"), ("enterprise", "1500.00")):
        out.append(
            {
                "apiVersion": "tollplane.io/v1alpha1",
                "kind": "BillingPlan",
                "metadata": {"name": name, "uid": name},
                "spec": {"price": {"monthlyFee": fee}, "rateLimit": {"requests": 50}},
            }
        )
    for t in range(tenants):
        out.append(
            {
                "apiVersion": "tollplane.io/v1alpha1",
                "kind": "Tenant",
                "metadata": {"name": f"tenant-{t}", "uid": f"t{t}"},
                "spec": {
                    "plan": ("free", "pro", "enterprise")[t % 3],
                    "subscriptions": [
                        {"namespace": f"team-{a % 10}", "name": f"api-{a}"}
                        for a in ((t * 7 + j) % apis for j in range(5))
                    ],
                    "keys": [{"id": f"k{k}"} for k in range(KEYS)],
                    "billing": {"paidThrough": "2099-01-01T00:00:00Z"},
                },
            }
        )
    return out


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.benchmark
def test_compile_at_scale() -> None:
    settings = Settings(gateway=ParentRef.parse("infra/public"))
    now = datetime.now(UTC)
    manifests = objects()
    before = rss_mib()
    t0 = time.perf_counter()
    snap = snapshot_from_objects(manifests, settings=settings, now=now)
    t1 = time.perf_counter()
    first = compile_all(snap)
    generated = {name: f"tp_bench_{name}" for _, _, name in first.keys.missing}
    t2 = time.perf_counter()
    desired = compile_all(snap, generated)
    t3 = time.perf_counter()
    updates = statuses(snap, desired)
    t4 = time.perf_counter()
    shards = encode(desired.policy)
    print(
        f"\noperator compile: {APIS} Apis x {TENANTS} tenants x {KEYS} keys\n"
        f"  parse {t1 - t0:.2f}s, compile {t3 - t2:.2f}s, statuses {t4 - t3:.2f}s\n"
        f"  objects {len(desired.objects)}, statuses {len(updates)}, policy keys "
        f"{len(desired.policy.keys)}\n"
        f"  policy {sum(len(s) for s in shards) / 1024:.0f} KiB gzip in {len(shards)} shard(s)\n"
        f"  peak RSS {rss_mib():.0f} MiB (+{rss_mib() - before:.0f} MiB)"
    )
    assert len(desired.policy.keys) == TENANTS * KEYS
    assert all(len(s) < 1024 * 1024 for s in shards)


def _create_all(kube: Any, manifests: list[dict[str, Any]]) -> None:
    """Create the objects through the API, 10 requests in flight (the client's pool size):
    kubectl apply of 11,000 objects one by one would take longer than the measurement."""
    from kubernetes import client  # noqa: PLC0415 - cluster part only

    custom = client.CustomObjectsApi(kube)

    def create(obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        plural = {"Api": "apis", "BillingPlan": "billingplans", "Tenant": "tenants"}[obj["kind"]]
        if "namespace" in meta:
            custom.create_namespaced_custom_object(
                "tollplane.io", "v1alpha1", meta["namespace"], plural, obj
            )
        else:
            custom.create_cluster_custom_object("tollplane.io", "v1alpha1", plural, obj)

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(create, manifests))


def _rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a process, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


@pytest.mark.benchmark
@pytest.mark.timeout(3600)  # the first publish writes ~50,000 objects
def test_publish_at_scale(
    control_plane: Any,
    kube: Any,
    tollplane_crds: list[str],
    gateway_api_crds: list[str],
    tmp_path: Path,
) -> None:
    """The operator's first publish of the whole world, and one Tenant change end to end."""
    from kubernetes import client  # noqa: PLC0415 - cluster part only

    bench = unique_name("bench")
    manifests = objects()
    # Unique names, so the benchmark never collides with tests or an earlier run.
    for obj in manifests:
        meta = obj["metadata"]
        meta.pop("uid")
        meta["name"] = f"{bench}-{meta['name']}"
        meta["labels"] = {"tollplane.io/bench": bench}
        if "namespace" in meta:
            meta["namespace"] = f"{bench}-{meta['namespace']}"
        spec = obj["spec"]
        if obj["kind"] == "Tenant":
            spec["plan"] = f"{bench}-{spec['plan']}"
            for sub in spec["subscriptions"]:
                sub["namespace"], sub["name"] = (
                    f"{bench}-{sub['namespace']}",
                    f"{bench}-{sub['name']}",
                )
    core = client.CoreV1Api(kube)
    namespaces = [f"{bench}-team-{i}" for i in range(10)] + [f"{bench}-system"]
    for ns in namespaces:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    operator = OperatorProcess(
        control_plane, f"{bench}-system", tmp_path / "operator.log", debounce=0.5
    )
    try:
        t0 = time.perf_counter()
        _create_all(kube, manifests)
        created = time.perf_counter() - t0

        t0 = time.perf_counter()
        operator.start(timeout=1800)
        first = time.perf_counter() - t0
        assert operator.proc is not None
        line = operator.publishes()[-1]
        operator.wait_quiet(seconds=5, timeout=600)
        settled = time.perf_counter() - t0
        rss, peak = _rss_mib(operator.proc.pid)
        index = core.read_namespaced_config_map(INDEX_NAME, f"{bench}-system")
        shards = index.data["shards"].split(",")
        secrets = core.list_namespaced_secret(
            f"{bench}-system", label_selector="tollplane.io/tenant", limit=1
        )

        # One changed Tenant, applied with kubectl as a user would.
        tenant = next(m for m in manifests if m["kind"] == "Tenant")
        tenant["spec"]["plan"] = f"{bench}-enterprise"
        changed = tmp_path / "tenant.yaml"
        changed.write_text(yaml.safe_dump(tenant))
        before, published = index.data["revision"], operator.publishes()
        t0 = time.perf_counter()
        kubectl(control_plane, "apply", "-f", str(changed))
        applied = time.perf_counter() - t0

        def new_revision() -> str | None:
            data = core.read_namespaced_config_map(INDEX_NAME, f"{bench}-system").data
            return data["revision"] if data["revision"] != before else None

        wait_for(new_revision, timeout=120, interval=0.02, what="the new revision")
        latency = time.perf_counter() - t0
        change = operator.wait_published(previous=published, timeout=30)
        print(
            f"\noperator publish: {APIS} Apis x {TENANTS} tenants x {KEYS} keys on the real "
            f"control plane\n"
            f"  created the {len(manifests)} resources in {created:.1f}s\n"
            f"  start -> first publish {first:.1f}s: {line.split('published ', 1)[1]}\n"
            f"  start -> settled (5 s without a publish) {settled:.1f}s\n"
            f"  operator RSS {rss:.0f} MiB (peak {peak:.0f} MiB); "
            f"policy in {len(shards)} shard(s)\n"
            f"  kubectl apply of one Tenant {applied:.2f}s; apply start -> new revision in the "
            f"index {latency:.2f}s\n"
            f"  that publish: {change.split('published ', 1)[1]}"
        )
        assert secrets.items, "no key Secret was written"
    finally:
        operator.stop()
        for ns in namespaces:
            core.delete_namespace(ns)
        kubectl(
            control_plane,
            "delete",
            "tenants,billingplans",
            "-l",
            f"tollplane.io/bench={bench}",
            "--wait=false",
        )
