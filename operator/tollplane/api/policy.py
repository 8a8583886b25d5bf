"""The Policy document: the one contract between the compiler (writer) and the gate (reader).

It is plain data, already resolved: every reference followed, every price in integer
micro-units, every time-based fact a timestamp that the gate compares with the clock at
request time (so trials end and grace periods run out without waiting for a reconcile).
Key values never appear here, only their SHA-256.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from pydantic import Field

from tollplane.api.apis import ErrorText, Stage
from tollplane.api.base import Model
from tollplane.api.plans import Overage, Period
from tollplane.api.tenants import SubscriptionState

POLICY_SCHEMA_VERSION = 1


class RoutePolicy(Model):
    """One servable address: an Api's hostnames + basePath and how to treat calls to it."""

    api: str  # namespace/name
    version: str
    hostnames: list[str] = Field(default_factory=list)  # empty: any host
    base_path: str = "/"
    methods: list[str] = Field(default_factory=list)  # empty: any method
    stage: Stage
    sunset: datetime | None = None
    deprecated_since: datetime | None = None
    successor_url: str | None = None
    docs_url: str | None = None
    upstream_url: str  # scheme://host:port[/path], no trailing slash
    timeout_seconds: float = 30.0
    credential_header: str = "Authorization"
    credential_scheme: str = "Bearer"
    log_headers: list[str] = Field(default_factory=list)
    log_query: bool = False
    errors: dict[str, ErrorText] = Field(default_factory=dict)


class QuotaPolicy(Model):
    """Requests allowed per calendar period (UTC)."""

    limit: int
    period: Period


class RatePolicy(Model):
    """Requests allowed per window; ``burst`` is the bucket size."""

    limit: int
    window_seconds: int
    burst: int


class PlanPolicy(Model):
    """A BillingPlan, reduced to what the gate decides with."""

    name: str
    currency: str = "USD"
    quota: QuotaPolicy | None = None
    rate: RatePolicy | None = None
    overage: Overage = Overage.THROTTLE
    trial_days: int = 0
    grace_days: int = 0
    # A plan with a fee or a trial requires payment: tenants without paidThrough are on trial.
    requires_payment: bool = False
    prepaid: bool = False
    unit_price_micros: int = 0
    payment_url: str | None = None
    errors: dict[str, ErrorText] = Field(default_factory=dict)


class TenantPolicy(Model):
    """A Tenant, reduced to what the gate decides with."""

    name: str
    plan: str
    suspended: bool = False
    # Api key (namespace/name) -> state; only Active lets calls through.
    entitlements: dict[str, SubscriptionState] = Field(default_factory=dict)
    trial_ends: datetime | None = None
    paid_through: datetime | None = None
    credit_micros: int | None = None


class KeyPolicy(Model):
    """Who a key hash belongs to."""

    tenant: str
    id: str
    expires: datetime | None = None


class Policy(Model):
    """Everything the gate needs, compiled from Apis, BillingPlans and Tenants."""

    schema_version: int = POLICY_SCHEMA_VERSION
    # Content hash of everything below; equal revisions mean equal policies.
    revision: str = ""
    routes: list[RoutePolicy] = Field(default_factory=list)
    plans: dict[str, PlanPolicy] = Field(default_factory=dict)
    tenants: dict[str, TenantPolicy] = Field(default_factory=dict)
    # SHA-256 hex of the key value -> owner.
    keys: dict[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")], KeyPolicy] = Field(
        default_factory=dict
    )

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of the policy without its revision."""
        body = self.model_copy(update={"revision": ""}).model_dump_json(by_alias=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def sealed(self) -> Policy:
        """This policy with ``revision`` set to its content hash (first 16 hex digits)."""
        return self.model_copy(update={"revision": self.content_hash()[:16]})
