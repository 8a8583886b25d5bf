"""Forward-auth mode: a proxy in front asks the gate, then forwards the call itself.

Two callers are understood at the same endpoint, :data:`CHECK_PATH`:

* Envoy Gateway / Envoy HTTP ``ext_authz`` appends the original path (and query) to the
  configured path prefix and keeps the original method and Host:
  ``GET /_tollplane/check/v1/orders?x=1`` with ``Host: api.example.com``.
* Traefik ``ForwardAuth`` calls a fixed URL and describes the original call in
  ``X-Forwarded-Method``, ``X-Forwarded-Host``, ``X-Forwarded-Uri`` and ``X-Forwarded-Proto``.

An allowed call gets ``200`` with identity headers for the proxy to copy onto the upstream
request (and RateLimit/Deprecation headers for the client); a denial is answered as-is
(status, headers, problem body), which both proxies relay to the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

CHECK_PATH = "/_tollplane/check"


@dataclass(frozen=True, slots=True)
class Original:
    """The call being checked, as the proxy in front received it."""

    method: str
    host: str
    path: str
    query: str


def is_check(path: str) -> bool:
    """Whether a request path is the check endpoint (exactly, or as an Envoy prefix)."""
    return path == CHECK_PATH or path.startswith(CHECK_PATH + "/")


def original(method: str, path: str, query: str, headers: Mapping[str, str]) -> Original:
    """Reconstruct the checked call from a check request (Traefik style first)."""
    uri = headers.get("x-forwarded-uri")
    if uri is not None:
        fpath, _, fquery = uri.partition("?")
        return Original(
            method=headers.get("x-forwarded-method", method).upper(),
            host=headers.get("x-forwarded-host") or headers.get("host", ""),
            path=unquote(fpath) or "/",  # Traefik sends the URI as received: encoded
            query=fquery,
        )
    return Original(
        method=method,
        host=headers.get("host", ""),
        path=path[len(CHECK_PATH) :] or "/",
        query=query,
    )
