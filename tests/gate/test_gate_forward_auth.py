"""Forward-auth mode: the check endpoint as Envoy ext_authz (HTTP) and Traefik ForwardAuth
call it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from support.gate import Gate, key_of, running_gate
from tollplane.api.policy import Policy

BEARER = {"Authorization": f"Bearer {key_of('acme')}"}


@pytest.fixture(scope="module")
def fa_gate(tmp_path_factory: pytest.TempPathFactory, policy: Policy) -> Iterator[Gate]:
    with running_gate(tmp_path_factory.mktemp("fa"), policy, "--mode", "forward-auth") as g:
        yield g


def test_envoy_style_allowed(fa_gate: Gate) -> None:
    # Envoy appends the original path to the prefix and keeps method and Host.
    r = httpx.post(
        fa_gate.url + "/_tollplane/check/orders/7?x=1",
        headers={**BEARER, "Host": "api.shop.test", "X-Request-Id": "env-1"},
    )
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["x-tollplane-tenant"] == "acme"
    assert r.headers["x-tollplane-key-id"] == "k1"
    assert r.headers["x-tollplane-plan"] == "free"
    assert r.headers["x-tollplane-api"] == "shop/orders"
    assert r.headers["x-request-id"] == "env-1"
    assert r.headers["ratelimit"].startswith('"rate";r=')
    line = fa_gate.log_for("env-1")
    assert (line["mode"], line["method"], line["path"]) == ("check", "POST", "/orders/7")


def test_envoy_style_denial_is_returned_as_is(fa_gate: Gate) -> None:
    r = httpx.get(fa_gate.url + "/_tollplane/check/orders/7", headers={"Host": "api.shop.test"})
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == 'Bearer realm="tollplane"'
    assert r.json()["reason"] == "missing-credential"


def test_envoy_style_402(fa_gate: Gate) -> None:
    r = httpx.get(
        fa_gate.url + "/_tollplane/check/orders",
        headers={"Authorization": f"Bearer {key_of('trialover')}"},
    )
    assert r.status_code == 402
    assert r.json()["paymentUrl"] == "https://billing.example.com/pay"


def test_traefik_style(fa_gate: Gate) -> None:
    # Traefik calls a fixed URL and describes the original call in X-Forwarded-* headers.
    def check(method: str, uri: str, host: str = "shop.test", **headers: str) -> httpx.Response:
        return httpx.get(
            fa_gate.url + "/_tollplane/check",
            headers={
                "X-Forwarded-Method": method,
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": host,
                "X-Forwarded-Uri": uri,
                **headers,
            },
        )

    ok = check("GET", "/orders/1?q=2", **BEARER)
    assert ok.status_code == 200
    assert ok.headers["x-tollplane-api"] == "shop/orders"
    by_host = check("GET", "/orders/1", "api.example.com", **BEARER)
    assert by_host.headers["x-tollplane-api"] == "shop/root"  # exact host beats host-less
    assert check("DELETE", "/readonly/x", **BEARER).status_code == 405
    retired = check("GET", "/old/x", **BEARER)
    assert retired.status_code == 410
    assert retired.headers["link"] == '<https://new.example>; rel="successor-version"'


def test_other_paths_are_404_in_forward_auth_mode(fa_gate: Gate) -> None:
    r = httpx.get(fa_gate.url + "/orders", headers=BEARER)
    assert r.status_code == 404
    assert r.json()["reason"] == "no-route"
