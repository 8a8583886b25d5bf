"""kopf wiring: indexes of Apis, BillingPlans and Tenants, and a publisher task.

The handlers do no reconciling themselves: indexes keep the parsed objects, event handlers
mark the publisher dirty. Only ``@kopf.index`` and ``@kopf.on.event`` are used, so kopf never
writes progress, diff-base annotations or finalizers onto the resources.
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
        self.indexes: dict[str, Mapping[str, Any]] = {}
        self._seen: dict[str, tuple[Any, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self.registry = kopf.OperatorRegistry()
        self._register()

    def snapshot(self) -> tuple[dict[str, Indexed], dict[str, Indexed], dict[str, Indexed]]:
        """The current contents of the three indexes (one object per key)."""
        apis, plans, tenants = (
            {key: next(iter(store)) for key, store in self.indexes[f"{p}_index"].items()}
            for p in PLURALS
        )
        return apis, plans, tenants

    def _register(self) -> None:
        registry = self.registry

        for plural in PLURALS:

            @kopf.index(GROUP, VERSION, plural, id=f"{plural}_index", registry=registry)
            def index(body: kopf.Body, **_: Any) -> dict[str, Indexed]:
                raw = dict(body)
                raw.pop("metadata", None)
                meta = {k: v for k, v in body.metadata.items() if k != "managedFields"}
                resource = parse({**raw, "metadata": meta})
                return {resource.key: Indexed(resource, body.get("status"))}

            @kopf.on.event(GROUP, VERSION, plural, id=f"{plural}_changed", registry=registry)
            def changed(event: Mapping[str, Any], uid: str, meta: kopf.Meta, **_: Any) -> None:
                if self.publisher is None:
                    return
                # Event handlers only run once every index is fully listed.
                self.publisher.ready.set()
                # Status-only updates (mostly our own writes) change nothing worth compiling.
                mark = (meta.get("generation"), meta.get("deletionTimestamp"))
                if event.get("type") == "DELETED":
                    self._seen.pop(uid, None)
                    self.publisher.touch()
                elif self._seen.get(uid) != mark:
                    self._seen[uid] = mark
                    self.publisher.touch()

        @kopf.on.login(registry=registry)
        def login(**kwargs: Any) -> Any:
            # A custom registry lacks kopf's default login handlers: in-cluster service
            # account first, then $KUBECONFIG / ~/.kube/config (kopf's own readers).
            return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

        @kopf.on.startup(registry=registry)
        async def start(**kwargs: Any) -> None:
            self.indexes = {f"{p}_index": kwargs[f"{p}_index"] for p in PLURALS}
            self.publisher = self._factory(self.snapshot)
            self._task = asyncio.create_task(self.publisher.run(), name="tollplane-publisher")

        @kopf.on.cleanup(registry=registry)
        async def stop(**_: Any) -> None:
            if self._task is not None:
                self._task.cancel()
