"""`tollplane dev` end to end: the README walk-through, run as a newcomer would run it.

The real command runs as a subprocess on a copy of examples/, and a real HTTP client calls
it on loopback: 200, then 429 when the trial's rate limit hits, then 402 when its daily
quota is gone, then 410 from the retired Api; editing a manifest hot-swaps the policy and a
broken manifest keeps the last good one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support.gate import REPO, free_port

TOLLPLANE = [sys.executable, "-m", "tollplane.cli"]


@dataclass
class Dev:
    """A running `tollplane dev` and what it printed."""

    proc: subprocess.Popen[str]
    url: str
    folder: Path
    lines: list[str]

    def key(self, tenant: str, api: str) -> tuple[str, str]:
        """The (header, value) the printed curl command for tenant -> api uses."""
        marker = f"# {tenant} -> tollplane-examples/{api}"
        index = self.lines.index(next(line for line in self.lines if marker in line))
        header, value = re.search(r"-H '([^:]+): ([^']+)'", self.lines[index + 1]).groups()  # type: ignore[union-attr]
        return header, value

    def read_until(self, pattern: str, timeout: float = 15) -> str:
        """Read stdout until a line matches ``pattern``."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line.rstrip("\n"))
            if re.search(pattern, line):
                return line
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    folder = tmp_path / "examples"
    shutil.copytree(REPO / "examples", folder)
    port, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *TOLLPLANE,
            "dev",
            str(folder),
            "--port",
            str(port),
            "--admin-port",
            str(admin),
            "--poll-seconds",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    running = Dev(proc, f"http://127.0.0.1:{port}", folder, [])
    try:
        running.read_until(r"Watching .* for changes")
        yield running
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_walkthrough_200_429_402_410(dev: Dev) -> None:
    header, key = dev.key("acme", "weather-v2")
    auth = {header: key}
    with httpx.Client(base_url=dev.url) as client:
        ok = client.get("/weather/v2/forecast", params={"city": "Paris"}, headers=auth)
        assert ok.status_code == 200
        assert ok.json()["tenant"] == "acme"
        assert ok.json()["path"] == "/forecast"
        assert "ratelimit" in ok.headers
        # free-trial: 5 calls a second. The burst beyond it is 429 with Retry-After.
        codes = [client.get("/weather/v2/", headers=auth).status_code for _ in range(6)]
        assert 429 in codes
        limited = client.get("/weather/v2/", headers=auth)
        assert limited.status_code == 429
        assert limited.headers["content-type"] == "application/problem+json"
        assert limited.json()["reason"] == "rate-limited"
        assert int(limited.headers["retry-after"]) >= 1
        # free-trial: 20 calls a day, overage Block: 402 with where to pay.
        statuses = []
        for _ in range(40):
            response = client.get("/weather/v2/", headers=auth)
            statuses.append(response.status_code)
            if response.status_code == 402:
                break
            time.sleep(0.21)
        assert statuses[-1] == 402, statuses
        body = response.json()
        assert body["reason"] == "quota-exhausted"
        assert body["plan"] == "free-trial"
        assert body["paymentUrl"].startswith("https://")
        retired = client.get("/geocode/v1/lookup")
        assert retired.status_code == 410
        assert retired.json()["reason"] == "api-retired"


def test_keys_adopted_from_secrets_in_the_folder(dev: Dev) -> None:
    header, key = dev.key("globex", "inventory")
    assert header == "X-Api-Key"
    # The printed key for globex is its pre-provisioned Secret's value, not a generated one.
    assert key == "tp_demo_globex_migrated_0001"
    with httpx.Client(base_url=dev.url) as client:
        assert client.get("/inventory/items", headers={header: key}).status_code == 200
        pending = client.get("/inventory/items", headers=dict([dev.key("soylent", "inventory")]))
        assert pending.status_code == 403
        assert pending.json()["reason"] == "approval-pending"


def test_edits_hot_swap_and_broken_manifests_keep_the_last_good_policy(dev: Dev) -> None:
    header, key = dev.key("globex", "weather-v2")
    tenants = dev.folder / "40-tenants.yaml"
    with httpx.Client(base_url=dev.url) as client:
        assert client.get("/weather/v2/", headers={header: key}).status_code == 200
        text = tenants.read_text()
        edited = re.sub(
            r"(name: globex\n(?:.*\n)*?spec:\n)", r"\1  suspended: true\n", text, count=1
        )
        assert edited != text
        tenants.write_text(edited)
        dev.read_until(r"policy revision|compiled at")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            response = client.get("/weather/v2/", headers={header: key})
            if response.status_code == 403:
                break
            time.sleep(0.2)
        assert response.status_code == 403
        assert response.json()["reason"] == "tenant-suspended"
        # A manifest that no longer parses: reported, and the gate keeps the last good policy.
        tenants.write_text("kind: Tenant\nmetadata: {name: [broken\n")
        time.sleep(1.5)
        assert dev.proc.poll() is None
        still = client.get("/weather/v2/", headers={header: key})
        assert still.status_code == 403


def render(*args: str) -> subprocess.CompletedProcess[str]:
    """`tollplane render ARGS` from the repository root."""
    return subprocess.run(
        [*TOLLPLANE, "render", *args], capture_output=True, text=True, cwd=REPO, check=False
    )


def test_render_prints_objects_with_secrets_redacted() -> None:
    result = render("examples", "--gateway", "gateway-system/public")
    assert result.returncode == 0, result.stderr
    assert "kind: HTTPRoute" in result.stdout
    assert "namespace: gateway-system" in result.stdout
    assert "name: tollplane-policy" in result.stdout
    assert "tp_demo_globex_migrated_0001" not in result.stdout
    # Generated key Secrets appear, with their value redacted.
    assert "name: tollplane-key-acme-default" in result.stdout
    assert "<redacted>" in result.stdout
    policy = render("examples", "--gateway", "gateway-system/public", "--policy")
    assert policy.returncode == 0, policy.stderr
    assert '"revision"' in policy.stdout
    assert "tollplane-examples/weather-v2" in policy.stdout


def test_render_reports_what_would_not_be_ready(tmp_path: Path) -> None:
    (tmp_path / "tenant.yaml").write_text(
        "apiVersion: tollplane.io/v1alpha1\nkind: Tenant\nmetadata: {name: lost}\n"
        "spec: {plan: no-such-plan, keys: [{id: default}]}\n"
    )
    result = render(str(tmp_path))
    assert result.returncode == 1
    assert "Tenant lost: not Ready: PlanNotFound" in result.stderr
    assert "BillingPlan no-such-plan does not exist" in result.stderr


def test_render_without_a_gateway_says_how_to_name_one() -> None:
    result = render("examples")
    assert result.returncode == 1
    assert "kind: HTTPRoute" not in result.stdout
    assert "NoGateway" in result.stderr
    assert "--gateway NAMESPACE/NAME" in result.stderr
