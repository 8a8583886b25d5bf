"""The gate's settings: command-line flags, each with an environment variable as default.

The Helm chart sets the environment variables; a developer passes flags.  Names are a
contract with the chart, so they change only together with it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Literal

Mode = Literal["proxy", "forward-auth"]
RedisFailure = Literal["open", "closed"]


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class Settings:
    """Everything the gate is told at start."""

    policy_source: str = "kubernetes"
    namespace: str = "tollplane-system"
    host: str = "0.0.0.0"  # noqa: S104 - a gate in a Pod serves on every interface
    port: int = 8080
    admin_port: int = 9090
    mode: Mode = "proxy"
    redis_url: str | None = None
    redis_failure: RedisFailure = "open"
    log_level: str = "info"
    policy_poll_seconds: float = 1.0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Settings from parsed flags (whose defaults already came from the environment)."""
        return cls(
            policy_source=args.policy_source,
            namespace=args.namespace,
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            mode=args.mode,
            redis_url=args.redis_url or None,
            redis_failure=args.redis_failure,
            log_level=args.log_level,
            policy_poll_seconds=args.policy_poll_seconds,
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the gate's flags; each defaults to its environment variable."""
    parser.add_argument(
        "--policy-source",
        default=_env("TOLLPLANE_POLICY_SOURCE", "kubernetes"),
        metavar="kubernetes|PATH",
        help="where the policy comes from: 'kubernetes' watches the policy ConfigMaps in "
        "--namespace (in-cluster config, or KUBECONFIG outside a cluster); a PATH to a JSON "
        "policy file, or a directory holding policy.json, is polled for changes (dev mode, "
        "tests). Replace the file atomically (write, then rename). "
        "[env TOLLPLANE_POLICY_SOURCE, default kubernetes]",
    )
    parser.add_argument(
        "--namespace",
        default=_env("TOLLPLANE_NAMESPACE", _env("POD_NAMESPACE", "tollplane-system")),
        help="namespace of the policy ConfigMaps "
        "[env TOLLPLANE_NAMESPACE, else POD_NAMESPACE, else tollplane-system]",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on [default 0.0.0.0]")  # noqa: S104
    parser.add_argument(
        "--port",
        type=int,
        default=int(_env("TOLLPLANE_GATE_PORT", "8080")),
        help="port for API traffic (proxy mode) and the check endpoint /_tollplane/check "
        "(both modes) [env TOLLPLANE_GATE_PORT, default 8080]",
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=int(_env("TOLLPLANE_ADMIN_PORT", "9090")),
        help="port for /healthz, /readyz and /metrics, kept apart from API traffic "
        "[env TOLLPLANE_ADMIN_PORT, default 9090]",
    )
    parser.add_argument(
        "--mode",
        choices=("proxy", "forward-auth"),
        default=_env("TOLLPLANE_GATE_MODE", "proxy"),
        help="proxy: the route sends traffic to the gate, which forwards allowed calls to "
        "the Api's upstream. forward-auth: Envoy Gateway (ext_authz) or Traefik (ForwardAuth) "
        "ask /_tollplane/check and forward the call themselves; every other path answers 404 "
        "[env TOLLPLANE_GATE_MODE, default proxy]",
    )
    parser.add_argument(
        "--redis-url",
        default=_env("TOLLPLANE_REDIS_URL", ""),
        metavar="URL",
        help="redis://host:port/db holding rate, quota and credit counters shared by all "
        "replicas; unset keeps counters in memory, right for one replica only "
        "[env TOLLPLANE_REDIS_URL]",
    )
    parser.add_argument(
        "--redis-failure",
        choices=("open", "closed"),
        default=_env("TOLLPLANE_REDIS_FAILURE", "open"),
        help="when Redis cannot be reached: 'open' allows calls unmetered and logs an error; "
        "'closed' answers 503 counters-unavailable [env TOLLPLANE_REDIS_FAILURE, default open]",
    )
    parser.add_argument(
        "--log-level",
        default=_env("TOLLPLANE_LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
        help="level of the gate's own log (stderr); the access log (stdout, one JSON line "
        "per call) is written at info [env TOLLPLANE_LOG_LEVEL, default info]",
    )
    parser.add_argument(
        "--policy-poll-seconds",
        type=float,
        default=float(_env("TOLLPLANE_POLICY_POLL_SECONDS", "1")),
        metavar="SECONDS",
        help="how often a PATH policy source is checked for changes "
        "[env TOLLPLANE_POLICY_POLL_SECONDS, default 1]",
    )
