"""``tollplane approve TENANT API``: add a tenant to an Api's spec.access.approvedTenants.

For teams not using GitOps. The Api is patched with a JSON patch guarded by a ``test`` of the
list it read, so a concurrent edit makes the patch fail instead of being overwritten; running
the command twice changes nothing the second time.
"""

from __future__ import annotations

import argparse
import sys

from tollplane.controller.kube import Kube, KubeError, new_api_client, path

FIELD_MANAGER = "tollplane-approve"


def configure(parser: argparse.ArgumentParser) -> None:
    """Declare the command's arguments."""
    parser.add_argument("tenant", metavar="TENANT", help="the Tenant to approve")
    parser.add_argument("api", metavar="API", help="the Api: NAMESPACE/NAME, or NAME with -n")
    parser.add_argument("-n", "--namespace", default="default", help="namespace of the Api")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG)")


def run(args: argparse.Namespace) -> int:
    """Approve; prints what happened, returns 0 on success (also when already approved)."""
    namespace, _, name = args.api.rpartition("/")
    namespace = namespace or args.namespace
    kube = Kube(new_api_client(args.kubeconfig), FIELD_MANAGER)
    where = f"Api {namespace}/{name}"
    try:
        api = kube.request("GET", path("Api", namespace, name))
        access = api.get("spec", {}).get("access", {})
        approved = list(access.get("approvedTenants") or [])
        if args.tenant in approved:
            print(f"{where}: tenant {args.tenant} is already approved")
            return 0
        try:
            kube.request("GET", path("Tenant", None, args.tenant))
        except KubeError as exc:
            if exc.status != 404:
                raise
            print(f"warning: Tenant {args.tenant} does not exist (yet); approving anyway")
        ops: list[dict[str, object]] = []
        if "access" not in api.get("spec", {}):
            ops.append({"op": "add", "path": "/spec/access", "value": {}})
        if "approvedTenants" in access:
            ops.append({"op": "test", "path": "/spec/access/approvedTenants", "value": approved})
            ops.append(
                {"op": "add", "path": "/spec/access/approvedTenants/-", "value": args.tenant}
            )
        else:
            ops.append(
                {"op": "add", "path": "/spec/access/approvedTenants", "value": [args.tenant]}
            )
        kube.request(
            "PATCH",
            path("Api", namespace, name),
            query=[("fieldManager", FIELD_MANAGER)],
            body=ops,
            content_type="application/json-patch+json",
        )
    except KubeError as exc:
        if exc.status == 404:
            print(f"error: {where} not found", file=sys.stderr)
        elif exc.status == 422 and "test" in exc.message:
            print(f"error: {where} changed meanwhile; run the command again", file=sys.stderr)
        else:
            print(f"error: {where}: {exc.message}", file=sys.stderr)
        return 1
    if access.get("approval", "Automatic") != "Manual":
        print(f"note: {where} uses Automatic approval; the list only matters under Manual")
    print(f"{where}: approved tenant {args.tenant}")
    return 0
