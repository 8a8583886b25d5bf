"""The ``Api`` custom resource: an HTTP API exposed through the gate, with a lifecycle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from tollplane.api.base import (
    Condition,
    Hostname,
    LongText,
    Model,
    Name,
    Resource,
    Rule,
    ShortText,
    Url,
)


class Stage(StrEnum):
    """Lifecycle stage of an Api. Only Published and Deprecated Apis serve traffic."""

    DRAFT = "Draft"
    PUBLISHED = "Published"
    DEPRECATED = "Deprecated"
    RETIRED = "Retired"


class Approval(StrEnum):
    """How a tenant's subscription becomes active."""

    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class ServiceUpstream(Model):
    """A Service in the Api's own namespace."""

    name: Name
    port: Annotated[int, Field(ge=1, le=65535)]
    scheme: Literal["http", "https"] = "http"


class Upstream(Model):
    """Where allowed calls are forwarded: a Service beside the Api, or a URL."""

    rules: ClassVar = (
        Rule(
            cel="has(self.service) != has(self.url)",
            message="upstream needs exactly one of service or url",
            check=lambda s: (s.service is None) != (s.url is None),
        ),
    )

    service: ServiceUpstream | None = None
    url: Url | None = None
    timeout_seconds: Annotated[float, Field(ge=0.1, le=3600)] = 30.0


class Successor(Model):
    """The Api that replaces this one: another Api in the same namespace, or a URL."""

    rules: ClassVar = (
        Rule(
            cel="has(self.api) != has(self.url)",
            message="successor needs exactly one of api (an Api in this namespace) or url",
            check=lambda s: (s.api is None) != (s.url is None),
        ),
    )

    api: Name | None = None
    url: Url | None = None


class Lifecycle(Model):
    """Where the Api is in its life, and what callers are told about it."""

    rules: ClassVar = (
        Rule(
            cel="self.stage != 'Deprecated' || has(self.sunset)",
            message="a Deprecated Api needs lifecycle.sunset: the date it stops answering",
            check=lambda s: s.stage != Stage.DEPRECATED or s.sunset is not None,
        ),
    )

    stage: Stage = Stage.DRAFT
    # When the Api stops being served (Sunset header, RFC 8594).
    sunset: datetime | None = None
    # When it was deprecated (Deprecation header, RFC 9745); defaults to when the operator
    # first saw the Api Deprecated (kept in status.deprecatedSince).
    deprecated_since: datetime | None = None
    successor: Successor | None = None


class Access(Model):
    """Who may subscribe. Access is the intersection of a Tenant's subscriptions and this."""

    approval: Approval = Approval.AUTOMATIC
    # Under Manual approval: the tenants this Api accepts (`tollplane approve` edits this list).
    approved_tenants: Annotated[list[Name], Field(max_length=10000)] = Field(default_factory=list)


class Credential(Model):
    """Where the gate reads the API key from."""

    header: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9-]+$")] = (
        "Authorization"
    )
    # With a scheme, the header value is "<scheme> <key>"; empty means the whole value is the key.
    scheme: Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9-]*$")] = "Bearer"


class Logging(Model):
    """What the gate writes into the access log besides the fixed fields."""

    # Request headers copied into each log line (the credential header is never logged).
    headers: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=32)] = Field(
        default_factory=list
    )
    query: bool = False


class ErrorText(Model):
    """Replacement title/detail for one denial reason (customizable error responses)."""

    title: ShortText | None = None
    detail: LongText | None = None


class GatewayRef(Model):
    """The Gateway (Gateway API) an Api's HTTPRoute attaches to, overriding the operator's."""

    name: Name
    # Unset: the Api's own namespace.
    namespace: Name | None = None
    section_name: Annotated[str, Field(min_length=1, max_length=253)] | None = None


class ApiSpec(Model):
    """Desired state of an Api."""

    rules: ClassVar = (
        Rule(
            cel="self.basePath == '/' || !self.basePath.endsWith('/')",
            message="basePath must not end with '/' (use '/' alone for the root)",
            check=lambda s: s.base_path == "/" or not s.base_path.endswith("/"),
        ),
        Rule(
            cel=(
                "!(oldSelf.lifecycle.stage == 'Retired'"
                " && self.lifecycle.stage in ['Published', 'Deprecated']"
                " && self.basePath == oldSelf.basePath"
                " && self.version == oldSelf.version)"
            ),
            message=(
                "a Retired Api cannot be published again on the same basePath and version:"
                " change spec.version (or basePath), or create a new Api"
            ),
            check=lambda s: True,
            transition=True,
        ),
    )

    display_name: ShortText | None = None
    description: LongText | None = None
    # Free-form version label (v1, 2024-06-01); part of identity for re-publication.
    version: Annotated[str, Field(max_length=64)] = "v1"
    # Empty: every hostname the gate's route serves.
    hostnames: Annotated[list[Hostname], Field(max_length=16)] = Field(default_factory=list)
    base_path: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^/[^\s?#]*$")] = "/"
    methods: Annotated[
        list[Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]],
        Field(max_length=7),
    ] = Field(default_factory=list)
    upstream: Upstream
    lifecycle: Lifecycle = Field(default_factory=Lifecycle)
    access: Access = Field(default_factory=Access)
    credential: Credential = Field(default_factory=Credential)
    docs_url: Url | None = None
    # Unset: the Gateway the operator is configured with (--gateway).
    gateway: GatewayRef | None = None
    logging: Logging = Field(default_factory=Logging)
    # Keys are denial reason codes (see tollplane.api.reasons).
    errors: Annotated[dict[str, ErrorText], Field(max_length=32)] = Field(default_factory=dict)


class ApiStatus(Model):
    """Observed state of an Api, written by the operator."""

    observed_generation: int | None = None
    stage: Stage | None = None
    # When the operator first saw the Api Deprecated (unless spec.lifecycle.deprecatedSince
    # says otherwise): recorded so the Deprecation header keeps the same date across restarts.
    deprecated_since: datetime | None = None
    url: Annotated[str, Field(max_length=2048)] | None = None
    route: Annotated[str, Field(max_length=512)] | None = None
    subscribers: Annotated[int, Field(ge=0)] | None = None
    pending_approvals: Annotated[list[Name], Field(max_length=10000)] = Field(default_factory=list)
    conditions: Annotated[list[Condition], Field(max_length=16)] = Field(default_factory=list)


class Api(Resource):
    """An HTTP API published through the gate (namespaced, beside its upstream)."""

    kind_name: ClassVar[str] = "Api"
    plural: ClassVar[str] = "apis"
    short_names: ClassVar[tuple[str, ...]] = ("tpapi",)
    namespaced: ClassVar[bool] = True
    description: ClassVar[str] = (
        "An HTTP API exposed through the Tollplane gate, with a lifecycle "
        "(Draft, Published, Deprecated, Retired) and access rules."
    )
    printer_columns: ClassVar = (
        {"name": "Stage", "type": "string", "jsonPath": ".spec.lifecycle.stage"},
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        {"name": "Subscribers", "type": "integer", "jsonPath": ".status.subscribers"},
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )

    kind: Literal["Api"] = "Api"
    spec: ApiSpec
    status: ApiStatus | None = None
