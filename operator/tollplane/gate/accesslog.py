"""The access log: one JSON line per call on stdout (logger ``tollplane.access``).

A line never carries the credential: not the key, not its header.  The key is identified by
the tenant and key id only.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

log = logging.getLogger("tollplane.access")

# Never copied into a log line even when an Api asks for them in logging.headers.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def setup(stream: TextIO | None = None) -> None:
    """Send access lines, bare, to ``stream`` (stdout), apart from the gate's own log."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def write(record: dict[str, Any]) -> None:
    """Write one access line; members whose value is None are left out."""
    if log.isEnabledFor(logging.INFO):
        line = json.dumps({k: v for k, v in record.items() if v is not None}, separators=(",", ":"))
        log.info(line)
