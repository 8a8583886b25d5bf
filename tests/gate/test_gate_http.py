"""The gate as a user meets it: a real process, a real upstream, a real HTTP client."""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx
import pytest

from support.gate import Gate, Upstream, key_of

PROBLEM = "application/problem+json"


def call(
    client: httpx.Client,
    path: str,
    tenant: str | None = "acme",
    method: str = "GET",
    **kw: Any,
) -> httpx.Response:
    headers = dict(kw.pop("headers", {}))
    if tenant is not None:
        headers.setdefault("Authorization", f"Bearer {key_of(tenant)}")
    return client.request(method, path, headers=headers, **kw)


# (id, path, tenant, method, status, reason, headers that must be present)
DENIALS: list[tuple[str, str, str | None, str, int, str, dict[str, str]]] = [
    ("no route", "/nowhere", "acme", "GET", 404, "no-route", {}),
    ("draft", "/draft/x", "acme", "GET", 404, "api-draft", {}),
    ("retired", "/old", "acme", "GET", 410, "api-retired",
     {"link": '<https://new.example>; rel="successor-version"'}),
    ("method", "/readonly", "acme", "DELETE", 405, "method-not-allowed", {"allow": "GET"}),
    ("missing key", "/orders", None, "GET", 401, "missing-credential",
     {"www-authenticate": 'Bearer realm="tollplane"'}),
    ("unknown key", "/orders", "stranger", "GET", 401, "invalid-credential",
     {"www-authenticate": 'Bearer realm="tollplane", error="invalid_token", '
      'error_description="unknown key"'}),
    ("expired key", "/orders", "expired", "GET", 401, "expired-credential", {}),
    ("suspended", "/orders", "suspended", "GET", 403, "tenant-suspended", {}),
    ("not subscribed", "/orders", "unsubscribed", "GET", 403, "not-subscribed", {}),
    ("approval pending", "/orders", "pending", "GET", 403, "approval-pending", {}),
    ("trial ended", "/orders", "trialover", "GET", 402, "trial-ended", {}),
    ("payment overdue", "/orders", "overdue", "GET", 402, "payment-overdue", {}),
    ("never paid", "/orders", "neverpaid", "GET", 402, "payment-overdue", {}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "tenant", "method", "status", "reason", "headers"),
    [pytest.param(*row[1:], id=row[0]) for row in DENIALS],
)
def test_denials(
    client: httpx.Client,
    path: str,
    tenant: str | None,
    method: str,
    status: int,
    reason: str,
    headers: dict[str, str],
) -> None:
    r = call(client, path, tenant, method)
    assert r.status_code == status
    assert r.headers["content-type"] == PROBLEM
    for name, value in headers.items():
        assert r.headers[name] == value
    body = r.json()
    assert body["type"] == f"https://tollplane.io/problems/{reason}"
    assert body["reason"] == reason
    assert body["status"] == status
    assert body["instance"] == r.headers["x-request-id"]
    if status == 402:
        assert body["paymentUrl"] == "https://billing.example.com/pay"
        assert body["plan"] == "paid"


def test_allowed_call_reaches_upstream_cleaned(
    client: httpx.Client, gate: Gate, upstream: Upstream
) -> None:
    r = call(
        client,
        "/orders/42/items?expand=1",
        headers={
            "X-Request-Id": "caller-id-1",
            "X-Tollplane-Tenant": "forged",
            "Connection": "keep-alive, X-Private-Hop",
            "X-Private-Hop": "do-not-forward",
            "X-Custom": "kept",
        },
    )
    assert r.status_code == 200
    seen = r.json()
    assert (seen["path"], seen["query"]) == ("/svc/42/items", "expand=1")
    h = seen["headers"]
    assert "authorization" not in h
    assert h["x-request-id"] == "caller-id-1"
    assert h["x-tollplane-tenant"] == "acme"
    assert h["x-tollplane-key-id"] == "k1"
    assert h["x-custom"] == "kept"
    assert "x-private-hop" not in h
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-host"] == f"127.0.0.1:{gate.port}"
    assert h["host"] == upstream.url.removeprefix("http://")
    # The response: upstream headers pass, its hop-by-hop ones do not; limits are announced.
    assert r.headers["x-upstream"] == "echo"
    assert "x-upstream-hop" not in r.headers
    assert r.headers["x-request-id"] == "caller-id-1"
    assert r.headers["ratelimit-policy"] == '"rate";q=1000;w=1'
    assert r.headers["ratelimit"].startswith('"rate";r=')


