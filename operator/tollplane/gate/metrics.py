"""Prometheus metrics of the gate, in a registry of its own (one per gate instance).

Series:

* ``tollplane_gate_requests_total{api,tenant,status,reason}``: every call and its answer.
* ``tollplane_gate_request_duration_seconds{api}``: time in the gate, upstream included.
* ``tollplane_gate_upstream_duration_seconds{api}``: time to the upstream's response headers.
* ``tollplane_gate_overage_requests_total{api,tenant}``: calls beyond quota under Charge.
* ``tollplane_gate_counters_unavailable_total{action}``: calls decided without counters
  (``action`` = ``allowed`` when failing open, ``denied`` when failing closed).
* ``tollplane_gate_policy_info{revision}``, ``..._policy_loaded_timestamp_seconds``,
  ``..._policy_age_seconds``, ``..._policy_load_errors_total``, ``..._policy_routes``,
  ``..._policy_tenants``, ``..._policy_keys``: which policy is served and since when.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from tollplane.gate.loader import PolicyHolder

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _PolicyCollector(Collector):
    """Reads the holder at scrape time, so age is always current."""

    def __init__(self, holder: PolicyHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        index = self.holder.index
        info = GaugeMetricFamily(
            "tollplane_gate_policy_info", "The policy revision being served", labels=["revision"]
        )
        errors = CounterMetricFamily(
            "tollplane_gate_policy_load_errors", "Policy inputs refused (old policy kept)"
        )
        errors.add_metric([], self.holder.errors)
        yield errors
        if index is None:
            yield info
            return
        info.add_metric([index.revision], 1)
        yield info
        now = time.time()
        for name, doc, value in (
            ("loaded_timestamp_seconds", "When the served policy was loaded", index.loaded_at),
            ("age_seconds", "Seconds since the served policy was loaded", now - index.loaded_at),
            ("routes", "Routes in the served policy", index.routes),
            ("tenants", "Tenants in the served policy", len(index.tenants)),
            ("keys", "Key hashes in the served policy", len(index.keys)),
        ):
            yield GaugeMetricFamily(f"tollplane_gate_policy_{name}", doc, value=value)


class Metrics:
    """The gate's metric objects and their registry."""

    def __init__(self, holder: PolicyHolder) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tollplane_gate_requests",
            "Calls answered, by Api, tenant, status and decision reason",
            ["api", "tenant", "status", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "tollplane_gate_request_duration_seconds",
            "Time from request to the end of the answer, upstream included",
            ["api"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "tollplane_gate_upstream_duration_seconds",
            "Time until the upstream's response headers",
            ["api"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.overage = Counter(
            "tollplane_gate_overage_requests",
            "Calls allowed beyond the quota under overage Charge",
            ["api", "tenant"],
            registry=self.registry,
        )
        self.counters_unavailable = Counter(
            "tollplane_gate_counters_unavailable",
            "Calls decided while the counter store was unreachable",
            ["action"],
            registry=self.registry,
        )
        self.registry.register(_PolicyCollector(holder))

    def render(self) -> bytes:
        """The text exposition of every series."""
        return bytes(generate_latest(self.registry))
