"""``tollplane dev``: Tollplane on a laptop, no cluster.

Reads the manifests in a folder, compiles them with the operator's compiler, and serves the
gate on them with in-memory counters.  Apis whose upstream is a cluster Service are sent to
a small built-in demo upstream.  Key values come from Secrets found in the folder (adopted
exactly as the operator adopts them); the rest are generated for the session.  Editing a
manifest recompiles and hot-swaps the policy; a manifest that does not compile is reported
and the last good policy keeps serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import uvicorn

from tollplane.api.apis import Api
from tollplane.api.keys import generate_key
from tollplane.api.policy import Policy
from tollplane.api.tenants import Tenant
from tollplane.compile import (
    Desired,
    RouteKind,
    Settings,
    Snapshot,
    compile_all,
    snapshot_from_objects,
    statuses,
)
from tollplane.gate import accesslog
from tollplane.gate.main import serve
from tollplane.gate.settings import Settings as GateSettings
from tollplane.manifests import ManifestError, fingerprint, load

log = logging.getLogger("tollplane.dev")

DEMO_PREFIX = "/_demo"


@dataclass
class Session:
    """What survives recompiles: the generated keys (stable for the whole session)."""

    root: Path
    namespace: str
    demo_url: str
    generated: dict[str, str] = field(default_factory=dict)

    def compile(self, now: datetime) -> tuple[Snapshot, Desired, Policy]:
        """Compile the folder; generate values for key Secrets that do not exist."""
        settings = Settings(namespace=self.namespace, route_kind=RouteKind.NONE)
        snapshot = snapshot_from_objects(load(self.root), settings=settings, now=now)
        desired = compile_all(snapshot, self.generated)
        if desired.keys.missing:
            for _tenant, _key_id, secret in desired.keys.missing:
                self.generated.setdefault(secret, generate_key())
            desired = compile_all(snapshot, self.generated)
        return snapshot, desired, self.local(snapshot, desired.policy)

    def local(self, snapshot: Snapshot, policy: Policy) -> Policy:
        """The policy with cluster Service upstreams pointed at the demo upstream."""
        routes = []
        for route in policy.routes:
            api = snapshot.apis.get(route.api)
            if isinstance(api, Api) and api.spec.upstream.service is not None:
                svc = api.spec.upstream.service
                target = f"{self.demo_url}{DEMO_PREFIX}/{route.api.split('/')[0]}/{svc.name}"
                routes.append(route.model_copy(update={"upstream_url": target}))
            else:
                routes.append(route)
        return policy.model_copy(update={"routes": routes}).sealed()


def key_values(
    snapshot: Snapshot, desired: Desired, generated: Mapping[str, str]
) -> dict[str, str]:
    """(tenant/key id) -> key value, for the keys that made it into the policy."""
    values = {}
    for (tenant, key_id), material in sorted(desired.keys.materials.items()):
        view = snapshot.secrets.get(material.secret_name)
        value = view.value if view is not None else generated.get(material.secret_name)
        if value:
            values[f"{tenant}/{key_id}"] = value
    return values


def _curl_target(api: Api, port: int) -> tuple[str, str | None]:
    host = api.spec.hostnames[0].replace("*", "demo") if api.spec.hostnames else None
    base = "" if api.spec.base_path == "/" else api.spec.base_path
    return f"http://127.0.0.1:{port}{base}/", host


def _credential(api: Api, value: str) -> str:
    cred = api.spec.credential
    return f"{cred.header}: {cred.scheme} {value}" if cred.scheme else f"{cred.header}: {value}"


def describe(
    snapshot: Snapshot, desired: Desired, generated: Mapping[str, str], port: int, out: TextIO
) -> None:
    """Print the Apis, the tenants with their keys, and ready-to-paste curl commands."""
    now = snapshot.now or datetime.now(UTC)
    apis = {k: a for k, a in snapshot.apis.items() if isinstance(a, Api)}
    keys = key_values(snapshot, desired, generated)
    status = {(s.kind, s.namespace, s.name): s.status for s in statuses(snapshot, desired)}

    def ready(kind: str, ns: str | None, name: str) -> str:
        conds = status.get((kind, ns, name), {}).get("conditions", [])
        cond = next((c for c in conds if c["type"] == "Ready"), None)
        return f"{cond['status']}/{cond['reason']}" if cond else "-"

    out.write("\nAPIS\n")
    out.write(f"  {'API':34} {'STAGE':11} {'READY':22} CALL\n")
    for key, api in sorted(apis.items()):
        url, host = _curl_target(api, port)
        where = f"{url}" + (f"  (Host: {host})" if host else "")
        stage = api.spec.lifecycle.stage.value
        state = ready("Api", api.metadata.namespace, api.metadata.name)
        out.write(f"  {key:34} {stage:11} {state:22} {where}\n")
    out.write("\nTENANTS\n")
    out.write(f"  {'TENANT':12} {'PLAN':12} {'STATE':16} {'READY':24} KEYS\n")
    for name, tenant in sorted(snapshot.tenants.items()):
        if not isinstance(tenant, Tenant):
            out.write(f"  {name:12} invalid: {tenant.message}\n")
            continue
        st = status.get(("Tenant", None, name), {})
        owned = [k for k in keys if k.startswith(f"{name}/")]
        out.write(
            f"  {name:12} {tenant.spec.plan:12} {st.get('state', '-'):16} "
            f"{ready('Tenant', None, name):24} {', '.join(k.split('/')[1] for k in owned) or '-'}\n"
        )
    out.write("\nTRY IT (keys are valid for this session only)\n")
    for name, tenant in sorted(snapshot.tenants.items()):
        if not isinstance(tenant, Tenant):
            continue
        value = next((v for k, v in keys.items() if k.startswith(f"{name}/")), None)
        if value is None:
            continue
        for ref in tenant.spec.subscriptions:
            target = apis.get(ref.key)
            if target is None:
                continue
            url, host = _curl_target(target, port)
            host_flag = f" -H 'Host: {host}'" if host else ""
            out.write(f"  # {name} -> {ref.key}\n")
            out.write(f"  curl -i{host_flag} -H '{_credential(target, value)}' {url}\n")
    problems = [
        (s.kind, s.key, c)
        for s in statuses(snapshot, desired)
        if (c := ready_condition_of(s.status)) is not None and c["status"] != "True"
    ]
    if problems:
        out.write("\nNOT READY\n")
        for kind, key, cond in problems:
            out.write(f"  {kind} {key}: {cond['reason']}: {cond['message']}\n")
    out.write(f"\n(compiled at {now.isoformat(timespec='seconds')})\n")
    out.flush()


def ready_condition_of(status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Ready condition of a status written as plain data."""
    conds = status.get("conditions") or []
    return next((c for c in conds if c.get("type") == "Ready"), None)


