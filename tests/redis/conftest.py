"""A real redis-server per test (see support.redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.redis import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    server = RedisServer(tmp_path).start()
    yield server
    server.kill()
