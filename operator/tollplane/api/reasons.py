"""Stable decision reason codes and the default text of their RFC 9457 problem bodies.

A reason code never changes once released: clients branch on ``type`` and ``reason``.
Plans and Apis may override ``title`` and ``detail`` per reason (``spec.errors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

PROBLEM_TYPE_BASE = "https://tollplane.io/problems/"


class Reason(StrEnum):
    """Why the gate answered what it answered."""

    ALLOWED = "allowed"
    NO_ROUTE = "no-route"
    API_DRAFT = "api-draft"
    API_RETIRED = "api-retired"
    METHOD_NOT_ALLOWED = "method-not-allowed"
    MISSING_CREDENTIAL = "missing-credential"
    INVALID_CREDENTIAL = "invalid-credential"
    EXPIRED_CREDENTIAL = "expired-credential"
    TENANT_SUSPENDED = "tenant-suspended"
    NOT_SUBSCRIBED = "not-subscribed"
    APPROVAL_PENDING = "approval-pending"
    TRIAL_ENDED = "trial-ended"
    PAYMENT_OVERDUE = "payment-overdue"
    CREDIT_EXHAUSTED = "credit-exhausted"
    QUOTA_EXHAUSTED = "quota-exhausted"
    RATE_LIMITED = "rate-limited"
    QUOTA_THROTTLED = "quota-throttled"
    NO_POLICY = "no-policy"
    COUNTERS_UNAVAILABLE = "counters-unavailable"
    UPSTREAM_UNAVAILABLE = "upstream-unavailable"
    UPSTREAM_TIMEOUT = "upstream-timeout"


@dataclass(frozen=True)
class ReasonInfo:
    """HTTP status and default human text of a reason."""

    status: int
    title: str
    detail: str

    @staticmethod
    def type_uri(reason: Reason) -> str:
        """The problem ``type`` URI of a reason."""
        return PROBLEM_TYPE_BASE + reason.value


REASONS: dict[Reason, ReasonInfo] = {
    Reason.ALLOWED: ReasonInfo(200, "OK", ""),
    Reason.NO_ROUTE: ReasonInfo(404, "Not Found", "No API is published at this address."),
    Reason.API_DRAFT: ReasonInfo(404, "Not Found", "No API is published at this address."),
    Reason.API_RETIRED: ReasonInfo(
        410, "API retired", "This API has been retired and no longer answers."
    ),
    Reason.METHOD_NOT_ALLOWED: ReasonInfo(
        405, "Method not allowed", "This API does not accept this HTTP method."
    ),
    Reason.MISSING_CREDENTIAL: ReasonInfo(
        401, "Credential required", "This API needs an API key; none was sent."
    ),
    Reason.INVALID_CREDENTIAL: ReasonInfo(
        401, "Invalid credential", "The API key sent is not known."
    ),
    Reason.EXPIRED_CREDENTIAL: ReasonInfo(
        401, "Credential expired", "The API key sent has expired; use a newer key."
    ),
    Reason.TENANT_SUSPENDED: ReasonInfo(403, "Tenant suspended", "This tenant is suspended."),
    Reason.NOT_SUBSCRIBED: ReasonInfo(
        403, "Not subscribed", "This tenant is not subscribed to this API."
    ),
    Reason.APPROVAL_PENDING: ReasonInfo(
        403,
        "Approval pending",
        "This tenant's subscription to this API is waiting for the API owner's approval.",
    ),
    Reason.TRIAL_ENDED: ReasonInfo(
        402, "Trial ended", "The free trial has ended; a paid subscription is needed."
    ),
    Reason.PAYMENT_OVERDUE: ReasonInfo(
        402, "Payment overdue", "The subscription is unpaid beyond its grace period."
    ),
    Reason.CREDIT_EXHAUSTED: ReasonInfo(
        402, "Credit exhausted", "The prepaid credit is used up; top up to continue."
    ),
    Reason.QUOTA_EXHAUSTED: ReasonInfo(
        402, "Quota exhausted", "The plan's quota for this period is used up; upgrade to continue."
    ),
    Reason.RATE_LIMITED: ReasonInfo(
        429, "Too many requests", "The plan's rate limit was exceeded; retry after a moment."
    ),
    Reason.QUOTA_THROTTLED: ReasonInfo(
        429,
        "Quota exhausted",
        "The plan's quota for this period is used up; calls resume when the period resets.",
    ),
    Reason.NO_POLICY: ReasonInfo(
        503, "Not ready", "The gate has not loaded a policy yet; retry shortly."
    ),
    Reason.COUNTERS_UNAVAILABLE: ReasonInfo(
        503, "Limits unavailable", "Usage limits cannot be checked right now; retry shortly."
    ),
    Reason.UPSTREAM_UNAVAILABLE: ReasonInfo(
        502, "Bad gateway", "The API's upstream could not be reached."
    ),
    Reason.UPSTREAM_TIMEOUT: ReasonInfo(
        504, "Gateway timeout", "The API's upstream did not answer in time."
    ),
}
