"""The ``BillingPlan`` custom resource: price, quota, rate limit, trial and overage."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from tollplane.api.apis import ErrorText
from tollplane.api.base import Condition, LongText, Model, Money, Resource, Rule, ShortText, Url


class Overage(StrEnum):
    """What happens when a tenant's quota is used up."""

    BLOCK = "Block"  # 402 Payment Required, with the plan's payment URL
    THROTTLE = "Throttle"  # 429 Too Many Requests until the period resets
    CHARGE = "Charge"  # allowed and metered as overage


class Period(StrEnum):
    """Calendar period of a quota (UTC)."""

    DAY = "Day"
    WEEK = "Week"
    MONTH = "Month"


class Window(StrEnum):
    """Length of a rate-limit window."""

    SECOND = "Second"
    MINUTE = "Minute"
    HOUR = "Hour"
    DAY = "Day"


WINDOW_SECONDS = {Window.SECOND: 1, Window.MINUTE: 60, Window.HOUR: 3600, Window.DAY: 86400}


class Tier(Model):
    """Graduated unit price: calls up to ``upTo`` in the period cost ``unitPrice`` each."""

    up_to: Annotated[int, Field(ge=1)] | None = None  # unset: every call beyond the last tier
    unit_price: Money


class Price(Model):
    """What the plan costs."""

    rules: ClassVar = (
        Rule(
            cel="!has(self.tiers) || size(self.tiers) == 0 || !has(self.unitPrice)",
            message="price takes either unitPrice or tiers, not both",
            check=lambda s: not s.tiers or s.unit_price is None,
        ),
    )

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    monthly_fee: Money = "0"
    unit_price: Money | None = None
    tiers: Annotated[list[Tier], Field(max_length=16)] = Field(default_factory=list)


class Quota(Model):
    """How many requests a tenant may make per calendar period."""

    requests: Annotated[int, Field(ge=1, le=10**12)]
    period: Period = Period.MONTH


class RateLimit(Model):
    """How many requests a tenant may make per sliding window."""

    requests: Annotated[int, Field(ge=1, le=10**9)]
    per: Window = Window.SECOND
    # Short bursts allowed above the steady rate; defaults to ``requests``.
    burst: Annotated[int, Field(ge=1, le=10**9)] | None = None


class BillingPlanSpec(Model):
    """Desired state of a BillingPlan."""

    rules: ClassVar = (
        Rule(
            cel="self.overage != 'Block' || has(self.paymentUrl)",
            message=(
                "a plan whose overage is Block answers 402 and needs paymentUrl: "
                "where a blocked tenant pays or upgrades"
            ),
            check=lambda s: s.overage != Overage.BLOCK or s.payment_url is not None,
        ),
        Rule(
            cel="self.trialDays == 0 || has(self.paymentUrl)",
            message="a plan with a trial needs paymentUrl: where a tenant pays when it ends",
            check=lambda s: s.trial_days == 0 or s.payment_url is not None,
        ),
        Rule(
            cel="!self.prepaid || (has(self.price) && has(self.price.unitPrice))",
            message="a prepaid plan draws credit per call and needs price.unitPrice",
            check=lambda s: not s.prepaid or s.price.unit_price is not None,
        ),
    )

    display_name: ShortText | None = None
    description: LongText | None = None
    price: Price = Field(default_factory=Price)
    quota: Quota | None = None
    rate_limit: RateLimit | None = None
    overage: Overage = Overage.THROTTLE
    trial_days: Annotated[int, Field(ge=0, le=366)] = 0
    # Days a tenant whose paidThrough date has passed keeps access before 402.
    grace_days: Annotated[int, Field(ge=0, le=366)] = 0
    # Calls draw down the tenant's prepaid credit; 402 when it is gone.
    prepaid: bool = False
    payment_url: Url | None = None
    errors: Annotated[dict[str, ErrorText], Field(max_length=32)] = Field(default_factory=dict)


class BillingPlanStatus(Model):
    """Observed state of a BillingPlan."""

    observed_generation: int | None = None
    tenants: Annotated[int, Field(ge=0)] | None = None
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list)


class BillingPlan(Resource):
    """A billing plan (cluster-scoped) that tenants are on."""

    kind_name: ClassVar[str] = "BillingPlan"
    plural: ClassVar[str] = "billingplans"
    short_names: ClassVar[tuple[str, ...]] = ("plan", "bp")
    namespaced: ClassVar[bool] = False
    description: ClassVar[str] = (
        "A billing plan: price, quota per period, rate limit, trial, grace and what "
        "happens on overage (Block = 402, Throttle = 429, Charge = bill)."
    )
    printer_columns: ClassVar = (
        {"name": "Fee", "type": "string", "jsonPath": ".spec.price.monthlyFee"},
        {"name": "Currency", "type": "string", "jsonPath": ".spec.price.currency"},
        {"name": "Quota", "type": "integer", "jsonPath": ".spec.quota.requests"},
        {"name": "Period", "type": "string", "jsonPath": ".spec.quota.period"},
        {"name": "Rate", "type": "integer", "jsonPath": ".spec.rateLimit.requests"},
        {"name": "Per", "type": "string", "jsonPath": ".spec.rateLimit.per"},
        {"name": "Overage", "type": "string", "jsonPath": ".spec.overage"},
        {"name": "Tenants", "type": "integer", "jsonPath": ".status.tenants"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["BillingPlan"] = "BillingPlan"
    spec: BillingPlanSpec
    status: BillingPlanStatus | None = None
