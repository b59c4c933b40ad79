"""The deployment examples of deploy/ (docs/SCALING.md), checked against what they name:

- deploy/grafana/juggler-instances.json parses, and every metric and label its PromQL uses
  exists in a real /metrics scrape of a running balancer (the build of tests/routes/scale.def);
- deploy/keepalived/: both configurations pass `keepalived -t` (when keepalived is installed;
  2.2.7, Debian 12's, ends a passing check with SIGTERM: keepalived issue #2587, fixed in
  2.2.8), and juggler-ready.sh says 0 while /ready answers 200 and fails once SIGTERM came;
- deploy/kubernetes/: the ConfigMap holds the same routes.def the image compiles (byte for
  byte: the init container compares their hashes), that routes.def compiles, and
  `kubectl kustomize` (no cluster needed) builds the manifests.

Run by `make test-scale` (no root needed for these).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import jtest  # noqa: E402
import promtext  # noqa: E402
from balancer import start_balancer  # noqa: E402

DEPLOY = os.path.join(REPO, "deploy")
HOST = "127.0.0.1"
ADMIN_READY = r"admin listening on http://[\d.]+:(\d+)"
PROMETHEUS_LABELS = {"job", "instance", "le"}  # added by Prometheus, or the histogram's own
PROMQL_WORDS = {"sum", "by", "rate", "histogram_quantile", "count", "min", "max", "avg", "without"}


def exprs(dashboard: dict) -> list:
    out = []
    for panel in dashboard["panels"]:
        out += [t["expr"] for t in panel.get("targets", [])]
    return out


class DeployTest(unittest.TestCase):
    # ------------------------------------------------------------ grafana, keepalived script

    def test_dashboard_and_ready_script_against_a_running_balancer(self):
        with open(os.path.join(DEPLOY, "grafana", "juggler-instances.json")) as f:
            dashboard = json.load(f)
        lb = start_balancer("scale", extra=["--admin", f"{HOST}:0", "--instance", "deploy-test"])
        try:
            admin = int(lb.wait_for_line(ADMIN_READY).group(1))
            status, _, body = jtest.http_request(admin, path="/metrics", host=HOST)
            self.assertEqual(status, 200)
            samples = promtext.parse(body.decode())
            self.check_dashboard(dashboard, samples)
            script = os.path.join(DEPLOY, "keepalived", "juggler-ready.sh")
            env = {**os.environ, "JUGGLER_ADMIN": f"{HOST}:{admin}"}
            self.assertEqual(subprocess.run([script], env=env, timeout=10).returncode, 0)
            lb.send_signal(signal.SIGTERM)  # /ready turns 503 at once; drain.delay keeps the process
            self.assertTrue(jtest.wait_until(
                lambda: subprocess.run([script], env=env, timeout=10).returncode != 0, 5), "still ready")
        finally:
            lb.stop()

    def check_dashboard(self, dashboard: dict, samples: dict):
        labels_of: dict = {}  # metric name -> label name -> the values seen
        for name, labels in samples:
            seen = labels_of.setdefault(name, {})
            for k, v in labels:
                seen.setdefault(k, set()).add(v)
        queries = exprs(dashboard)
        self.assertGreater(len(queries), 10)
        variables = [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
        used = set()
        for q in queries + variables:
            names = [m.group(1) for m in re.finditer(r"\b(juggler_[a-z0-9_]+)", q)]
            self.assertTrue(names, q)
            for m in re.finditer(r"\b(juggler_[a-z0-9_]+)\{([^}]*)\}", q):
                name, matchers = m.group(1), m.group(2)
                for label, op, value in re.findall(r'(\w+)\s*(=~|!=|!~|=)\s*"([^"]*)"', matchers):
                    if label in PROMETHEUS_LABELS:
                        continue
                    self.assertTrue(label in labels_of.get(name, {}), f"{name} has no label {label}: {q}")
                    if op == "=":
                        self.assertIn(value, labels_of[name][label], f"{name}{{{label}}} never is {value}: {q}")
            for name in names:
                self.assertTrue(name in labels_of, f"{name} is not in a /metrics scrape: {q}")
                used.add(name)
            known = set(PROMETHEUS_LABELS)
            for name in names:
                known |= set(labels_of[name])
            for group in re.findall(r"\bby \(([^)]*)\)", q):
                for label in (g.strip() for g in group.split(",")):
                    self.assertIn(label, known, f"by ({label}): no metric of the query has it: {q}")
        # What the issue asks the dashboard to show.
        for needed in ("juggler_route_requests_total", "juggler_pool_request_duration_seconds_bucket",
                       "juggler_server_up", "juggler_cache_requests_total", "juggler_ready"):
            self.assertIn(needed, used)

    # ------------------------------------------------------------ keepalived

    @unittest.skipUnless(shutil.which("keepalived"), "keepalived is not installed (tools/install-deps.sh scale)")
    def test_keepalived_configurations_pass_its_check(self):
        version = subprocess.run(["keepalived", "--version"], capture_output=True, text=True, timeout=10)
        terminated_ok = "v2.2.7 " in version.stdout + version.stderr

        def check(path):
            p = subprocess.run(["keepalived", "-t", "-f", path], capture_output=True, text=True, timeout=20)
            return p.returncode, (p.stdout + p.stderr).strip()

        for name in ("keepalived-lb1.conf", "keepalived-lb2.conf"):
            code, out = check(os.path.join(DEPLOY, "keepalived", name))
            self.assertEqual(out, "", f"{name}: {out}")
            self.assertIn(code, (0, -signal.SIGTERM) if terminated_ok else (0,), f"{name}: exit {code}")
        # The check does see a broken file (so a pass above means something); 2.2.7 prints
        # the error and still ends by SIGTERM, so its words are what counts.
        with tempfile.NamedTemporaryFile("w", suffix=".conf") as bad:
            with open(os.path.join(DEPLOY, "keepalived", "keepalived-lb1.conf")) as f:
                bad.write(f.read().replace("virtual_router_id 51", "virtual_router_id 300"))
            bad.flush()
            code, out = check(bad.name)
            self.assertIn("VRID '300' not valid", out)
            if not terminated_ok:
                self.assertNotEqual(code, 0)

    # ------------------------------------------------------------ kubernetes

    def test_configmap_holds_the_routes_the_image_compiles(self):
        k8s = os.path.join(DEPLOY, "kubernetes")
        with open(os.path.join(k8s, "configmap.yaml")) as f:
            block = f.read().split("  routes.def: |\n", 1)[1]
        lines = [line[4:] if line.startswith("    ") else line.strip() for line in block.split("\n")]
        held = "\n".join(lines).rstrip("\n") + "\n"
        with open(os.path.join(k8s, "routes.def")) as f:
            self.assertEqual(held, f.read(), "configmap.yaml and routes.def differ")
        with tempfile.TemporaryDirectory() as tmp:
            gen = subprocess.run([sys.executable, os.path.join(REPO, "codegen", "gen_distributer.py"),
                                  os.path.join(k8s, "routes.def"), "-o", os.path.join(tmp, "d.cpp")],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(gen.returncode, 0, gen.stderr)

    @unittest.skipUnless(shutil.which("kubectl"), "kubectl is not installed")
    def test_kustomize_builds_the_manifests(self):
        p = subprocess.run(["kubectl", "kustomize", os.path.join(DEPLOY, "kubernetes")], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        kinds = sorted(re.findall(r"^kind: (\w+)$", p.stdout, re.M))
        self.assertEqual(kinds, ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "Service"])
        for needed in ("path: /ready", "preStop:", "--instance=$(POD_NAME)", "name: juggler-routes"):
            self.assertIn(needed, p.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
