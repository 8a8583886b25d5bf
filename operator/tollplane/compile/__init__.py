"""The compiler: pure functions from a Snapshot of resources to desired objects and a Policy.

No I/O happens here (no Kubernetes client, no HTTP, no clock, no randomness): the operator,
``tollplane render`` and ``tollplane dev`` all feed it a :class:`Snapshot` and write out the
result their own way.
"""

from tollplane.compile.compiler import Desired, compile_all, object_ref, statuses
from tollplane.compile.snapshot import (
    GateMode,
    IngressController,
    Invalid,
    ParentRef,
    RouteKind,
    SecretView,
    ServiceRef,
    Settings,
    Snapshot,
    parse,
    snapshot_from_objects,
)

__all__ = [
    "Desired",
    "GateMode",
    "IngressController",
    "Invalid",
    "ParentRef",
    "RouteKind",
    "SecretView",
    "ServiceRef",
    "Settings",
    "Snapshot",
    "compile_all",
    "object_ref",
    "parse",
    "snapshot_from_objects",
    "statuses",
]
