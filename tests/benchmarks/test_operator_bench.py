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
from datetime import UTC, datetime
from typing import Any

import pytest

from tollplane.api.shards import encode
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
                        {"namespace": f"team-{(t + j) % 10}", "name": f"api-{(t * 7 + j) % apis}"}
                        for j in range(5)
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
