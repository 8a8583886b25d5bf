"""Status of every Api, BillingPlan and Tenant: conditions a person can act on.

Each resource gets ``Ready`` plus conditions specific to its kind (``Routed`` and
``SuccessorResolved`` on Apis, ``PlanResolved``, ``SubscriptionsResolved`` and ``KeysReady``
on Tenants). A condition keeps its ``lastTransitionTime`` while its status stays the same, so
recomputing an unchanged status yields an identical document and no write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tollplane.api.base import Condition
from tollplane.api.tenants import SubscriptionState

MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Transition:
    """A condition that changed: becomes a Kubernetes Event on the resource."""

    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class StatusUpdate:
    """The status one resource should have."""

    kind: str
    name: str
    namespace: str | None
    uid: str | None
    status: dict[str, Any]

    @property
    def key(self) -> str:
        """``namespace/name`` or ``name``."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


class Conditions:
    """Builds a condition list, carrying lastTransitionTime over from the previous one."""

    def __init__(self, previous: Sequence[Condition], generation: int | None, now: datetime):
        self._previous = {c.type: c for c in previous}
        self._generation = generation
        self._now = now.replace(microsecond=0)
        self.items: list[Condition] = []

    def set(self, type_: str, ok: bool, reason: str, message: str) -> Condition:
        """Add condition ``type_`` (True when ``ok``)."""
        status = "True" if ok else "False"
        old = self._previous.get(type_)
        since = old.last_transition_time if old and old.status == status else None
        condition = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=_clip(message),
            observed_generation=self._generation,
            last_transition_time=since or self._now,
        )
        self.items.append(condition)
        return condition

    def wire(self) -> list[dict[str, Any]]:
        """Ready first, then the others in the order they were set."""
        ordered = sorted(self.items, key=lambda c: c.type != "Ready")
        return [c.wire() for c in ordered]


def transitions(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[Transition]:
    """Conditions whose status or reason changed, as Events (Warning when not True).

    Every change of Ready is reported; other conditions only when they go wrong, so a new
    resource yields one Event rather than one per condition.
    """
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in old}
    events = []
    for c in new:
        if c["type"] != "Ready" and c["status"] == "True":
            continue
        if before.get(c["type"]) != (c["status"], c["reason"]):
            kind = "Normal" if c["status"] == "True" else "Warning"
            events.append(Transition(kind, str(c["reason"]), f"{c['type']}: {c['message']}"))
    return events


def subscription_summary(states: Mapping[str, SubscriptionState]) -> tuple[bool, str, str]:
    """(all usable, reason, message) for a Tenant's SubscriptionsResolved condition."""
    if not states:
        return True, "NoSubscriptions", "no subscriptions; list Apis in spec.subscriptions"
    by_state: dict[SubscriptionState, list[str]] = {}
    for api, state in states.items():
        by_state.setdefault(state, []).append(api)
    active = len(by_state.get(SubscriptionState.ACTIVE, []))
    if active == len(states):
        return True, "AllActive", f"{active} subscription(s) active"
    parts: list[str] = []
    texts = {
        SubscriptionState.API_NOT_FOUND: "no such Api",
        SubscriptionState.PENDING_APPROVAL: "waiting for the Api owner's approval",
        SubscriptionState.NOT_SERVING: "Api not serving (Draft, Retired or address conflict)",
    }
    reason = "AllActive"
    for state in (
        SubscriptionState.NOT_SERVING,
        SubscriptionState.PENDING_APPROVAL,
        SubscriptionState.API_NOT_FOUND,
    ):
        if state in by_state:
            # The most actionable problem names the condition.
            reason = {
                SubscriptionState.API_NOT_FOUND: "ApiNotFound",
                SubscriptionState.PENDING_APPROVAL: "PendingApproval",
                SubscriptionState.NOT_SERVING: "ApiNotServing",
            }[state]
            parts.insert(0, f"{texts[state]}: {', '.join(sorted(by_state[state]))}")
    return False, reason, f"{active} of {len(states)} active; " + "; ".join(parts)
