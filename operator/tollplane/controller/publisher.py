"""The publisher: one coalesced, level-based reconcile of everything at a time.

kopf handlers only record objects in stores and mark the world dirty. The publisher waits
for dirt, lets a burst settle (debounce), then builds a Snapshot, compiles it, reads what the
operator wrote before, and writes only the difference: server-side apply of changed objects,
deletes of objects nobody wants, status of resources whose status changed, Events for
condition transitions. A restart therefore writes nothing when nothing changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from tollplane.api.base import API_VERSION
from tollplane.api.keys import generate_key
from tollplane.api.shards import (
    COMPONENT_INDEX,
    COMPONENT_SHARD,
    INDEX_NAME,
    LABEL_COMPONENT,
    LABEL_REVISION,
)
from tollplane.compile import Desired, Invalid, Settings, Snapshot, compile_all, statuses
from tollplane.compile.compiler import object_ref
from tollplane.compile.objects import stamped
from tollplane.compile.snapshot import (
    ANNOTATION_APPLIED,
    ANNOTATION_OWNER,
    FIELD_MANAGER,
    LABEL_MANAGED_BY,
    secret_view,
)
from tollplane.compile.status import StatusUpdate, Transition, transitions
from tollplane.controller.kube import Kube, KubeError, Ref

log = logging.getLogger("tollplane.operator")
T = TypeVar("T")
R = TypeVar("R")

MANAGED = f"{LABEL_MANAGED_BY}={FIELD_MANAGER}"
ROUTE_KINDS = ("HTTPRoute", "Ingress", "ReferenceGrant", "Service")
PARALLEL = 16


@dataclass
class Indexed:
    """One custom resource as the operator holds it: parsed, plus its raw status and uid."""

    resource: Any  # Api | BillingPlan | Tenant | Invalid
    status: dict[str, Any] | None
    uid: str


@dataclass
class Stats:
    """What the last publish did (logged, and read by the benchmark through the log)."""

    revision: str = ""
    applied: int = 0
    created: int = 0
    deleted: int = 0
    statuses: int = 0
    events: int = 0
    compile_seconds: float = 0.0
    total_seconds: float = 0.0


@dataclass
class Live:
    """What exists of the objects the operator writes."""

    objects: dict[Ref, dict[str, Any]] = field(default_factory=dict)
    secrets: list[dict[str, Any]] = field(default_factory=list)
    index_revision: str | None = None
    index_previous: str | None = None


class Publisher:
    """Owns the dirty flag and runs publishes one at a time."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        source: Callable[[], tuple[dict[str, Indexed], dict[str, Indexed], dict[str, Indexed]]],
        *,
        debounce: float = 0.5,
        resync: float = 60.0,
    ):
        self.kube = kube
        self.settings = settings
        self.source = source
        self.debounce = debounce
        self.resync = resync
        self.dirty = asyncio.Event()
        # Status this process wrote last, per resource uid: skips a second write while the
        # store has not yet seen the first one.
        self._written: dict[str, dict[str, Any]] = {}
        self._instance = socket.gethostname()
        self.stats = Stats()

    def touch(self) -> None:
        """Something changed: publish soon (bursts coalesce into one publish)."""
        self.dirty.set()

    async def run(self) -> None:
        """Publish whenever dirty (and every ``resync`` seconds), forever."""
        await self.wait_until_synced()
        backoff = 1.0
        while True:
            # Periodic resync: time-based states (trials, grace) and Secret edits.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.dirty.wait(), timeout=self.resync)
            await asyncio.sleep(self.debounce)
            self.dirty.clear()
            try:
                await self.publish()
                backoff = 1.0
            except Exception:
                # Never die: log, back off, try the whole thing again (level-based).
                log.exception("publish failed; retrying in %.0fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                self.dirty.set()

    async def wait_until_synced(self, interval: float = 0.5) -> None:
        """Block until the watch has delivered every Api, BillingPlan and Tenant that exists,
        so the first publish never compiles (or prunes after) a half-known world.

        Lists the uids of each kind and waits until the source holds them all; lists again
        while waiting, so an object deleted in between is not waited for.
        """
        while True:
            try:
                missing = await asyncio.to_thread(self._missing)
            except Exception as exc:  # never die before the first publish: retry
                log.warning("cannot list Apis, BillingPlans and Tenants yet: %s", exc)
                missing = -1
            if missing == 0:
                self.touch()
                return
            await asyncio.sleep(interval)

    def _missing(self) -> int:
        """How many existing resources the source has not seen yet."""
        known = {item.uid for store in self.source() for item in store.values()}
        listed = {
            item["metadata"]["uid"]
            for kind in ("Api", "BillingPlan", "Tenant")
            for item in self.kube.list(kind, None, metadata_only=True)
        }
        return len(listed - known)

    # ------------------------------------------------------------------ one publish

    async def publish(self) -> Stats:
        """One full reconcile. Returns what it did."""
        started = time.perf_counter()
        stats = Stats()
        apis, plans, tenants = self.source()
        live = await asyncio.to_thread(self._read_live)
        now = datetime.now(UTC)
        snapshot = Snapshot(
            apis={k: v.resource for k, v in apis.items()},
            plans={k: v.resource for k, v in plans.items()},
            tenants={k: v.resource for k, v in tenants.items()},
            secrets={v.name: v for v in (secret_view(s) for s in live.secrets)},
            settings=self.settings,
            now=now,
        )
        t0 = time.perf_counter()
        desired = compile_all(snapshot)
        generated: dict[str, str] = {}
        if desired.keys.missing:
            generated = {name: generate_key() for _, _, name in desired.keys.missing}
            desired = compile_all(snapshot, generated)
        stats.compile_seconds = time.perf_counter() - t0
        stats.revision = desired.policy.revision
        failures = await self._apply(desired, live, generated, stats)
        await self._prune(desired, live, stats)
        t0 = time.perf_counter()
        updates = statuses(snapshot, desired, failures)
        stats.compile_seconds += time.perf_counter() - t0
        raw = {**_raw_status("Api", apis), **_raw_status("BillingPlan", plans)}
        raw.update(_raw_status("Tenant", tenants))
        await self._write_statuses(updates, raw, stats)
        stats.total_seconds = time.perf_counter() - started
        self.stats = stats
        log.info(
            "published revision %s: %d applied, %d created, %d deleted, %d status, %d events "
            "(compile %.3fs, total %.3fs)",
            stats.revision,
            stats.applied,
            stats.created,
            stats.deleted,
            stats.statuses,
            stats.events,
            stats.compile_seconds,
            stats.total_seconds,
        )
        return stats

    def _read_live(self) -> Live:
        live = Live()
        ns = self.settings.namespace
        for item in self.kube.list("ConfigMap", ns, "app.kubernetes.io/part-of=tollplane"):
            live.objects[Ref.of(item)] = item
            if item["metadata"]["name"] == INDEX_NAME:
                live.index_revision = (item.get("data") or {}).get("revision")
                live.index_previous = (item.get("data") or {}).get("previous")
        for kind in ROUTE_KINDS:
            for item in self.kube.list(kind, None, MANAGED):
                live.objects[Ref.of(item)] = item
        # All Secrets of the namespace: adopted key Secrets carry no label of ours.
        live.secrets = self.kube.list("Secret", ns)
        for item in live.secrets:
            live.objects[Ref.of(item)] = item
        return live

    async def _apply(
        self, desired: Desired, live: Live, generated: Mapping[str, str], stats: Stats
    ) -> dict[str, str]:
        """Apply changed objects in order; returns object ref -> error for those that failed."""
        failures: dict[str, str] = {}

        def write(manifest: dict[str, Any]) -> str:
            ref = Ref.of(manifest)
            try:
                if ref.kind == "Secret" and ref.name in generated:
                    # Create, never apply: a Secret someone made meanwhile must not be clobbered.
                    self.kube.create(manifest)
                    return "created"
                self.kube.apply(manifest)
                return "applied"
            except KubeError as exc:
                if exc.status == 404 and ref.kind in ("HTTPRoute", "ReferenceGrant"):
                    message = "the Gateway API CRDs are not installed in this cluster"
                else:
                    message = exc.message
                failures[object_ref(manifest)] = message
                log.warning("could not write %s: %s", object_ref(manifest), message)
                return "failed"

        objects = [_with_previous(m, desired, live) for m in desired.objects]
        todo = [m for m in objects if _changed(m, live.objects.get(Ref.of(m)))]
        # Shards before the index that names them, so a gate never sees a dangling index.
        index = [m for m in todo if _component(m) == COMPONENT_INDEX]
        before = [m for m in todo if _component(m) != COMPONENT_INDEX and m["kind"] != "HTTPRoute"]
        after = [m for m in todo if m["kind"] == "HTTPRoute"]
        for batch in (before, index, after):
            results = await _parallel(write, batch)
            stats.created += results.count("created")
            stats.applied += results.count("applied")
        return failures

    async def _prune(self, desired: Desired, live: Live, stats: Stats) -> None:
        """Delete objects the operator wrote that nobody wants any more."""
        wanted = {Ref.of(m) for m in desired.objects}
        keep_revisions = {desired.policy.revision, _previous(desired, live)}
        doomed: list[Ref] = []
        for ref, item in live.objects.items():
            if ref in wanted:
                continue
            labels = item["metadata"].get("labels") or {}
            owner = (item["metadata"].get("annotations") or {}).get(ANNOTATION_OWNER, "")
            if ref.kind == "ConfigMap":
                # Keep the previous revision's shards: a gate may be loading them right now.
                if (
                    labels.get(LABEL_COMPONENT) == COMPONENT_SHARD
                    and labels.get(LABEL_REVISION) not in keep_revisions
                ):
                    doomed.append(ref)
            elif ref.kind in ("HTTPRoute", "Ingress"):
                if f"Api {owner}" not in desired.frozen:
                    doomed.append(ref)
            elif ref.kind in ("ReferenceGrant", "Service"):
                doomed.append(ref)
        doomed.extend(Ref("Secret", self.settings.namespace, n) for n in desired.keys.orphans)

        def delete(ref: Ref) -> bool:
            try:
                self.kube.delete(ref)
            except KubeError as exc:
                log.warning("could not delete %s %s/%s: %s", ref.kind, ref.namespace, ref.name, exc)
                return False
            return True

        stats.deleted += sum(await _parallel(delete, doomed))

    async def _write_statuses(
        self,
        updates: Iterable[StatusUpdate],
        raw: Mapping[str, dict[str, Any] | None],
        stats: Stats,
    ) -> None:
        todo: list[tuple[StatusUpdate, list[Transition]]] = []
        for update in updates:
            # Plain dict equality: as exact as comparing canonical JSON, and at 10,000
            # tenants seconds faster per publish.
            uid = update.uid or f"{update.kind} {update.key}"
            if self._written.get(uid) == update.status:
                continue
            live = raw.get(f"{update.kind} {update.key}") or {}
            if live == update.status:
                self._written[uid] = update.status
                continue
            changes = transitions(live.get("conditions") or [], update.status["conditions"])
            todo.append((update, changes))

        def write(item: tuple[StatusUpdate, list[Transition]]) -> int:
            """Writes one status and its Events; returns how many Events were posted."""
            update, changes = item
            meta: dict[str, Any] = {"name": update.name}
            if update.namespace:
                meta["namespace"] = update.namespace
            manifest = {
                "apiVersion": API_VERSION,
                "kind": update.kind,
                "metadata": meta,
                "status": update.status,
            }
            try:
                self.kube.apply(manifest, subresource="status")
            except KubeError as exc:
                if exc.status != 404:  # deleted meanwhile: nothing to report on
                    log.warning("could not write status of %s %s: %s", update.kind, update.key, exc)
                return -1
            self._written[update.uid or f"{update.kind} {update.key}"] = update.status
            return sum(self._event(update, change) for change in changes)

        results = await _parallel(write, todo)
        stats.statuses += sum(1 for r in results if r >= 0)
        stats.events += sum(r for r in results if r > 0)

    def _event(self, update: StatusUpdate, change: Transition) -> int:
        """A core/v1 Event on the resource (cluster-scoped ones record theirs in default)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": update.kind,
            "name": update.name,
            "uid": update.uid,
        }
        if update.namespace:
            involved["namespace"] = update.namespace
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{update.name}.",
                "namespace": update.namespace or "default",
            },
            "involvedObject": involved,
            "type": change.type,
            "reason": change.reason,
            "message": change.message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(event)
        except KubeError as exc:
            log.warning("could not post event on %s %s: %s", update.kind, update.key, exc)
            return 0
        return 1


def _previous(desired: Desired, live: Live) -> str | None:
    """The revision published before the one being published now."""
    if live.index_revision != desired.policy.revision:
        return live.index_revision
    return live.index_previous


def _with_previous(manifest: dict[str, Any], desired: Desired, live: Live) -> dict[str, Any]:
    """The policy index names the previous revision too, whose shards are kept: gates that
    are still loading it find them, and a restarted operator knows what to keep (so it
    deletes nothing)."""
    previous = _previous(desired, live)
    if _component(manifest) != COMPONENT_INDEX or previous is None:
        return manifest
    return stamped({**manifest, "data": {**manifest["data"], "previous": previous}})


def _component(manifest: Mapping[str, Any]) -> str:
    return str((manifest["metadata"].get("labels") or {}).get(LABEL_COMPONENT, ""))


def _changed(manifest: Mapping[str, Any], live: Mapping[str, Any] | None) -> bool:
    """Whether applying ``manifest`` would change anything, by the content hash it carries
    (a subset comparison with the live object could not see a removed field)."""
    if live is None:
        return True
    if _component(manifest) == COMPONENT_SHARD:
        return False  # immutable and named after its content
    want = (manifest["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED)
    have = (live["metadata"].get("annotations") or {}).get(ANNOTATION_APPLIED)
    return bool(want is None or want != have)


def _raw_status(kind: str, items: Mapping[str, Indexed]) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for key, item in items.items():
        resource = item.resource
        ident = resource.key if isinstance(resource, Invalid) else key
        out[f"{kind} {ident}"] = item.status
    return out


async def _parallel(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """Run blocking ``fn`` over ``items`` in threads, at most PARALLEL at a time."""
    gate = asyncio.Semaphore(PARALLEL)

    async def one(item: T) -> R:
        async with gate:
            return await asyncio.to_thread(fn, item)

    return list(await asyncio.gather(*(one(i) for i in items)))