def write_policy(policy: Policy, path: Path) -> None:
    """Replace the policy file atomically, as the gate's file source expects."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(policy.model_dump_json(by_alias=True))
    os.replace(tmp, path)


async def demo_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The built-in upstream: answers every call with JSON describing what it received."""
    if scope["type"] != "http":
        return
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    path: str = scope["path"]
    parts = path.removeprefix(DEMO_PREFIX).strip("/").split("/", 2)
    service = "/".join(parts[:2])
    body = (
        json.dumps(
            {
                "upstream": f"demo upstream for Service {service}",
                "method": scope["method"],
                "path": "/" + (parts[2] if len(parts) > 2 else ""),
                "query": scope["query_string"].decode(),
                "tenant": headers.get("x-tollplane-tenant"),
                "requestId": headers.get("x-request-id"),
            },
            indent=2,
        ).encode()
        + b"\n"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _watch(session: Session, policy_path: Path, port: int, interval: float) -> None:
    seen = fingerprint(session.root)
    while True:
        await asyncio.sleep(interval)
        current = fingerprint(session.root)
        if current == seen:
            continue
        seen = current
        try:
            snapshot, desired, policy = session.compile(datetime.now(UTC))
        except (ManifestError, ValueError) as exc:
            log.error("not reloaded, the last good policy keeps serving: %s", exc)
            continue
        write_policy(policy, policy_path)
        log.info("manifests changed: policy revision %s", policy.revision)
        describe(snapshot, desired, session.generated, port, sys.stdout)


async def _run(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    demo = uvicorn.Server(
        uvicorn.Config(
            demo_upstream,
            host="127.0.0.1",
            port=args.upstream_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
    )
    demo_task = asyncio.create_task(demo.serve())
    while not demo.started:
        if demo_task.done():
            return 1
        await asyncio.sleep(0.01)
    demo_port = demo.servers[0].sockets[0].getsockname()[1]
    session = Session(root, args.namespace, f"http://127.0.0.1:{demo_port}")
    try:
        snapshot, desired, policy = session.compile(datetime.now(UTC))
    except (ManifestError, ValueError) as exc:
        log.error("cannot compile %s: %s", root, exc)
        demo.should_exit = True
        await demo_task
        return 1
    with tempfile.TemporaryDirectory(prefix="tollplane-dev-") as tmp:
        policy_path = Path(tmp) / "policy.json"
        write_policy(policy, policy_path)
        gate = GateSettings(
            policy_source=str(policy_path),
            host=args.host,
            port=args.port,
            admin_port=args.admin_port,
            log_level=args.log_level,
            policy_poll_seconds=0.5,
        )

        def started() -> None:
            sys.stdout.write(
                f"Tollplane dev: gate on http://{args.host}:{args.port} "
                f"(metrics http://{args.host}:{args.admin_port}/metrics), "
                f"demo upstream on :{demo_port}, policy revision {policy.revision}\n"
            )
            describe(snapshot, desired, session.generated, args.port, sys.stdout)
            sys.stdout.write(f"\nWatching {root} for changes. Ctrl-C stops.\n")
            sys.stdout.flush()

        watcher = asyncio.create_task(_watch(session, policy_path, args.port, args.poll_seconds))
        try:
            await serve(gate, on_started=started)
        finally:
            watcher.cancel()
            demo.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await demo_task
    return 0


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the ``tollplane dev`` flags."""
    parser.description = (
        "Try Tollplane with no cluster: compile the Apis, BillingPlans, Tenants and key Secrets "
        "in DIR with the operator's compiler and serve the gate on them (in-memory counters). "
        "Apis whose upstream is a cluster Service answer from a built-in demo upstream. Key "
        "values come from Secrets in DIR (in --namespace), the rest are generated for the "
        "session. Prints tenants, keys and curl commands; edits to DIR are hot-reloaded."
    )
    parser.add_argument("dir", nargs="?", default="examples", help="manifest folder [examples]")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8080, help="gate port [8080]")
    parser.add_argument(
        "--admin-port", type=int, default=9090, help="/healthz, /readyz, /metrics port [9090]"
    )
    parser.add_argument(
        "--upstream-port", type=int, default=0, help="demo upstream port [0: any free port]"
    )
    parser.add_argument(
        "--namespace",
        default="tollplane-system",
        help="the operator namespace: key Secrets in DIR are read from it [tollplane-system]",
    )
    parser.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often DIR is checked [1]"
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="also print the gate's JSON access log (one line per call) on stdout",
    )


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tollplane dev``."""
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.log_level != "debug":
        # Three uvicorn servers (gate, admin, demo upstream) would each announce themselves;
        # the banner below says where everything listens.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    if args.access_log:
        accesslog.setup()
    else:
        # The demo prints its own summary; per-call JSON lines only when asked for.
        logging.getLogger("tollplane.access").setLevel(logging.WARNING)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_run(args))
    except KeyboardInterrupt:
        return 0
