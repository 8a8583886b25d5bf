"""kopf wiring: stores of Apis, BillingPlans and Tenants, and a publisher task.

The handlers do no reconciling themselves: one ``@kopf.on.event`` handler per kind keeps the
parsed objects in a store (by uid) and marks the publisher dirty. Only event handlers are
used, so kopf never writes progress, diff-base annotations or finalizers onto the resources.

Why not ``@kopf.index``: while the first listing runs, kopf gives every indexed object a
readiness toggle and wakes every waiting worker whenever one is added or dropped, which is
quadratic in the number of objects (measured: minutes of CPU before the first publish at
11,000 objects). The publisher instead lists uids itself and waits until the stores hold
them all (:meth:`Publisher.wait_until_synced`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tollplane.api.base import GROUP, VERSION
from tollplane.compile import parse
from tollplane.controller.publisher import Indexed, Publisher

log = logging.getLogger("tollplane.operator")
PLURALS = ("apis", "billingplans", "tenants")


class Operator:
    """The kopf registry plus the state its handlers share with the publisher."""

    def __init__(self, publisher_factory: Any):
        # Built at startup, inside kopf's event loop (asyncio primitives bind to it).
        self._factory = publisher_factory
        self.publisher: Publisher | None = None
        # plural -> uid -> the object as last seen on the watch.
        self.stores: dict[str, dict[str, Indexed]] = {p: {} for p in PLURALS}
        self._seen: dict[str, tuple[Any, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.registry = kopf.OperatorRegistry()
        self._register()

    def snapshot(self) -> tuple[dict[str, Indexed], dict[str, Indexed], dict[str, Indexed]]:
        """The current contents of the three stores, by resource key."""
        apis, plans, tenants = (
            {item.resource.key: item for item in list(self.stores[p].values())} for p in PLURALS
        )
        return apis, plans, tenants

    def _register(self) -> None:
        registry = self.registry

        for plural in PLURALS:
            store = self.stores[plural]

            # async: kopf runs sync handlers in a thread pool, and the publisher's asyncio
            # Event must be set from the loop (it is not thread-safe).
            @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}_changed", registry=registry)
            async def changed(
                event: Mapping[str, Any],
                body: kopf.Body,
                uid: str,
                meta: kopf.Meta,
                store: dict[str, Indexed] = store,
                **_: Any,
            ) -> None:
                # Status-only updates (mostly our own writes) change nothing worth compiling.
                mark = (meta.get("generation"), meta.get("deletionTimestamp"))
                if event.get("type") == "DELETED":
                    store.pop(uid, None)
                    self._seen.pop(uid, None)
                else:
                    store[uid] = _indexed(body)
                    if self._seen.get(uid) == mark:
                        return
                    self._seen[uid] = mark
                if self.publisher is not None:
                    self.publisher.touch()

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> Any:
            # A custom registry lacks kopf's default login handlers: in-cluster service
            # account first, then $KUBECONFIG / ~/.kube/config (kopf's own readers).
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

        @kopf.on.startup(registry=registry)
        async def start(**kwargs: Any) -> None:
            self.publisher = self._factory(self.snapshot)
            self._task = asyncio.create_task(self.publisher.run(), name="tollplane-publisher")

        @kopf.on.cleanup(registry=registry)
        async def stop(**_: Any) -> None:
            if self._task is not None:
                self._task.cancel()


def _indexed(body: kopf.Body) -> Indexed:
    """The parsed resource (without managedFields, which nothing reads) and its raw status."""
    raw = dict(body)
    raw.pop("metadata", None)
    meta = {k: v for k, v in body.metadata.items() if k != "managedFields"}
    resource = parse({**raw, "metadata": meta})
    return Indexed(resource, body.get("status"), str(meta.get("uid", "")))
