"""Shared building blocks of the custom resource models.

Every model is frozen, uses camelCase aliases on the wire and snake_case in Python, and
rejects unknown fields (the apiserver prunes them anyway; in dev mode a typo must not be
silently ignored).  Cross-field rules are declared once as :class:`Rule`: the same rule
becomes a CEL ``x-kubernetes-validations`` entry in the generated CRD (enforced by the
apiserver) and a pydantic check (enforced in dev mode and in the compiler), with one message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "tollplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 subdomain) and labels (RFC 1123 label).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
HOSTNAME = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# Money is a decimal string ("49.00", "0.0004") so no float rounding ever reaches an invoice.
MONEY = r"^[0-9]{1,12}(\.[0-9]{1,6})?$"
HTTP_URL = r"^https?://[^\s]+$"

Name = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
Label = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=HOSTNAME)]
Money = Annotated[str, Field(max_length=20, pattern=MONEY)]
Url = Annotated[str, Field(min_length=8, max_length=2048, pattern=HTTP_URL)]
ShortText = Annotated[str, Field(max_length=256)]
LongText = Annotated[str, Field(max_length=4096)]


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the apiserver, a Python predicate for everything else.

    ``check`` receives the validated model and returns True when the object is valid.
    ``cel`` is evaluated by the apiserver with ``self`` bound to the same object; an empty
    ``cel`` means the schema itself enforces the rule (e.g. list-map keys for uniqueness,
    where CEL would cost too much), and the rule is checked in Python only.
    """

    cel: str
    message: str
    check: Callable[[Any], bool]
    # Transition rules (using oldSelf) have no Python twin: only the apiserver sees history.
    transition: bool = False


def _cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    """Publish a model's rules as CEL ``x-kubernetes-validations`` in its JSON schema."""
    rules: Sequence[Rule] = cls.__dict__.get("rules", ())
    if rules:
        validations = [{"rule": r.cel, "message": r.message} for r in rules if r.cel]
        if validations:
            schema["x-kubernetes-validations"] = validations


class Model(BaseModel):
    """Base of every resource model: frozen, camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_cel_rules,
    )

    rules: ClassVar[Sequence[Rule]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Model:
        for rule in type(self).rules:
            if not rule.transition and not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as it is written to Kubernetes: camelCase, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Model):
    """A Kubernetes-style status condition (metav1.Condition)."""

    type: Annotated[str, Field(max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(max_length=1024)]
    message: Annotated[str, Field(max_length=32768)] = ""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    last_transition_time: datetime | None = None


class ObjectMeta(Model):
    """The parts of metadata Tollplane reads; everything else passes through untouched."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        json_schema_extra=_cel_rules,
    )

    name: Name
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Resource(Model):
    """Envelope shared by the three kinds; subclasses narrow ``spec`` and ``status``."""

    # Objects read from the apiserver carry fields we never model (managedFields, ...).
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        json_schema_extra=_cel_rules,
    )

    kind_name: ClassVar[str]
    plural: ClassVar[str]
    short_names: ClassVar[tuple[str, ...]] = ()
    namespaced: ClassVar[bool]
    printer_columns: ClassVar[tuple[dict[str, Any], ...]] = ()
    description: ClassVar[str] = ""

    api_version: str = API_VERSION
    kind: str
    metadata: ObjectMeta

    @property
    def key(self) -> str:
        """``namespace/name`` for namespaced kinds, ``name`` for cluster-scoped ones."""
        if self.metadata.namespace:
            return f"{self.metadata.namespace}/{self.metadata.name}"
        return self.metadata.name


def ready_condition(conditions: Sequence[Condition]) -> Condition | None:
    """The ``Ready`` condition of a status, if any."""
    return next((c for c in conditions if c.type == "Ready"), None)
