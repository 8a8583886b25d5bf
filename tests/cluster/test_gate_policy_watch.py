"""The gate's Kubernetes policy source against a real kube-apiserver: a new revision is
served only once every shard ConfigMap exists; a corrupt shard never replaces the last good
policy."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from support.gate import scenario_policy
from support.kube import wait_for
from tollplane.api.policy import Policy
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


def _publish(core: client.CoreV1Api, namespace: str, policy: Policy) -> None:
    """Write a policy's shards, then its index, as the operator does."""
    index, shards = configmaps(policy, namespace)
    for shard in shards:
        core.create_namespaced_config_map(namespace, shard)
    _apply_index(core, namespace, index)


def test_revision_switches_only_when_complete(
    kube: client.ApiClient,
    namespace: str,
    watching: PolicyHolder,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    core = client.CoreV1Api(kube)
    first = scenario_policy("http://up.test", "http://dead.test")
    _publish(core, namespace, first)
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


class Relay:
    """A TCP relay on loopback in front of the real apiserver that can go silent.

    `freeze()` stops moving bytes on every open connection without closing any: what a
    connection dropped by a NAT or load balancer looks like to the client. This stands in
    for a network fault that cannot be produced here otherwise; the API behind it is real.
    New connections made after the freeze are relayed normally.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen: set[socket.socket] = set()
        self.open: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client_side, _ = self.listener.accept()
            except OSError:
                return
            server_side = socket.create_connection(self.target)
            self.open |= {client_side, server_side}
            for a, b in ((client_side, server_side), (server_side, client_side)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while source in self.frozen:
                    time.sleep(0.05)  # hold the bytes: the connection just goes quiet
                sink.sendall(data)

    def freeze(self) -> None:
        self.frozen |= self.open

    def close(self) -> None:
        self.listener.close()
        for s in self.open:
            with contextlib.suppress(OSError):
                s.close()


def test_a_silently_dead_watch_is_replaced(
    control_plane: Any, kube: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch connection that goes quiet without closing is given up after the client-side
    read timeout and the policy source lists and watches again, so updates keep coming."""
    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    relay = Relay((host, int(port)))
    configuration = copy.copy(kube.configuration)
    configuration.host = f"https://{host}:{relay.port}"
    monkeypatch.setattr(KubernetesSource, "REQUEST_TIMEOUT", (2.0, 3.0))
    holder = PolicyHolder()
    source = KubernetesSource(namespace, holder, api_client=client.ApiClient(configuration))
    core = client.CoreV1Api(kube)
    try:
        first = scenario_policy("http://up.test", "http://dead.test")
        _publish(core, namespace, first)
        source.start()
        wait_for(lambda: _revision(holder) == first.revision, timeout=20, what="first revision")
        relay.freeze()
        second = scenario_policy("http://up2.test", "http://dead.test")
        _publish(core, namespace, second)
        # Read timeout (3 s) + backoff (0.5 s) + relist; without the timeout it never comes.
        wait_for(lambda: _revision(holder) == second.revision, timeout=15, what="second revision")
    finally:
        asyncio.run(source.stop())
        relay.close()
