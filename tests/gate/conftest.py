"""Fixtures for the gate's HTTP tests: a real upstream and real gate processes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.gate import Gate, Upstream, free_port, running_gate, scenario_policy
from tollplane.api.policy import Policy


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """An echo server on loopback that records what it receives."""
    server = Upstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def policy(upstream: Upstream) -> Policy:
    """The scenario policy pointing at the upstream (and at a closed port for /down)."""
    return scenario_policy(upstream.url, f"http://127.0.0.1:{free_port()}")


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, policy: Policy) -> Iterator[Gate]:
    """A gate process in proxy mode serving the scenario policy."""
    with running_gate(tmp_path_factory.mktemp("gate"), policy) as g:
        yield g


@pytest.fixture
def client(gate: Gate) -> Iterator[httpx.Client]:
    """An HTTP client aimed at the gate."""
    with httpx.Client(base_url=gate.url, timeout=10) as c:
        yield c


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A folder for a test's own gate process."""
    return tmp_path
