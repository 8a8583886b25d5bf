"""``tollplane gate``: wire the policy source, counters, upstream client and HTTP servers.

Two uvicorn servers share one uvloop event loop: API traffic on ``--port`` and the admin
endpoints on ``--admin-port``.  uvicorn with uvloop and httptools was chosen by measurement
(see docs/benchmarks.md, section "Gate").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Generator
from pathlib import Path

import uvicorn

from tollplane.gate import accesslog
from tollplane.gate.app import AdminApp, GateApp
from tollplane.gate.counters import Counters, MemoryCounters, RedisCounters
from tollplane.gate.loader import FileSource, KubernetesSource, PolicyHolder
from tollplane.gate.metrics import Metrics
from tollplane.gate.proxy import Upstreams
from tollplane.gate.settings import Settings, add_arguments

log = logging.getLogger("tollplane.gate")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve` (two servers, one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _config(app: GateApp | AdminApp, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,  # the gate writes its own, richer access log
        log_config=None,
        server_header=False,  # upstream Server/Date headers pass through untouched
        date_header=False,
        backlog=4096,
        timeout_keep_alive=75,  # longer than typical load-balancer idle timeouts (60 s)
    )


async def serve(settings: Settings, on_started: Callable[[], None] | None = None) -> None:
    """Run the gate until SIGTERM/SIGINT (or until the task is cancelled)."""
    holder = PolicyHolder()
    source: FileSource | KubernetesSource
    if settings.policy_source == "kubernetes":
        source = KubernetesSource(settings.namespace, holder)
    else:
        source = FileSource(Path(settings.policy_source), holder, settings.policy_poll_seconds)
    counters: Counters = (
        RedisCounters(settings.redis_url) if settings.redis_url else MemoryCounters()
    )
    upstreams = Upstreams() if settings.mode == "proxy" else None
    metrics = Metrics(holder)
    app = GateApp(settings, holder, counters=counters, upstreams=upstreams, metrics=metrics)
    servers = [
        _Server(_config(app, settings.host, settings.port)),
        _Server(_config(AdminApp(holder, metrics), settings.host, settings.admin_port)),
    ]

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not main thread
            loop.add_signal_handler(sig, stop)
    source.start()
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        while not all(server.started for server in servers):
            if any(task.done() for task in tasks):
                break  # a port could not be bound: uvicorn logged why
            await asyncio.sleep(0.01)
        else:
            log.info(
                "gate listening on %s:%d (%s mode), admin on :%d, counters in %s",
                settings.host,
                settings.port,
                settings.mode,
                settings.admin_port,
                "redis" if settings.redis_url else "memory",
            )
            if on_started is not None:
                on_started()
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        stop()
        await source.stop()
        await counters.close()
        if upstreams is not None:
            await upstreams.close()


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the ``tollplane gate`` flags."""
    parser.description = (
        "Run the gate, Tollplane's data plane. Every call is matched to an Api route and "
        "decided in order: lifecycle (404 Draft, 410 Retired), credential (401), "
        "subscription and suspension (403), billing (402), rate limit and quota (429), then "
        "allowed: proxied to the upstream (proxy mode) or answered 200 to the proxy in front "
        "(forward-auth mode). Admin endpoints: /healthz, /readyz (200 once a policy is "
        "loaded), /metrics (Prometheus)."
    )
    parser.epilog = (
        "Access log: one JSON line per call on stdout. Gate log: stderr. "
        "See docs/gate.md for reason codes and headers."
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tollplane gate``."""
    settings = Settings.from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every upstream request at INFO: the access log already says it, better.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    accesslog.setup()
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on Windows

        loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(settings))
    return 0
