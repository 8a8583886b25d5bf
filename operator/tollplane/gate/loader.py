"""Where the gate's policy comes from, and the rule that it never serves half of one.

:class:`PolicyHolder` owns the policy being served.  Sources offer it whole policies; it
indexes each new revision and swaps it in with one attribute assignment (atomic: a request
reads the holder once and keeps that index to the end).  Anything that fails to assemble,
validate or index is logged and counted, and the last good policy keeps serving.

Sources:

* :class:`KubernetesSource` lists and watches the policy ConfigMaps (index + shards, selected
  by :data:`tollplane.api.shards.POLICY_SELECTOR`) in a background thread and offers a
  revision only once :func:`tollplane.api.shards.assemble` accepts it: every shard present and
  the digest right.
* :class:`FileSource` polls a JSON policy file (or ``policy.json`` in a directory) for dev mode
  and tests.  Writers should replace the file atomically (write then rename).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tollplane.api.policy import Policy
from tollplane.api.shards import (
    COMPONENT_INDEX,
    COMPONENT_SHARD,
    INDEX_NAME,
    LABEL_COMPONENT,
    POLICY_SELECTOR,
    PolicyAssemblyError,
    assemble,
    shard_bytes,
)
from tollplane.gate.index import PolicyIndex, build

log = logging.getLogger("tollplane.gate.policy")


@dataclass
class LoadError:
    """The most recent policy that was refused, for logs, metrics and /readyz."""

    source: str
    message: str
    at: float


class PolicyHolder:
    """The policy being served. Readers take ``holder.index`` once per request."""

    def __init__(self) -> None:
        self.index: PolicyIndex | None = None
        self.errors = 0
        self.last_error: LoadError | None = None
        self._lock = threading.Lock()  # offers come from the loop and from the watch thread

    def offer(self, policy: Policy, source: str) -> bool:
        """Serve ``policy`` from now on if it is new and indexes cleanly; True if swapped."""
        with self._lock:
            current = self.index
            if current is not None and policy.revision == current.revision:
                return False
            try:
                index = build(policy)
            except ValueError as exc:
                self._refuse(source, f"revision {policy.revision}: {exc}")
                return False
            self.index = index
        log.info(
            "serving policy revision %s from %s (%d routes, %d tenants, %d keys)",
            index.revision,
            source,
            index.routes,
            len(index.tenants),
            len(index.keys),
        )
        return True

    def refuse(self, source: str, message: str) -> None:
        """Record input that could not become a policy; the current one keeps serving."""
        with self._lock:
            self._refuse(source, message)

    def _refuse(self, source: str, message: str) -> None:
        self.errors += 1
        self.last_error = LoadError(source, message, time.time())
        serving = self.index.revision if self.index else "none"
        log.error("policy from %s refused, still serving %s: %s", source, serving, message)


def parse_policy(data: bytes) -> Policy:
    """A Policy from JSON bytes (gzip'd or not); unsealed documents get their revision here."""
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    policy = Policy.model_validate_json(data)
    return policy if policy.revision else policy.sealed()


class FileSource:
    """Polls a policy file (or ``DIR/policy.json``) and offers each new version."""

    def __init__(self, path: Path, holder: PolicyHolder, interval: float = 1.0) -> None:
        self.path = path
        self.holder = holder
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _file(self) -> Path:
        if self.path.is_dir():
            for name in ("policy.json", "policy.json.gz"):
                if (self.path / name).exists():
                    return self.path / name
            return self.path / "policy.json"
        return self.path

    def poll(self) -> None:
        """Offer the file's policy if the file changed since the last poll."""
        path = self._file()
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._seen:
            return
        self._seen = stamp
        try:
            policy = parse_policy(path.read_bytes())
        except (OSError, ValueError, ValidationError) as exc:
            self.holder.refuse(str(path), f"cannot read policy: {exc}")
            return
        self.holder.offer(policy, str(path))

    async def _loop(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        """Load once now, then keep polling in a task of the running loop."""
        self.poll()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def kube_client() -> Any:
    """A Kubernetes ApiClient: in-cluster config inside a Pod, else KUBECONFIG/~/.kube."""
    from kubernetes import client, config  # noqa: PLC0415 - only the kubernetes source needs it

    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    return config.new_client_from_config()  # type: ignore[no-untyped-call]


class KubernetesSource:
    """Lists and watches the policy ConfigMaps of a namespace in a background thread."""

    WATCH_SECONDS = 300
    # Client-side (connect, read) timeouts: the apiserver ends a healthy watch after
    # WATCH_SECONDS, so silence beyond that means a dead connection (e.g. dropped by a load
    # balancer without a FIN), which would otherwise block the watch, and every policy
    # update, forever.
    REQUEST_TIMEOUT = (10.0, WATCH_SECONDS + 30.0)
    BACKOFF_SECONDS = (0.5, 1.0, 2.0, 5.0)

    def __init__(self, namespace: str, holder: PolicyHolder, api_client: Any = None) -> None:
        self.namespace = namespace
        self.holder = holder
        self._api_client = api_client
        self._objects: dict[str, tuple[str, Mapping[str, str], bytes]] = {}
        self._attempted: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    @property
    def source(self) -> str:
        """How this source names itself in logs."""
        return f"configmaps {self.namespace}/{INDEX_NAME}*"

    def start(self) -> None:
        """Start watching in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="policy-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop watching (the thread ends at its next event or timeout)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _remember(self, cm: Any) -> None:
        labels = cm.metadata.labels or {}
        component = labels.get(LABEL_COMPONENT, "")
        if component == COMPONENT_SHARD:
            payload = shard_bytes({"binaryData": cm.binary_data or {}})
            self._objects[cm.metadata.name] = (component, {}, payload)
        elif component == COMPONENT_INDEX and cm.metadata.name == INDEX_NAME:
            self._objects[cm.metadata.name] = (component, dict(cm.data or {}), b"")

    def _try_assemble(self) -> None:
        index = self._objects.get(INDEX_NAME)
        if index is None:
            return
        index_data = index[1]
        shards = {n: o[2] for n, o in self._objects.items() if o[0] == COMPONENT_SHARD}
        current = self.holder.index
        if current is not None and index_data.get("revision") == current.revision:
            return
        # Re-assemble only when something relevant changed since the last attempt.
        attempt = repr((sorted(index_data.items()), sorted(shards)))
        if attempt == self._attempted:
            return
        self._attempted = attempt
        try:
            policy = assemble(index_data, shards)
        except PolicyAssemblyError as exc:
            if "waiting for shard" in str(exc):
                log.info("%s", exc)
            else:
                self.holder.refuse(self.source, str(exc))
            return
        self.holder.offer(policy, self.source)

    def _run(self) -> None:
        from kubernetes import client, watch  # noqa: PLC0415 - see kube_client()
        from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

        failures = 0
        while not self._stop.is_set():
            try:
                if self._api_client is None:
                    self._api_client = kube_client()
                core = client.CoreV1Api(self._api_client)
                listed = core.list_namespaced_config_map(
                    self.namespace,
                    label_selector=POLICY_SELECTOR,
                    _request_timeout=self.REQUEST_TIMEOUT,
                )
                self._objects.clear()
                for cm in listed.items:
                    self._remember(cm)
                self._try_assemble()
                failures = 0
                since = listed.metadata.resource_version if listed.metadata else None
                self._watch = watch.Watch()  # type: ignore[no-untyped-call]
                for event in self._watch.stream(
                    core.list_namespaced_config_map,
                    self.namespace,
                    label_selector=POLICY_SELECTOR,
                    resource_version=since,
                    timeout_seconds=self.WATCH_SECONDS,
                    _request_timeout=self.REQUEST_TIMEOUT,
                ):
                    if self._stop.is_set():
                        return
                    kind, cm = event["type"], event["object"]
                    if kind == "ERROR":
                        break  # usually 410 Gone: relist
                    if kind == "DELETED":
                        self._objects.pop(cm.metadata.name, None)
                    else:
                        self._remember(cm)
                    self._try_assemble()
            except ApiException as exc:
                if exc.status != 410:
                    failures += 1
                    log.warning("policy watch: %s %s", exc.status, exc.reason)
            except Exception as exc:  # the watch must outlive any failure
                failures += 1
                log.warning("policy watch failed: %s", exc)
            if failures:
                delay = self.BACKOFF_SECONDS[min(failures, len(self.BACKOFF_SECONDS)) - 1]
                self._stop.wait(delay)
