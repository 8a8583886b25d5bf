"""Problem bodies: defaults, and Api-over-plan precedence of custom error text."""

from __future__ import annotations

import json

from tollplane.api.apis import ErrorText
from tollplane.api.reasons import Reason
from tollplane.gate.problems import body, texts


def test_default_text() -> None:
    assert texts(Reason.QUOTA_EXHAUSTED, None, None)[0] == "Quota exhausted"


def test_api_overrides_plan_field_by_field() -> None:
    api = {"quota-exhausted": ErrorText(title="Api title")}
    plan = {"quota-exhausted": ErrorText(title="Plan title", detail="Plan detail")}
    assert texts(Reason.QUOTA_EXHAUSTED, api, plan) == ("Api title", "Plan detail")


def test_body_members() -> None:
    doc = json.loads(
        body(
            Reason.CREDIT_EXHAUSTED,
            request_id="r1",
            api="ns/a",
            tenant="t",
            plan="p",
            extra={"paymentUrl": "https://pay", "retryAfter": None},
        )
    )
    assert doc == {
        "type": "https://tollplane.io/problems/credit-exhausted",
        "title": "Credit exhausted",
        "status": 402,
        "detail": "The prepaid credit is used up; top up to continue.",
        "instance": "r1",
        "reason": "credit-exhausted",
        "api": "ns/a",
        "tenant": "t",
        "plan": "p",
        "paymentUrl": "https://pay",
    }
