"""``tollplane operator``: flags, environment variables and kopf settings."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from tollplane.compile import (
    GateMode,
    IngressController,
    ParentRef,
    RouteKind,
    ServiceRef,
    Settings,
)
from tollplane.compile.snapshot import DEFAULT_NAMESPACE, FIELD_MANAGER

# kopf's watch streams: the apiserver ends each one after SERVER_TIMEOUT; the client gives up
# after CLIENT_TIMEOUT. Without them a stream that died silently (a dropped connection behind
# a load balancer) is never replaced and the operator stops seeing changes.
WATCH_SERVER_TIMEOUT = 300
WATCH_CLIENT_TIMEOUT = 330
WATCH_CONNECT_TIMEOUT = 30
STORAGE_PREFIX = "tollplane.io"


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the operator's flags (each also read from a TOLLPLANE_* variable)."""
    add_compile_arguments(parser)
    add_runtime_arguments(parser)


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that change what is compiled (shared with commands that compile files);
    :func:`settings_from` turns them into :class:`Settings`."""
    namespace = _env("TOLLPLANE_NAMESPACE", _env("POD_NAMESPACE", DEFAULT_NAMESPACE))
    parser.add_argument(
        "--namespace",
        default=namespace,
        help="where the policy ConfigMaps and key Secrets live "
        "(TOLLPLANE_NAMESPACE, else POD_NAMESPACE, else tollplane-system)",
    )
    parser.add_argument(
        "--route-kind",
        choices=[k.value for k in RouteKind],
        default=_env("TOLLPLANE_ROUTE_KIND", RouteKind.HTTPROUTE.value),
        help="what routes traffic to the gate: Gateway API HTTPRoute, Ingress, or None "
        "(you route it yourself) (TOLLPLANE_ROUTE_KIND)",
    )
    parser.add_argument(
        "--gateway",
        default=_env("TOLLPLANE_GATEWAY"),
        metavar="NAMESPACE/NAME[/SECTION]",
        help="the Gateway HTTPRoutes attach to (TOLLPLANE_GATEWAY); an Api may override it",
    )
    parser.add_argument(
        "--ingress-class",
        default=_env("TOLLPLANE_INGRESS_CLASS"),
        help="ingressClassName of generated Ingresses (TOLLPLANE_INGRESS_CLASS)",
    )
    parser.add_argument(
        "--gate-service",
        default=_env("TOLLPLANE_GATE_SERVICE"),
        metavar="NAMESPACE/NAME:PORT",
        help="the gate's Service that routes send traffic to "
        "(TOLLPLANE_GATE_SERVICE, default <namespace>/tollplane-gate:8080)",
    )
    parser.add_argument(
        "--gate-mode",
        choices=[m.value for m in GateMode],
        default=_env("TOLLPLANE_GATE_MODE", GateMode.PROXY.value),
        help="proxy: routes point at the gate; forward-auth: at the upstream, the proxy asks "
        "the gate first (TOLLPLANE_GATE_MODE)",
    )
    parser.add_argument(
        "--ingress-controller",
        choices=[c.value for c in IngressController],
        default=_env("TOLLPLANE_INGRESS_CONTROLLER", IngressController.NGINX.value),
        help="the Ingress controller in use (TOLLPLANE_INGRESS_CONTROLLER)",
    )
    parser.add_argument(
        "--public-scheme",
        choices=["https", "http"],
        default=_env("TOLLPLANE_PUBLIC_SCHEME", "https"),
        help="scheme of the URLs shown in status (TOLLPLANE_PUBLIC_SCHEME)",
    )


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the running operator only."""
    parser.add_argument(
        "--debounce-seconds",
        type=float,
        default=float(_env("TOLLPLANE_DEBOUNCE_SECONDS", "0.5") or 0.5),
        help="how long a burst of changes may settle before one publish "
        "(TOLLPLANE_DEBOUNCE_SECONDS)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=float(_env("TOLLPLANE_RESYNC_SECONDS", "60") or 60),
        help="publish at least this often, for time-based states and Secret edits "
        "(TOLLPLANE_RESYNC_SECONDS)",
    )
    parser.add_argument(
        "--health-port",
        type=int,
        default=int(_env("TOLLPLANE_HEALTH_PORT", "8081") or 8081),
        help="liveness endpoint port, serving /healthz (TOLLPLANE_HEALTH_PORT); 0 disables it",
    )
    parser.add_argument(
        "--peering",
        default=_env("TOLLPLANE_PEERING"),
        metavar="NAME",
        help="kopf peering name, for several replicas with one active (TOLLPLANE_PEERING); "
        "unset: standalone",
    )
    parser.add_argument(
        "--log-level",
        default=_env("TOLLPLANE_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (TOLLPLANE_LOG_LEVEL)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    """Compiler settings from parsed flags."""
    return Settings(
        namespace=args.namespace,
        route_kind=RouteKind(args.route_kind),
        gateway=ParentRef.parse(args.gateway) if args.gateway else None,
        ingress_class=args.ingress_class,
        gate_service=ServiceRef.parse(args.gate_service) if args.gate_service else None,
        gate_mode=GateMode(args.gate_mode),
        ingress_controller=IngressController(args.ingress_controller),
        public_scheme=args.public_scheme,
    )


def kopf_settings(args: argparse.Namespace) -> Any:
    """kopf's settings: annotation storage, watch timeouts, quiet event posting, peering."""
    import kopf  # noqa: PLC0415 - keep `tollplane --help` light

    settings = kopf.OperatorSettings()
    # Progress and diff-base in annotations, never in status: our CRD schema would prune
    # kopf's status fields, and kopf would then re-run handlers forever. (Only
    # event handlers are registered, so kopf has nothing to store; this keeps it that way.)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT
    settings.watching.connect_timeout = WATCH_CONNECT_TIMEOUT
    # kopf's own per-handler Events would flood `kubectl describe`; ours are on transitions.
    settings.posting.level = logging.WARNING
    settings.peering.standalone = not args.peering
    if args.peering:
        settings.peering.name = args.peering
        settings.peering.mandatory = True
    return settings


def run(args: argparse.Namespace) -> int:
    """Run the operator until interrupted."""
    import kopf  # noqa: PLC0415 - keep `tollplane --help` light

    from tollplane.controller.handlers import Operator  # noqa: PLC0415
    from tollplane.controller.kube import Kube, new_api_client  # noqa: PLC0415
    from tollplane.controller.publisher import Publisher  # noqa: PLC0415

    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.log_level != "DEBUG":
        # kopf logs every handled watch event at INFO; 10,000 tenants make that noise.
        logging.getLogger("kopf").setLevel(logging.WARNING)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        logging.getLogger("tollplane.operator").error("%s", exc)
        return 2
    kube = Kube(new_api_client(), FIELD_MANAGER)
    operator = Operator(
        lambda source: Publisher(
            kube,
            settings,
            source,
            debounce=args.debounce_seconds,
            resync=args.resync_seconds,
        )
    )
    logging.getLogger("tollplane.operator").info(
        "starting: namespace %s, routes %s, gateway %s, gate %s (%s)",
        settings.namespace,
        settings.route_kind.value,
        settings.gateway or "-",
        settings.gate,
        settings.gate_mode.value,
    )
    kopf.run(
        registry=operator.registry,
        settings=kopf_settings(args),
        clusterwide=True,
        standalone=not args.peering,
        peering_name=args.peering,
        liveness_endpoint=(
            f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None
        ),
    )
    return 0
