"""The gate's Kubernetes policy source against a real kube-apiserver: a new revision is
served only once every shard ConfigMap exists; a corrupt shard never replaces the last good
policy."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from support.gate import scenario_policy
from support.kube import wait_for
from tollplane.api.shards import configmaps
from tollplane.gate.loader import KubernetesSource, PolicyHolder

pytestmark = pytest.mark.cluster


def _revision(holder: PolicyHolder) -> str | None:
    return holder.index.revision if holder.index else None


@pytest.fixture
def watching(kube: client.ApiClient, namespace: str) -> Iterator[PolicyHolder]:
    holder = PolicyHolder()
    source = KubernetesSource(namespace, holder, api_client=kube)
    source.start()
    yield holder
    asyncio.run(source.stop())  # the daemon thread ends at its next event


def _apply_index(core: client.CoreV1Api, namespace: str, index: dict[str, Any]) -> None:
    try:
        core.replace_namespaced_config_map(index["metadata"]["name"], namespace, index)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_config_map(namespace, index)


def test_revision_switches_only_when_complete(
    kube: client.ApiClient,
    namespace: str,
    watching: PolicyHolder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = client.CoreV1Api(kube)
    first = scenario_policy("http://up.test", "http://dead.test")
    index, shards = configmaps(first, namespace)
    for shard in shards:
        core.create_namespaced_config_map(namespace, shard)
    _apply_index(core, namespace, index)
    wait_for(lambda: _revision(watching) == first.revision, timeout=20, what="first revision")

    # A bigger policy in several shards: publish the index first and hold one shard back.
    monkeypatch.setattr("tollplane.api.shards.SHARD_BYTES", 8192)
    second = scenario_policy("http://up.test", "http://dead.test", extra_tenants=3000)
    index, shards = configmaps(second, namespace)
    assert len(shards) >= 3
    for shard in shards[:-1]:
        core.create_namespaced_config_map(namespace, shard)
    _apply_index(core, namespace, index)
    time.sleep(1.5)
    assert _revision(watching) == first.revision  # never half a policy
    core.create_namespaced_config_map(namespace, shards[-1])
    wait_for(lambda: _revision(watching) == second.revision, timeout=20, what="second revision")

    # A third revision whose shard is corrupt: refused, the second keeps serving.
    third = scenario_policy("http://up2.test", "http://dead.test")
    index, shards = configmaps(third, namespace)
    payload = base64.b64decode(shards[0]["binaryData"]["policy.json.gz"])
    shards[0]["binaryData"]["policy.json.gz"] = base64.b64encode(payload[:-8]).decode()
    core.create_namespaced_config_map(namespace, shards[0])
    _apply_index(core, namespace, index)
    wait_for(lambda: watching.errors >= 1, timeout=20, what="the corrupt shard to be refused")
    assert _revision(watching) == second.revision
    assert watching.last_error is not None
    assert "digest" in watching.last_error.message
