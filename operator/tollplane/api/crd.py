"""CustomResourceDefinitions generated from the pydantic models (never edited by hand).

Pydantic emits JSON Schema; the apiserver wants a *structural* OpenAPI v3 schema:
references inlined, no ``null`` types, no ``additionalProperties: false``, defaults that
are valid objects.  This module does that translation and adds what only Kubernetes
knows about: CEL rules, printer columns, short names, the status subresource.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from tollplane.api.apis import Api
from tollplane.api.base import GROUP, VERSION, Resource
from tollplane.api.plans import BillingPlan
from tollplane.api.tenants import Tenant

KINDS: tuple[type[Resource], ...] = (Api, BillingPlan, Tenant)
_DROP = {"title", "$defs", "discriminator"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline references and rewrite JSON Schema constructs the apiserver rejects."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
        if schema.get("default") is not None:
            rest["default"] = schema["default"]
        if len(branches) == 1:
            # Optional[X]: an absent field, never an explicit null.
            return _structural({**branches[0], **rest}, defs)
        types = {b.get("type") for b in branches}
        if types == {"integer", "string"}:
            return {**_clean(rest), "x-kubernetes-int-or-string": True}
        raise ValueError(f"cannot express anyOf {types} in a structural schema")
    out = _clean(schema)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("type") == "object" and "properties" in out:
        required = set(out.get("required", []))
        props = {}
        for name, sub in out["properties"].items():
            optional = "anyOf" in sub and any(b.get("type") == "null" for b in sub["anyOf"])
            prop = _structural(sub, defs)
            if name not in required and not optional and "default" not in prop:
                # A defaulted object or list: let the apiserver fill it, so nested defaults
                # and CEL rules see the same shape the pydantic model does.
                if prop.get("type") == "object":
                    # The defaults of its fields, not {}: the apiserver checks CEL rules
                    # against the default as written (e.g. lifecycle.stage must exist).
                    prop["default"] = {
                        k: copy.deepcopy(v["default"])
                        for k, v in prop.get("properties", {}).items()
                        if "default" in v
                    }
                elif prop.get("type") == "array":
                    prop["default"] = []
            props[name] = prop
        out["properties"] = props
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _structural(out["additionalProperties"], defs)
    if "items" in out:
        out["items"] = _structural(out["items"], defs)
    return out


def _clean(schema: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k not in _DROP}
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if out.get("default") is None:
        out.pop("default", None)
    return out


def openapi_schema(kind: type[Resource], part: str) -> dict[str, Any]:
    """The structural schema of ``spec`` or ``status`` of ``kind``."""
    full = kind.model_json_schema(by_alias=True, mode="validation")
    defs = full.get("$defs", {})
    return _structural(full["properties"][part], defs)


def crd(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    plural = kind.plural
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "tollplane"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced" if kind.namespaced else "Cluster",
            "names": {
                "kind": kind.kind_name,
                "listKind": f"{kind.kind_name}List",
                "plural": plural,
                "singular": kind.kind_name.lower(),
                "shortNames": list(kind.short_names),
                "categories": ["tollplane"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": list(kind.printer_columns),
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": openapi_schema(kind, "spec"),
                                "status": openapi_schema(kind, "status"),
                            },
                        }
                    },
                }
            ],
        },
    }


def crd_files() -> dict[str, str]:
    """File name -> YAML text for every CRD, as stored in crds/."""
    header = "# Generated by `tollplane crds` from operator/tollplane/api. Do not edit.\n"
    return {
        f"{GROUP}_{kind.plural}.yaml": header + yaml.safe_dump(crd(kind), sort_keys=False)
        for kind in KINDS
    }
