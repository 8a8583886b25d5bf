#!/usr/bin/env python3
"""A real Kubernetes control plane for Tollplane's tests: etcd, kube-apiserver and
kube-controller-manager on loopback, built from pinned Go modules.

Subcommands (see docs/controlplane.md):

    build    build or reuse kube-apiserver, kube-controller-manager, kubectl, etcd, helm and
             fetch the Gateway API standard-channel CRDs into the toolchain cache
    up       start the control plane (or reuse a healthy one) and print `export KUBECONFIG=...`
    down     stop it and remove its state
    status   show what is running

The same operations are importable for pytest: ensure_built(), start(), session(), stop().

Only `cryptography` and PyYAML are needed beyond the standard library, so `make cluster` works
from the dev venv without the tollplane package being importable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import http.client
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REPO = Path(__file__).resolve().parents[2]
TOOLCHAIN_SRC = REPO / "tests" / "toolchain"
CLUSTER_DIR = REPO / ".cluster"

SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Only what a real cluster does to the objects the operator touches: ownerReference garbage
# collection, namespace deletion, default ServiceAccounts (+ legacy token Secrets) and the
# kube-root-ca.crt ConfigMap. No scheduler or kubelet runs, so workload controllers would only
# create Pods that never start.
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
# Start order; stop runs in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")
# In .cluster/: "lock" serializes up/down; every session() holds "users.lock" shared.
LOCK_FILES = ("lock", "users.lock")


def _log(message: str) -> None:
    # stdout is reserved for `export KUBECONFIG=...` so that `eval "$(... up)"` works.
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- toolchain


def cache_root() -> Path:
    """Where built binaries and fetched CRDs live: ${TOLLPLANE_CACHE:-~/.cache/tollplane}."""
    return Path(os.environ.get("TOLLPLANE_CACHE", "~/.cache/tollplane")).expanduser()


def _module_key(module_dir: Path) -> str:
    """First 12 hex digits of sha256(go.mod + go.sum): any pin change is a new cache entry."""
    digest = hashlib.sha256()
    digest.update((module_dir / "go.mod").read_bytes())
    digest.update((module_dir / "go.sum").read_bytes())
    return digest.hexdigest()[:12]


def pinned_version(module_dir: Path, module: str) -> str:
    """The version `module_dir`/go.mod pins for `module` (versions are written there only)."""
    gomod = (module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", gomod, re.MULTILINE)
    if not match:
        raise RuntimeError(f"{module} is not required in {module_dir / 'go.mod'}")
    return match.group(1)


def _kube_ldflags(module_dir: Path) -> list[str]:
    # Without these kube-apiserver reports v0.0.0, which kubectl and version-gated clients
    # (helm's kubeVersion checks, kopf) would see.
    version = pinned_version(module_dir, "k8s.io/kubernetes")
    major, minor = version.lstrip("v").split(".")[:2]
    pkg = "k8s.io/component-base/version"
    return [
        f"-X {pkg}.gitVersion={version}",
        f"-X {pkg}.gitMajor={major}",
        f"-X {pkg}.gitMinor={minor}",
        f"-X {pkg}.gitTreeState=clean",
    ]


def _helm_ldflags(module_dir: Path) -> list[str]:
    # Mirrors helm's own Makefile: its version, and the Kubernetes version it assumes for
    # `helm template` / `helm lint` (taken from the client-go it is built with).
    version = pinned_version(module_dir, "helm.sh/helm/v3")
    client_go = pinned_version(module_dir, "k8s.io/client-go")
    k8s_minor = client_go.lstrip("v").split(".")[1]
    flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
    for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={k8s_minor}"]
    return flags


@dataclass(frozen=True)
class GoToolchain:
    """Binaries built from one wrapper Go module under tests/toolchain/<name>."""

    name: str
    binaries: tuple[tuple[str, str], ...]  # (binary name, Go package)
    ldflags: Callable[[Path], list[str]]

    @property
    def module_dir(self) -> Path:
        """The wrapper module holding the pins."""
        return TOOLCHAIN_SRC / self.name

    @property
    def cache_dir(self) -> Path:
        """The cache entry for the current pins."""
        return cache_root() / "toolchain" / f"{self.name}-{_module_key(self.module_dir)}"


KUBE = GoToolchain(
    name="kube",
    binaries=(
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        ("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
        ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
        ("etcd", "go.etcd.io/etcd/server/v3"),
    ),
    ldflags=_kube_ldflags,
)
HELM = GoToolchain(
    name="helm",
    binaries=(("helm", "helm.sh/helm/v3/cmd/helm"),),
    ldflags=_helm_ldflags,
)
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"
GATEWAY_API_DIR = TOOLCHAIN_SRC / "gateway-api"


@dataclass(frozen=True)
class Toolchain:
    """Paths of everything `build` produces."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    etcd: Path
    helm: Path
    gateway_api_crds: tuple[Path, ...]


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (a second `make toolchain`, parallel pytest runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _cached(final: Path, produce: Callable[[Path], dict[str, Any]], what: str) -> Path:
    """Return `final`, producing it first if needed.

    `produce` fills a temporary directory next to `final`, which is then renamed into place,
    so an interrupted build never leaves a half cache entry. build.json, written last, marks a
    complete entry (a directory without it is a leftover from elsewhere and is rebuilt).
    """
    marker = final / "build.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        _log(f"reused {what}: {final} (built {info['built_at']} in {info['seconds']:.0f}s)")
        return final
    with _file_lock(final.parent / f".{final.name}.lock"):
        if marker.exists():  # another process finished it while we waited for the lock
            _log(f"reused {what}: {final} (built concurrently)")
            return final
        # Temporary directories of builds that were killed outright (no chance to clean up);
        # holding the lock means no live build owns them.
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _log(f"building {what} into {final} ...")
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            started = time.monotonic()
            info = produce(tmp)
            info["seconds"] = round(time.monotonic() - started, 1)
            info["built_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _log(f"built {what} in {info['seconds']:.0f}s: {final}")
        return final


def _go(args: list[str], cwd: Path) -> str:
    """Run the go command; its progress goes to our stderr, its stdout is returned."""
    go = shutil.which("go")
    if go is None:
        raise RuntimeError("`go` is not on PATH; the control plane is built from Go modules")
    return subprocess.run(
        [go, *args], cwd=cwd, check=True, text=True, stdout=subprocess.PIPE
    ).stdout


def _default_binary_name(package: str) -> str:
    # `go build -o dir/` names a binary after the last path element, skipping a major
    # version suffix: go.etcd.io/etcd/server/v3 becomes "server".
    parts = package.split("/")
    return parts[-2] if re.fullmatch(r"v\d+", parts[-1]) else parts[-1]


def _build_go_toolchain(toolchain: GoToolchain) -> Path:
    def produce(out: Path) -> dict[str, Any]:
        packages = [package for _, package in toolchain.binaries]
        ldflags = " ".join(["-s", "-w", *toolchain.ldflags(toolchain.module_dir)])
        # One `go build` for all packages: shared dependencies compile once, links run in
        # parallel. The environment (notably CGO_ENABLED) is left as is so the Go build cache
        # of earlier builds stays valid.
        _go(
            ["build", "-trimpath", f"-ldflags={ldflags}", "-o", f"{out}/", *packages],
            cwd=toolchain.module_dir,
        )
        for name, package in toolchain.binaries:
            built = out / _default_binary_name(package)
            if built.name != name:
                built.rename(out / name)
        return {"packages": packages, "ldflags": ldflags, "go": _go(["version"], cwd=out).strip()}

    return _cached(toolchain.cache_dir, produce, f"{toolchain.name} toolchain")


def _fetch_gateway_api_crds() -> Path:
    final = cache_root() / "toolchain" / f"gateway-api-{_module_key(GATEWAY_API_DIR)}"

    def produce(out: Path) -> dict[str, Any]:
        # Downloading inside the pin module makes go verify the zip against its go.sum.
        info = json.loads(_go(["mod", "download", "-json", GATEWAY_API_MODULE], GATEWAY_API_DIR))
        if "Error" in info:
            raise RuntimeError(f"go mod download {GATEWAY_API_MODULE}: {info['Error']}")
        source = Path(info["Dir"]) / "config" / "crd" / "standard"
        (out / "crds").mkdir()
        files = sorted(source.glob("*.yaml"))
        for file in files:
            shutil.copyfile(file, out / "crds" / file.name)
        return {
            "module": f"{GATEWAY_API_MODULE}@{info['Version']}",
            "files": [f.name for f in files],
        }

    return _cached(final, produce, "Gateway API standard CRDs")


def ensure_built() -> Toolchain:
    """Build (or reuse from the cache) every binary and CRD set the tests need."""
    kube = _build_go_toolchain(KUBE)
    helm = _build_go_toolchain(HELM)
    gateway = _fetch_gateway_api_crds()
    return Toolchain(
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kubectl=kube / "kubectl",
        etcd=kube / "etcd",
        helm=helm / "helm",
        gateway_api_crds=tuple(sorted((gateway / "crds").glob("*.yaml"))),
    )


# --------------------------------------------------------------------------- certificates


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256 keys are generated in milliseconds (RSA takes noticeably longer) and every
    # component, including service-account token signing (ES256), accepts them.
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    path: Path,
    common_name: str,
    *,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    organization: str | None = None,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Write <path>.crt and <path>.key: a CA when `ca` is None, else a leaf it signs."""
    key = _new_key()
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    issuer_cert, issuer_key = ca if ca else (None, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
    )
    if ca is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(path.with_suffix(".key"), key)
    return cert, key


def _generate_pki(pki: Path) -> None:
    pki.mkdir(parents=True)
    ca = _issue(pki / "ca", "tollplane-local-ca")
    service_ip = ipaddress.IPv4Network(SERVICE_CIDR)[1]  # the `kubernetes` Service
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns]
    sans += [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.IPAddress(service_ip)]
    _issue(
        pki / "apiserver", "kube-apiserver", ca=ca, usage=ExtendedKeyUsageOID.SERVER_AUTH, sans=sans
    )
    _issue(
        pki / "admin",
        "tollplane-admin",
        ca=ca,
        organization="system:masters",
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    # The identity the bootstrap RBAC policy grants to kube-controller-manager.
    _issue(
        pki / "controller-manager",
        "system:kube-controller-manager",
        ca=ca,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    sa_key = _new_key()
    _write_key(pki / "sa.key", sa_key)
    (pki / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def _write_kubeconfig(path: Path, server: str, pki: Path, client: str) -> None:
    user = f"tollplane-{client}"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tollplane",
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{client}.crt"),
                    "client-key": str(pki / f"{client}.key"),
                },
            }
        ],
        "contexts": [{"name": "tollplane", "context": {"cluster": "tollplane", "user": user}}],
        "current-context": "tollplane",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    # The port is released before the component binds it; a collision shows up as a failed
    # start with the reason in the component's log.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(name: str, argv: list[str], cluster_dir: Path) -> dict[str, Any]:
    """Start a component detached from us (own session), logging to .cluster/<name>.log."""
    with (cluster_dir / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cluster_dir,
            start_new_session=True,
        )
    record = {"pid": process.pid, "binary": argv[0]}
    # Just after exec, /proc/<pid>/cmdline can read empty for a moment; wait until it shows
    # the binary so that _alive()'s identity check holds from here on.
    deadline = time.monotonic() + 5
    while not _alive(record) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return record


def _alive(proc: dict[str, Any]) -> bool:
    """Whether the recorded process still runs and is still ours (pids get reused)."""
    pid = int(proc["pid"])
    _reap(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and cmdline[0].decode() == proc["binary"]


def _reap(pid: int) -> None:
    # When the component is our own child (started by this pytest session), collect its exit
    # status so that it does not linger as a zombie that looks alive.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(name: str, proc: dict[str, Any]) -> None:
    if not _alive(proc):
        return
    pid = int(proc["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while _alive(proc):
        if time.monotonic() > deadline:
            _log(f"{name} (pid {pid}) ignored SIGTERM; killing it")
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
        time.sleep(0.1)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(
    what: str, check: Callable[[], bool], proc: dict[str, Any], log: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if not _alive(proc):
            raise RuntimeError(f"{what} exited during startup; {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s; {log}:\n{_tail(log)}")
        time.sleep(0.2)


def _https_get(server: str, pki: Path, path: str) -> tuple[int, bytes]:
    """GET from the apiserver as admin; (0, b"") when it does not answer (or pki/ is gone)."""
    host, port = server.removeprefix("https://").rsplit(":", 1)
    try:
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        conn = http.client.HTTPSConnection(host, int(port), context=context, timeout=3)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()
    except OSError:
        return 0, b""


def _etcd_healthy(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=3)
    try:
        conn.request("GET", "/health")
        health: dict[str, Any] = json.loads(conn.getresponse().read())
        return health.get("health") == "true"
    except (OSError, ValueError):
        return False
    finally:
        conn.close()


# --------------------------------------------------------------------------- cluster


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane, as the tests see it."""

    cluster_dir: Path
    server: str
    kubeconfig: Path
    ca_file: Path
    kubectl: Path
    helm: Path
    gateway_api_crds: tuple[Path, ...]

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG, for subprocesses (kubectl, helm, the operator)."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}


def _state_file(cluster_dir: Path) -> Path:
    return cluster_dir / "state.json"


def _load_state(cluster_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(_state_file(cluster_dir).read_text())
        return state
    except (OSError, ValueError):
        return None


def _healthy(cluster_dir: Path, state: dict[str, Any]) -> bool:
    processes = state["processes"]
    if not all(_alive(processes.get(name, {"pid": 0, "binary": ""})) for name in COMPONENTS):
        return False
    status, body = _https_get(str(state["server"]), cluster_dir / "pki", "/readyz")
    return status == 200 and body.strip() == b"ok"


def _control_plane(cluster_dir: Path, state: dict[str, Any]) -> ControlPlane:
    toolchain = state["toolchain"]
    return ControlPlane(
        cluster_dir=cluster_dir,
        server=str(state["server"]),
        kubeconfig=cluster_dir / "kubeconfig",
        ca_file=cluster_dir / "pki" / "ca.crt",
        kubectl=Path(str(toolchain["kubectl"])),
        helm=Path(str(toolchain["helm"])),
        gateway_api_crds=tuple(Path(p) for p in toolchain["gateway_api_crds"]),
    )


def start(cluster_dir: Path = CLUSTER_DIR, *, disposable: bool = False) -> ControlPlane:
    """Reuse the healthy control plane in `cluster_dir` or start a fresh one.

    A fresh start wipes `cluster_dir` (certificates, etcd data, logs) after stopping whatever
    a previous, unhealthy run left behind. A `disposable` one is stopped when the last
    session() using it ends; otherwise only `down` stops it.
    """
    toolchain = ensure_built()
    cluster_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(cluster_dir / "lock"):
        state = _load_state(cluster_dir)
        if state is not None:
            if state.get("toolchain") != _toolchain_record(toolchain):
                _log("the running control plane was built from other pins; replacing it")
            elif _healthy(cluster_dir, state):
                _log(f"reusing the control plane at {state['server']}")
                return _control_plane(cluster_dir, state)
            else:
                _log("a previous control plane is unhealthy; replacing it")
            _stop_recorded(cluster_dir, state)
        for entry in cluster_dir.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            elif entry.name not in LOCK_FILES:
                entry.unlink()
        started = time.monotonic()
        try:
            state = _start_fresh(cluster_dir, toolchain, disposable)
        except BaseException:
            # Leave nothing half-started behind; the logs stay for the error message's reader.
            _stop_recorded(cluster_dir, _load_state(cluster_dir) or {})
            raise
        _log(f"control plane ready at {state['server']} in {time.monotonic() - started:.1f}s")
        return _control_plane(cluster_dir, state)


def _toolchain_record(toolchain: Toolchain) -> dict[str, Any]:
    # Cache paths embed the pins' hash, so comparing records detects a pin change.
    return {
        "kubectl": str(toolchain.kubectl),
        "helm": str(toolchain.helm),
        "gateway_api_crds": [str(p) for p in toolchain.gateway_api_crds],
    }


def _start_fresh(cluster_dir: Path, toolchain: Toolchain, disposable: bool) -> dict[str, Any]:
    pki = cluster_dir / "pki"
    _generate_pki(pki)
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    server = f"https://127.0.0.1:{api_port}"
    state: dict[str, Any] = {
        "server": server,
        "ports": {"etcd": etcd_port, "etcd-peer": peer_port, "kube-apiserver": api_port},
        "processes": {},
        "toolchain": _toolchain_record(toolchain),
        "disposable": disposable,
    }
    processes = state["processes"]

    def record() -> None:
        # Written after every spawn so `down` can stop a half-started control plane.
        _state_file(cluster_dir).write_text(json.dumps(state, indent=2) + "\n")

    processes["etcd"] = _spawn(
        "etcd",
        [
            str(toolchain.etcd),
            "--name=tollplane",
            f"--data-dir={cluster_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=tollplane={peer_url}",
            # Test data is disposable; skipping fsync makes every write much faster.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        cluster_dir,
    )
    record()
    _wait(
        "etcd",
        lambda: _etcd_healthy(etcd_url),
        processes["etcd"],
        cluster_dir / "etcd.log",
        timeout=30,
    )

    processes["kube-apiserver"] = _spawn(
        "kube-apiserver",
        [
            str(toolchain.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service cannot point at a loopback address (its Endpoints would be
            # invalid) and no Pod could use it anyway, so the apiserver does not maintain them.
            "--endpoint-reconciler-type=none",
            "--profiling=false",
        ],
        cluster_dir,
    )
    record()
    _wait(
        "kube-apiserver",
        lambda: _https_get(server, pki, "/readyz")[0] == 200,
        processes["kube-apiserver"],
        cluster_dir / "kube-apiserver.log",
        timeout=120,
    )

    kcm_kubeconfig = cluster_dir / "controller-manager.kubeconfig"
    _write_kubeconfig(kcm_kubeconfig, server, pki, "controller-manager")
    processes["kube-controller-manager"] = _spawn(
        "kube-controller-manager",
        [
            str(toolchain.kube_controller_manager),
            f"--kubeconfig={kcm_kubeconfig}",
            # Each controller authenticates as its own ServiceAccount with its bootstrap RBAC
            # role, as on kubeadm clusters; so a missing permission fails here as it would there.
            "--use-service-account-credentials=true",
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--leader-elect=false",
            "--secure-port=0",  # nothing scrapes its metrics; saves a port and delegated auth
        ],
        cluster_dir,
    )
    record()
    # The serviceaccount controller creating default/default proves the controller manager
    # authenticated, got its controllers' tokens and is reconciling.
    _wait(
        "kube-controller-manager",
        lambda: (
            _https_get(server, pki, "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200
        ),
        processes["kube-controller-manager"],
        cluster_dir / "kube-controller-manager.log",
        timeout=60,
    )

    _write_kubeconfig(cluster_dir / "kubeconfig", server, pki, "admin")
    record()
    return state


def _stop_recorded(cluster_dir: Path, state: dict[str, Any]) -> None:
    processes = state.get("processes", {})
    for name in reversed(COMPONENTS):
        if name in processes:
            _terminate(name, processes[name])
    _state_file(cluster_dir).unlink(missing_ok=True)
    shutil.rmtree(cluster_dir / "etcd", ignore_errors=True)


@contextlib.contextmanager
def session(cluster_dir: Path = CLUSTER_DIR, *, keep: bool = False) -> Iterator[ControlPlane]:
    """Use the control plane for the duration of the block (a pytest session).

    Starts one if needed, disposable unless `keep`. Sessions may overlap (two pytest runs in
    one checkout): each holds a shared lock on users.lock, and a disposable control plane is
    stopped by whichever session ends last, never under another one's feet.
    """
    cluster_dir.mkdir(parents=True, exist_ok=True)
    with (cluster_dir / "users.lock").open("a") as users:
        fcntl.flock(users, fcntl.LOCK_SH)
        plane = start(cluster_dir, disposable=not keep)
        try:
            yield plane
        finally:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log("the control plane is still used by another session; leaving it running")
            else:
                with _file_lock(cluster_dir / "lock"):
                    state = _load_state(cluster_dir)
                    if state and state.get("disposable") and state["server"] == plane.server:
                        _stop_recorded(cluster_dir, state)


def stop(cluster_dir: Path = CLUSTER_DIR) -> bool:
    """Stop the control plane recorded in `cluster_dir`; False when none was recorded.

    Logs and certificates stay for inspection; etcd data and state.json are removed.
    """
    if not cluster_dir.is_dir():
        return False
    with _file_lock(cluster_dir / "lock"):
        state = _load_state(cluster_dir)
        if state is None:
            return False
        _stop_recorded(cluster_dir, state)
        return True


# --------------------------------------------------------------------------- CLI


def _cmd_build(_: argparse.Namespace) -> int:
    started = time.monotonic()
    toolchain = ensure_built()
    for name in ("kube_apiserver", "kube_controller_manager", "kubectl", "etcd", "helm"):
        _log(f"  {name.replace('_', '-'):24} {getattr(toolchain, name)}")
    _log(f"  {'gateway-api CRDs':24} {len(toolchain.gateway_api_crds)} files")
    _log(f"toolchain ready in {time.monotonic() - started:.1f}s")
    return 0


def _cmd_up(_: argparse.Namespace) -> int:
    control_plane = start()
    print(f"export KUBECONFIG={control_plane.kubeconfig}")
    return 0


def _cmd_down(_: argparse.Namespace) -> int:
    _log("control plane stopped" if stop() else "no control plane was running")
    return 0


def _cmd_status(_: argparse.Namespace) -> int:
    state = _load_state(CLUSTER_DIR)
    if state is None:
        _log("not running")
        return 1
    processes = state["processes"]
    for name in COMPONENTS:
        proc = processes.get(name)
        alive = proc is not None and _alive(proc)
        pid = proc["pid"] if proc else "-"
        _log(f"  {name:24} pid {pid!s:8} {'running' if alive else 'NOT RUNNING'}")
    healthy = _healthy(CLUSTER_DIR, state)
    _log(f"  {'server':24} {state['server']} {'ready' if healthy else 'NOT READY'}")
    _log(f"  {'kubeconfig':24} {CLUSTER_DIR / 'kubeconfig'}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (used by `make toolchain`, `make cluster`, `make cluster-down`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler, text in (
        ("build", _cmd_build, "build or reuse the binaries and CRDs"),
        ("up", _cmd_up, "start (or reuse) the control plane; prints export KUBECONFIG=..."),
        ("down", _cmd_down, "stop the control plane"),
        ("status", _cmd_status, "show whether it runs"),
    ):
        commands.add_parser(name, help=text).set_defaults(handler=handler)
    args = parser.parse_args(argv)
    # Unwind on SIGTERM as on Ctrl-C: a build in progress kills `go build` and removes its
    # temporary directory, a start in progress stops what it already started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        return int(args.handler(args))
    except (RuntimeError, subprocess.CalledProcessError) as error:
        _log(f"error: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
