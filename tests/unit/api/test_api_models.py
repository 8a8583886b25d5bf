"""The models' validation rules (each Rule's message) and the CRDs generated from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tollplane.api.apis import ApiSpec
from tollplane.api.base import Model
from tollplane.api.crd import KINDS, crd, crd_files
from tollplane.api.plans import BillingPlanSpec
from tollplane.api.tenants import TenantSpec

REPO = Path(__file__).resolve().parents[3]
UPSTREAM = {"service": {"name": "svc", "port": 80}}


@pytest.mark.parametrize(
    ("model", "spec", "message"),
    [
        (ApiSpec, {"upstream": {}}, "upstream needs exactly one of service or url"),
        (
            ApiSpec,
            {"upstream": {**UPSTREAM, "url": "https://x.example"}},
            "upstream needs exactly one of service or url",
        ),
        (
            ApiSpec,
            {"upstream": UPSTREAM, "lifecycle": {"stage": "Deprecated"}},
            "a Deprecated Api needs lifecycle.sunset",
        ),
        (
            ApiSpec,
            {"upstream": UPSTREAM, "lifecycle": {"successor": {}}},
            "successor needs exactly one of api",
        ),
        (ApiSpec, {"upstream": UPSTREAM, "basePath": "/v1/"}, "basePath must not end with '/'"),
        (BillingPlanSpec, {"overage": "Block"}, "a plan whose overage is Block answers 402"),
        (BillingPlanSpec, {"trialDays": 7}, "a plan with a trial needs paymentUrl"),
        (BillingPlanSpec, {"prepaid": True}, "a prepaid plan draws credit per call"),
        (
            BillingPlanSpec,
            {"price": {"unitPrice": "1", "tiers": [{"unitPrice": "1"}]}},
            "price takes either unitPrice or tiers, not both",
        ),
        (
            TenantSpec,
            {"plan": "p", "keys": [{"id": "a"}, {"id": "a"}]},
            "key ids must be unique within a tenant",
        ),
        (
            TenantSpec,
            {"plan": "p", "subscriptions": [{"namespace": "n", "name": "a"}] * 2},
            "each Api may be listed once in subscriptions",
        ),
    ],
)
def test_rule_messages(model: type[Model], spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(spec)


@pytest.mark.parametrize(
    ("model", "spec"),
    [
        (BillingPlanSpec, {"quota": {"requests": 0}}),
        (BillingPlanSpec, {"rateLimit": {"requests": -1}}),
        (BillingPlanSpec, {"price": {"monthlyFee": "ten"}}),
        (ApiSpec, {"upstream": UPSTREAM, "lifecycle": {"stage": "Gone"}}),
    ],
)
def test_numbers_are_positive_and_enums_closed(model: type[Model], spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(spec)


def _rules(kind_schema: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.extend(r["message"] for r in node.get("x-kubernetes-validations", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(kind_schema)
    return found


def test_every_cel_rule_reaches_the_crd_with_its_message() -> None:
    messages = [m for kind in KINDS for m in _rules(crd(kind))]
    declared = []
    for module_model in _all_models():
        declared.extend(r.message for r in module_model.__dict__.get("rules", ()) if r.cel)
    assert sorted(messages) == sorted(declared)


def _all_models() -> list[type[Model]]:
    seen: list[type[Model]] = []
    stack: list[type[Model]] = [Model]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub not in seen and sub.__module__.startswith("tollplane.api"):
                seen.append(sub)
                stack.append(sub)
    return seen


def test_crds_are_structural() -> None:
    for kind in KINDS:
        text = yaml.safe_dump(crd(kind))
        for forbidden in ("$ref", "anyOf", "null", "additionalProperties: false", "&id"):
            assert forbidden not in text, (kind.kind_name, forbidden)
        version = crd(kind)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert version["additionalPrinterColumns"]
        assert crd(kind)["spec"]["names"]["shortNames"]


def test_object_defaults_carry_their_field_defaults() -> None:
    spec = crd(KINDS[0])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["lifecycle"]["default"] == {"stage": "Draft"}


def test_subscriptions_are_a_list_map() -> None:
    schema = crd(KINDS[2])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    subs = schema["properties"]["spec"]["properties"]["subscriptions"]
    assert subs["x-kubernetes-list-type"] == "map"
    assert subs["x-kubernetes-list-map-keys"] == ["namespace", "name"]


def test_crds_folder_is_not_stale() -> None:
    for name, text in crd_files().items():
        path = REPO / "crds" / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} is stale: run `make crds`"
