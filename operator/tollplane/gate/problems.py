"""RFC 9457 problem+json bodies for every answer the gate gives instead of the upstream's.

``type`` and ``reason`` are stable (see :mod:`tollplane.api.reasons`); ``title`` and
``detail`` are defaults that an Api or a BillingPlan may replace per reason.  Precedence,
field by field: the Api's ``errors`` entry, then the plan's, then the default: the Api owner
knows their callers best, the plan text is a catalogue-wide fallback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from tollplane.api.apis import ErrorText
from tollplane.api.reasons import REASONS, Reason, ReasonInfo

CONTENT_TYPE = "application/problem+json"


def texts(
    reason: Reason,
    api_errors: Mapping[str, ErrorText] | None,
    plan_errors: Mapping[str, ErrorText] | None,
) -> tuple[str, str]:
    """Title and detail of a reason after the Api's and the plan's overrides."""
    info = REASONS[reason]
    title, detail = info.title, info.detail
    for errors in (plan_errors, api_errors):  # later wins: the Api overrides the plan
        text = errors.get(reason.value) if errors else None
        if text is not None:
            title = text.title if text.title is not None else title
            detail = text.detail if text.detail is not None else detail
    return title, detail


def body(
    reason: Reason,
    *,
    request_id: str,
    api: str | None = None,
    tenant: str | None = None,
    plan: str | None = None,
    api_errors: Mapping[str, ErrorText] | None = None,
    plan_errors: Mapping[str, ErrorText] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The problem document of a denial, as UTF-8 JSON bytes.

    ``extra`` adds members such as ``paymentUrl`` (402), ``retryAfter`` (429),
    ``successor`` and ``docs``; members whose value is None are left out.
    """
    title, detail = texts(reason, api_errors, plan_errors)
    doc: dict[str, Any] = {
        "type": ReasonInfo.type_uri(reason),
        "title": title,
        "status": REASONS[reason].status,
        "detail": detail,
        "instance": request_id,
        "reason": reason.value,
        "api": api,
        "tenant": tenant,
        "plan": plan,
    }
    if extra:
        doc.update(extra)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()