def test_upstream_cookies_are_never_shared_between_callers(client: httpx.Client) -> None:
    """The gate forwards Set-Cookie to its caller and keeps no cookie jar of its own: one
    tenant's session cookie must never ride along on another tenant's call."""
    login = call(client, "/orders/login", "acme")
    assert login.headers["set-cookie"] == "session=acme; Path=/"
    client.cookies.clear()
    other = call(client, "/orders/after", "paidup")
    assert other.status_code == 200
    assert "cookie" not in other.json()["headers"]


def test_gate_adds_no_client_default_headers(gate: Gate) -> None:
    """A caller that sends no Accept-Encoding or User-Agent reaches the upstream without
    them: an injected `Accept-Encoding: gzip` would get it a compressed body it never asked
    for."""
    raw = (
        f"GET /orders/bare HTTP/1.1\r\nHost: 127.0.0.1:{gate.port}\r\n"
        f"Authorization: Bearer {key_of('acme')}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as sock:
        sock.sendall(raw.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = json.loads(body)["headers"]
    for name in ("accept-encoding", "user-agent", "accept", "cookie"):
        assert name not in seen, (name, seen)


def test_request_body_streams_both_ways(client: httpx.Client, gate: Gate) -> None:
    chunks = [bytes([65 + i % 26]) * 65536 for i in range(32)]  # 2 MiB, chunked upload

    def body() -> Any:
        yield from chunks

    r = call(
        client, "/orders/upload", method="POST", content=body(), headers={"X-Request-Id": "up-1"}
    )
    assert r.status_code == 200
    assert r.json()["body"].encode("latin-1") == b"".join(chunks)
    line = gate.log_for("up-1")
    assert line["bytesIn"] == 2 * 1024 * 1024
    assert line["bytesOut"] == len(r.content)


def test_streamed_response(client: httpx.Client) -> None:
    with client.stream(
        "GET", "/orders/stream", headers={"Authorization": f"Bearer {key_of('acme')}"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["transfer-encoding"] == "chunked"
        parts = list(r.iter_text())
    assert "".join(parts) == "".join(f"chunk{i}\n" for i in range(5))


def test_upstream_status_passes_through(client: httpx.Client) -> None:
    r = call(client, "/orders/status/418")
    assert r.status_code == 418
    assert r.headers["content-type"] == "application/json"


def test_upstream_timeout_is_504(client: httpx.Client) -> None:
    r = call(client, "/slowapi/slow", params={"s": "2"})
    assert r.status_code == 504
    assert r.json()["reason"] == "upstream-timeout"


def test_upstream_unreachable_is_502(client: httpx.Client) -> None:
    r = call(client, "/down/x")
    assert r.status_code == 502
    assert r.json()["reason"] == "upstream-unavailable"


def test_deprecated_api_headers(client: httpx.Client) -> None:
    r = call(client, "/legacy/x")
    assert r.status_code == 200
    assert r.headers["deprecation"] == "@1735689600"
    assert r.headers["sunset"].endswith(" GMT")
    assert r.headers.get_list("link") == [
        '<https://api.example.com/orders>; rel="successor-version"',
        '<https://docs.example.com/migrate>; rel="deprecation"; type="text/html"',
    ]


def test_custom_credential_header_and_error_text(client: httpx.Client, upstream: Upstream) -> None:
    ok = call(client, "/custom/x", None, headers={"X-Api-Key": key_of("acme")})
    assert ok.status_code == 200
    assert "x-api-key" not in ok.json()["headers"]
    bad = call(client, "/custom/x", None, headers={"X-Api-Key": "tp_wrong"})
    assert bad.status_code == 401
    assert (bad.json()["title"], bad.json()["detail"]) == ("Bad key", "Ask Bob for a key")
    assert bad.headers["www-authenticate"].startswith('ApiKey realm="tollplane"')


def test_host_routing(client: httpx.Client) -> None:
    exact = call(client, "/x", headers={"Host": "api.example.com:8443"})
    wild = call(client, "/x", headers={"Host": "eu.example.com"})
    assert exact.json()["path"] == "/x"
    assert wild.json()["path"] == "/wild/x"


def test_quota_block_402(client: httpx.Client) -> None:
    statuses = [call(client, "/orders", "metered").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 402]
    r = call(client, "/orders", "metered")
    assert r.json()["paymentUrl"] == "https://billing.example.com/upgrade"
    assert r.json()["title"] == "Out of calls"
    assert r.headers["ratelimit"].startswith('"quota";r=0;t=')


def test_quota_throttle_429(client: httpx.Client) -> None:
    statuses = [call(client, "/orders", "throttled").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = call(client, "/orders", "throttled")
    assert r.json()["reason"] == "quota-throttled"
    assert 0 < int(r.headers["retry-after"]) <= 86400
    assert r.headers["ratelimit-policy"] == '"quota";q=2;w=86400'


def test_quota_charge_allows_and_logs_overage(client: httpx.Client, gate: Gate) -> None:
    first = call(client, "/orders", "charged")
    second = call(client, "/orders", "charged", headers={"X-Request-Id": "over-1"})
    assert (first.status_code, second.status_code) == (200, 200)
    assert gate.log_for("over-1")["overage"] is True


def test_rate_limit_429(client: httpx.Client) -> None:
    ok = [call(client, "/orders", "ratelimited") for _ in range(2)]
    assert [r.status_code for r in ok] == [200, 200]
    r = call(client, "/orders", "ratelimited")
    assert r.status_code == 429
    assert r.json()["reason"] == "rate-limited"
    assert r.headers["retry-after"] in ("29", "30")
    assert r.headers["ratelimit-policy"] == '"rate";q=2;w=60'
    assert r.headers["ratelimit"].startswith('"rate";r=0;t=')


def test_prepaid_credit_exhausted_402(client: httpx.Client) -> None:
    statuses = [call(client, "/orders", "prepaid").status_code for _ in range(3)]
    assert statuses == [200, 200, 402]
    assert (
        call(client, "/orders", "prepaid").json()["paymentUrl"]
        == "https://billing.example.com/topup"
    )


def test_check_endpoint_also_served_in_proxy_mode(client: httpx.Client) -> None:
    r = call(client, "/_tollplane/check/orders/1")
    assert r.status_code == 200
    assert r.headers["x-tollplane-tenant"] == "acme"


def test_access_log_line_and_no_key_anywhere(
    client: httpx.Client, gate: Gate, upstream: Upstream
) -> None:
    call(client, "/orders/logged", headers={"X-Request-Id": "log-1"})
    call(client, "/custom/x", None, headers={"X-Api-Key": key_of("acme"), "X-Request-Id": "log-2"})
    line = gate.log_for("log-1")
    assert line["api"] == "shop/orders"
    assert line["tenant"] == "acme"
    assert line["keyId"] == "k1"
    assert (line["method"], line["path"]) == ("GET", "/orders/logged")
    assert (line["status"], line["reason"], line["upstreamStatus"]) == (200, "allowed", 200)
    assert line["latencyMs"] > 0
    assert {"bytesIn", "bytesOut", "time"} <= set(line)
    gate.log_for("log-2")
    log_text = gate.log_path.read_text()
    upstream_text = json.dumps(
        [vars(s) | {"body": s.body.decode("latin-1")} for s in upstream.seen]
    )
    for tenant in ("acme", "metered", "ratelimited", "prepaid"):
        assert key_of(tenant) not in log_text
        assert key_of(tenant) not in upstream_text


def test_metrics(client: httpx.Client, gate: Gate) -> None:
    call(client, "/orders")
    text = httpx.get(gate.admin_url + "/metrics").text
    assert (
        'tollplane_gate_requests_total{api="shop/orders",reason="allowed",status="200",'
        'tenant="acme"}' in text
    )
    assert "tollplane_gate_request_duration_seconds_bucket" in text
    assert "tollplane_gate_policy_age_seconds" in text
    assert "tollplane_gate_policy_info{revision=" in text


def test_health_and_readiness(gate: Gate) -> None:
    assert httpx.get(gate.admin_url + "/healthz").status_code == 200
    ready = httpx.get(gate.admin_url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
