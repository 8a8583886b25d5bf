"""`tollplane operator` as a real process against the control plane, for tests and benchmarks."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from support.controlplane import ControlPlane
from support.gate import free_port
from support.kube import wait_for

TOLLPLANE = str(Path(sys.executable).with_name("tollplane"))


class OperatorProcess:
    """`tollplane operator` in a subprocess, logging to a file."""

    def __init__(
        self,
        control_plane: ControlPlane,
        namespace: str,
        log: Path,
        *,
        debounce: float = 0.2,
        extra: tuple[str, ...] = (),
    ):
        self.control_plane = control_plane
        self.namespace = namespace
        self.log = log
        self.debounce = debounce
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True, timeout: float = 30) -> None:
        """Start the operator; with ``wait``, return once it has published."""
        args = [
            TOLLPLANE,
            "operator",
            "--namespace",
            self.namespace,
            "--gateway",
            "infra/public",
            "--health-port",
            str(free_port()),
            "--debounce-seconds",
            str(self.debounce),
            "--resync-seconds",
            "600",
            *self.extra,
        ]
        previous = self.publishes()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, env=self.control_plane.env(), stdout=out, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait_published(previous=previous, timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def publishes(self) -> list[str]:
        """The operator's "published revision ..." log lines so far."""
        text = self.log.read_text() if self.log.exists() else ""
        return [line for line in text.splitlines() if "published revision" in line]

    def wait_quiet(self, seconds: float = 3, timeout: float = 60) -> None:
        """Wait until no publish happened for ``seconds``."""
        deadline = time.monotonic() + timeout
        count = len(self.publishes())
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < seconds:
            assert time.monotonic() < deadline, "the operator never settled"
            time.sleep(0.2)
            if len(self.publishes()) != count:
                count, quiet_since = len(self.publishes()), time.monotonic()

    def wait_published(self, previous: list[str], timeout: float = 30) -> str:
        """The first publish line after ``previous``."""

        def probe() -> str | None:
            assert self.proc is None or self.proc.poll() is None, self.log.read_text()[-3000:]
            lines = self.publishes()
            return lines[-1] if len(lines) > len(previous) else None

        return wait_for(probe, timeout=timeout, what="a publish")
