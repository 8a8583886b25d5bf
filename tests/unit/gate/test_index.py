"""Route matching precedence, upstream URLs and key lookup."""

from __future__ import annotations

import pytest

from tollplane.api.apis import Stage
from tollplane.api.keys import hash_key
from tollplane.api.policy import KeyPolicy, Policy, RoutePolicy
from tollplane.gate.index import build


def route(
    api: str, base: str = "/", hosts: list[str] | None = None, up: str = "http://u"
) -> RoutePolicy:
    return RoutePolicy(
        api=api,
        version="v1",
        base_path=base,
        hostnames=hosts or [],
        stage=Stage.PUBLISHED,
        upstream_url=up,
    )


POLICY = Policy(
    routes=[
        route("any-root"),
        route("any-v1", "/v1"),
        route("any-v1-admin", "/v1/admin"),
        route("wild", "/", ["*.example.com"]),
        route("wild-deep", "/", ["*.eu.example.com"]),
        route("exact-v1", "/v1", ["api.example.com"]),
    ]
).sealed()


@pytest.mark.parametrize(
    ("host", "path", "api"),
    [
        ("other.test", "/", "any-root"),
        ("other.test", "/v1", "any-v1"),
        ("other.test", "/v1/x", "any-v1"),
        ("other.test", "/v10", "any-root"),  # segment boundary
        ("other.test", "/v1/admin/users", "any-v1-admin"),  # longest basePath
        ("x.example.com", "/v1", "wild"),  # a wildcard host beats a host-less route
        ("a.b.example.com", "/", "wild"),  # wildcard matches several labels
        ("x.eu.example.com", "/", "wild-deep"),  # longest wildcard suffix
        ("example.com", "/", "any-root"),  # *.example.com does not match the bare domain
        ("api.example.com", "/v1/x", "exact-v1"),  # exact beats wildcard
        ("api.example.com", "/other", "wild"),  # falls through when exact has no path
    ],
)
def test_match(host: str, path: str, api: str) -> None:
    found = build(POLICY).match(host, path)
    assert found is not None
    assert found.api == api


@pytest.mark.parametrize(
    ("base", "upstream", "path", "raw", "query", "url"),
    [
        ("/v1", "http://svc:8080", "/v1/a/b", "/v1/a/b", "q=1", "http://svc:8080/a/b?q=1"),
        ("/v1", "http://svc:8080", "/v1", "/v1", "", "http://svc:8080/"),
        ("/v1", "http://svc/api", "/v1", "/v1", "", "http://svc/api"),
        ("/v1", "http://svc/api/", "/v1/x", "/v1/x", "", "http://svc/api/x"),
        ("/", "http://svc/api", "/x y", "/x%20y", "", "http://svc/api/x%20y"),
        ("/v1", "http://svc", "/v1/a/b", "/v%31/a%2Fb", "", "http://svc/a/b"),  # encoded base
    ],
)
def test_upstream_target(
    base: str, upstream: str, path: str, raw: str, query: str, url: str
) -> None:
    index = build(Policy(routes=[route("a", base, up=upstream)]).sealed())
    r = index.match("h", path)
    assert r is not None
    assert r.upstream_target(path, raw, query) == url


def test_key_lookup_by_hash() -> None:
    policy = Policy(keys={hash_key("tp_secret"): KeyPolicy(tenant="t", id="k")}).sealed()
    index = build(policy)
    found = index.key("tp_secret")
    assert found is not None
    assert (found.tenant, found.id) == ("t", "k")
    assert index.key("tp_secreT") is None


def test_unusable_upstream_is_refused() -> None:
    with pytest.raises(ValueError, match="not http"):
        build(Policy(routes=[route("a", up="ftp://x")]).sealed())
