"""Fixtures of the chart tests: the pinned helm binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import controlplane


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm built from tests/toolchain/helm (cached; built once per pin change)."""
    return controlplane.ensure_built().helm
