"""The ``Tenant`` custom resource: a consumer of Apis, with a plan, keys and billing facts."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from tollplane.api.base import (
    Condition,
    Label,
    Model,
    Money,
    Name,
    Resource,
    Rule,
    ShortText,
)


class ApiRef(Model):
    """A reference to an Api (namespaced) from a cluster-scoped Tenant."""

    namespace: Name
    name: Name

    @property
    def key(self) -> str:
        """``namespace/name``, the Api's identity in the policy."""
        return f"{self.namespace}/{self.name}"


class Key(Model):
    """An API key. The operator generates its value into a Secret (or adopts an existing one)."""

    id: Label
    # Unset: the operator names it tollplane-key-<tenant>-<id> in its own namespace.
    secret_name: Name | None = None
    expires: datetime | None = None


class Billing(Model):
    """Billing facts, usually written by a payment integration or a human."""

    # When the trial started; defaults to the Tenant's creation time.
    trial_start: datetime | None = None
    # The subscription is paid up to this instant; unset means never paid.
    paid_through: datetime | None = None
    # Prepaid credit, in the plan's currency.
    credit: Money | None = None


class TenantSpec(Model):
    """Desired state of a Tenant."""

    rules: ClassVar = (
        Rule(
            cel="self.keys.all(k, self.keys.exists_one(o, o.id == k.id))",
            message="key ids must be unique within a tenant",
            check=lambda s: len({k.id for k in s.keys}) == len(s.keys),
        ),
        Rule(
            # A CEL pairwise check over 256 entries exceeds the apiserver's cost budget; the
            # list-map keys on spec.subscriptions make the apiserver reject duplicates itself.
            cel="",
            message="each Api may be listed once in subscriptions",
            check=lambda s: len({a.key for a in s.subscriptions}) == len(s.subscriptions),
        ),
    )

    display_name: ShortText | None = None
    contact: Annotated[str, Field(max_length=256)] | None = None
    plan: Name
    subscriptions: Annotated[
        list[ApiRef],
        Field(
            max_length=256,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["namespace", "name"],
            },
        ),
    ] = Field(default_factory=list)
    keys: Annotated[list[Key], Field(max_length=16)] = Field(default_factory=list)
    billing: Billing = Field(default_factory=Billing)
    suspended: bool = False
    suspend_reason: ShortText | None = None


class BillingState(StrEnum):
    """A tenant's billing state as the gate sees it now (derived, for humans)."""

    TRIAL = "Trial"
    TRIAL_ENDED = "TrialEnded"
    ACTIVE = "Active"
    PAST_DUE = "PastDue"  # paid-through passed, still within grace
    PAYMENT_REQUIRED = "PaymentRequired"  # beyond grace: 402
    SUSPENDED = "Suspended"


class SubscriptionState(StrEnum):
    """Whether a subscription lets the tenant call the Api."""

    ACTIVE = "Active"
    PENDING_APPROVAL = "PendingApproval"
    API_NOT_FOUND = "ApiNotFound"
    NOT_SERVING = "NotServing"  # Draft or Retired


class SubscriptionStatus(Model):
    """One subscription as the operator resolved it."""

    api: Annotated[str, Field(max_length=507)]
    state: SubscriptionState
    url: Annotated[str, Field(max_length=2048)] | None = None


class KeyStatus(Model):
    """Where a key's value lives (never the value)."""

    id: Label
    secret_name: Name
    # First 12 hex digits of the key's SHA-256: enough to match log lines, useless to attackers.
    fingerprint: Annotated[str, Field(max_length=64)]
    expires: datetime | None = None
    adopted: bool = False


class TenantStatus(Model):
    """Observed state of a Tenant."""

    observed_generation: int | None = None
    plan: Name | None = None
    state: BillingState | None = None
    trial_ends: datetime | None = None
    subscriptions: Annotated[list[SubscriptionStatus], Field(max_length=256)] = Field(
        default_factory=list
    )
    keys: Annotated[list[KeyStatus], Field(max_length=16)] = Field(default_factory=list)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list)


class Tenant(Resource):
    """A consumer of Apis (cluster-scoped): its plan, subscriptions, keys and billing."""

    kind_name: ClassVar[str] = "Tenant"
    plural: ClassVar[str] = "tenants"
    short_names: ClassVar[tuple[str, ...]] = ("tnt",)
    namespaced: ClassVar[bool] = False
    description: ClassVar[str] = (
        "A tenant: the plan it is on, the Apis it subscribes to, its API keys "
        "(values live only in Secrets) and its billing facts."
    )
    printer_columns: ClassVar = (
        {"name": "Plan", "type": "string", "jsonPath": ".spec.plan"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspended"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["Tenant"] = "Tenant"
    spec: TenantSpec
    status: TenantStatus | None = None
