"""Balancer helpers for the end-to-end tests: start a balancer built from a test routes
file (tests/routes/NAME.def → $JUGGLER_ROUTES_BIN/NAME) and the testservers it expects."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Optional, Sequence

import jtest

ROUTES_BIN = os.environ.get("JUGGLER_ROUTES_BIN") or os.path.join(jtest.SOURCE_DIR, "build", "routes-bin")
READY = r"listening on http://\S+:(\d+)"


def balancer_path(name: str) -> str:
    path = os.path.join(ROUTES_BIN, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: build the test balancers (make test), or set JUGGLER_ROUTES_BIN")
    return path


def start_balancer(name: str, workers: int = 1, access_log: str = "off",
                   extra: Sequence[str] = (), log_level: str = "info", cwd: Optional[str] = None,
                   env: Optional[dict] = None, wrapper: Sequence[str] = ()) -> jtest.ManagedProcess:
    """Starts the balancer compiled from tests/routes/<name>.def on a port the kernel picks
    (--port 0); `.port` is that port once it is listening."""
    argv = [*wrapper, balancer_path(name), "--port", "0", "--workers", str(workers), "--access-log", access_log,
            "--log-level", log_level, *extra]
    if env is not None:
        env = {**os.environ, **env}
    proc = jtest.start_process(argv, READY, name=f"juggler:{name}", cwd=cwd, env=env)
    match = re.search(READY, proc.output())
    proc.port = int(match.group(1))
    return proc


class BalancerTestCase(jtest.JugglerTestCase):
    """Adds balancers to JugglerTestCase: each is stopped with SIGTERM at cleanup and must
    exit 0 without a sanitizer report."""

    def start_balancer(self, name: str, **kwargs) -> jtest.ManagedProcess:
        proc = start_balancer(name, **kwargs)
        self.addCleanup(jtest.check_stopped_cleanly, proc)
        return proc

    def access_log_path(self) -> str:
        """A path for a balancer's --access-log, in a folder removed at cleanup."""
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        return os.path.join(tmp, "access.log")

    def start_backends(self, host: str, ports: Sequence[int], roots: Optional[Sequence[str]] = None):
        procs = []
        for i, port in enumerate(ports):
            procs.append(self.start_testserver(port=port, host=host,
                                               root=roots[i] if roots else None))
        return procs


class H2BalancerTestCase(BalancerTestCase):
    """One testserver and the balancer of tests/routes/<ROUTES>.def with its https listener
    on HOST (a certificate for it in the balancer's directory); `port` is that listener's.
    EXTRA: more balancer flags."""
    ROUTES, HOST, BACKEND_PORT = "", "", 0
    EXTRA: tuple = ()

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.dir = tempfile.mkdtemp()
        cls.addClassCleanup(shutil.rmtree, cls.dir)
        jtest.make_cert(cls.dir, "h2", "localhost", f"DNS:localhost,IP:{cls.HOST}")
        cls.ca = os.path.join(cls.dir, "h2.crt")
        cls.backend = cls.start_class_testserver(port=cls.BACKEND_PORT, host=cls.HOST, quiet=False)
        cls.lb = start_balancer(cls.ROUTES, extra=["--https-port", "0", *cls.EXTRA], cwd=cls.dir)
        cls.addClassCleanup(jtest.check_stopped_cleanly, cls.lb)
        cls.port = int(cls.lb.wait_for_line(rf"listening on https://{re.escape(cls.HOST)}:(\d+)").group(1))
