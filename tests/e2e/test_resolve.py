"""Servers by name (tests/routes/resolve.def): `server NAME:PORT resolve` looked up with the
system resolver (getaddrinfo) at start-up and every second. The balancer runs in a private
mount namespace (`unshare -m`) whose /etc/hosts is a file of the test's, bind-mounted and
rewritten in place, so the real getaddrinfo path answers what the test says and the
machine's /etc/hosts is never touched. Skipped where a mount namespace cannot be made."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase, balancer_path

NAME = "backends.resolve.test"
LAZY = "later.resolve.test"
PORT = 6950  # every backend, on its own loopback address
A1, A2, A3 = "127.0.195.1", "127.0.195.2", "127.0.195.3"
ADMIN = "127.0.195.1"
INTERVAL = 1.0  # set resolve.interval 1s
# Within one interval after the hosts file changed, plus room for a loaded CI machine
# running under ASan (the bound is generous; what it proves is "soon", not "at once").
WITHIN = INTERVAL + 10.0
# Runs the balancer ($2...) with FILE ($0) over /etc/hosts, in a mount namespace of its own
# (private propagation: the host's /etc/hosts is untouched). exec keeps the balancer's pid.
WRAP = 'mount --bind "$0" /etc/hosts && exec "$@"'


def namespaces_work() -> str:
    """Empty when unshare -m with a bind-mounted /etc/hosts works here, else why not."""
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as f:
        f.write(f"{A1} probe.resolve.test\n")
        f.flush()
        try:
            p = subprocess.run(["unshare", "-m", "sh", "-c", WRAP, f.name, "getent", "hosts", "probe.resolve.test"],
                               capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare -m failed: {e}"
    if p.returncode != 0 or A1 not in p.stdout:
        return f"no private mount namespace here (unshare -m needs root/CAP_SYS_ADMIN): {p.stderr.strip()}"
    return ""


SKIP = namespaces_work()


def get(port: int, path: str, host: str = A1, timeout: float = 20.0) -> tuple[int, bytes]:
    """One request on a fresh connection (raw socket: no client retry hides the answer)."""
    with jtest.raw_connection(port, host=host, timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        r = jtest.read_response(s.makefile("rb"))
    return r.status, r.body


@unittest.skipIf(SKIP, SKIP)
class ResolveTest(BalancerTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)
        self.hosts = os.path.join(self.tmp, "hosts")

    def write_hosts(self, entries: dict[str, list[str]]) -> float:
        """Rewrites the hosts file in place (the bind mount follows the inode); returns when."""
        text = "127.0.0.1 localhost\n" + "".join(f"{a} {name}\n" for name, addrs in entries.items() for a in addrs)
        with open(self.hosts, "w") as f:  # truncate + one write: a lookup sees all or nothing
            f.write(text)
        return time.monotonic()

    def start_backend(self, addr: str):
        """A testserver on addr:PORT whose /who.txt names addr; it logs every request."""
        root = os.path.join(self.tmp, addr)
        os.makedirs(root)
        with open(os.path.join(root, "who.txt"), "w") as f:
            f.write(addr)
        return self.start_testserver(port=PORT, host=addr, root=root, quiet=False)

    def start_resolving(self, **kwargs):
        lb = self.start_balancer("resolve", extra=["--admin", f"{ADMIN}:0"],
                                 wrapper=["unshare", "-m", "sh", "-c", WRAP, self.hosts], **kwargs)
        lb.admin_port = int(lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))
        return lb

    def metrics(self, lb) -> str:
        status, body = get(lb.admin_port, "/metrics", host=ADMIN)
        self.assertEqual(status, 200)
        return body.decode()

    def slots(self, lb) -> dict[str, int]:
        """Address -> slot number of the enabled slots of NAME, from /metrics."""
        out = {}
        for m in re.finditer(r'juggler_server_slot_enabled\{pool="web",server="%s:%d",slot="(\d+)",'
                             r'address="([^"]*)"\} 1' % (re.escape(NAME), PORT), self.metrics(lb)):
            out[m.group(2)] = int(m.group(1))
        return out

    def idle_to_slot(self, lb, slot: int) -> int:
        m = re.search(r'juggler_upstream_connections\{pool="web",server="%s:%d",slot="%d",state="idle"\} (\d+)'
                      % (re.escape(NAME), PORT, slot), self.metrics(lb))
        self.assertIsNotNone(m, "no idle-connection row for the slot")
        return int(m.group(1))

    def who(self, lb, n: int) -> list[str]:
        answers = []
        for _ in range(n):
            status, body = get(lb.port, "/who.txt")
            self.assertEqual(status, 200, body)
            answers.append(body.decode())
        return answers

    def test_records_appear_and_vanish(self):
        b1, b2, b3 = (self.start_backend(a) for a in (A1, A2, A3))
        self.write_hosts({NAME: [A2, A1]})  # any order: slots are by address
        lb = self.start_resolving()
        self.assertEqual(set(self.who(lb, 12)), {A1, A2}, "both addresses of the name get traffic, nothing else")
        self.assertEqual(sorted(self.slots(lb)), [A1, A2])
        self.assertTrue(re.search(r'juggler_resolve_last_success_timestamp_seconds\{pool="web",server="%s:%d"\} [1-9]'
                                  % (re.escape(NAME), PORT), self.metrics(lb)), "no time of the last resolution")

        # A record appears: traffic reaches it within an interval.
        changed = self.write_hosts({NAME: [A1, A2, A3]})
        seen = jtest.wait_until(lambda: A3 in self.who(lb, 3), WITHIN)
        self.assertTrue(seen, f"{A3} got no request within {WITHIN}s of appearing in the answer")
        print(f"\n  new record served after {time.monotonic() - changed:.2f}s (interval {INTERVAL}s)")
        slot_of_a1 = self.slots(lb)[A1]
        self.who(lb, 6)  # kept-alive connections to each address, idle once answered
        # The worker parks a connection after the response's last write: a client can read the
        # answer and ask /metrics (the admin thread) before that, so wait for it.
        self.assertTrue(jtest.wait_until(lambda: self.idle_to_slot(lb, slot_of_a1) >= 1, 10),
                        f"no idle connection to {A1} after it answered")

        # A request in flight to A1 when A1 vanishes: it finishes; nothing new reaches A1.
        results: list = []
        def slow():
            try:
                results.append(get(lb.port, "/delay?ms=6000", timeout=60))
            except Exception as e:  # reported by the assertion below
                results.append(e)
        threads = [threading.Thread(target=slow) for _ in range(3)]  # round robin: one per address
        for t in threads:
            t.start()
        b1.wait_for_line(r"/delay\?ms=6000 .*wait|wait", timeout=20)
        self.write_hosts({NAME: [A2, A3]})
        self.assertTrue(jtest.wait_until(lambda: A1 not in self.slots(lb), WITHIN), f"{A1}'s slot was not emptied")
        self.assertTrue(any(t.is_alive() for t in threads), "the slow requests ended before the record vanished")
        before = b1.output().count("/who.txt")
        self.assertEqual(set(self.who(lb, 12)), {A2, A3}, f"a request reached {A1} after it left the answer")
        self.assertEqual(b1.output().count("/who.txt"), before)
        for t in threads:
            t.join(60)
        self.assertEqual([r if isinstance(r, Exception) else r[0] for r in results], [200, 200, 200],
                         "a request in flight to a vanished address must finish")
        # Its idle connections close (the worker's sweep, every 500 ms), none is reused.
        self.assertTrue(jtest.wait_until(lambda: self.idle_to_slot(lb, slot_of_a1) == 0, 10),
                        f"idle connections to {A1} stayed open after it vanished")
        self.assertEqual(b1.output().count("/who.txt"), before)

    def test_start_fails_when_the_name_does_not_resolve(self):
        self.write_hosts({})  # neither name: the balancer must refuse to start, naming the line
        try:
            p = jtest.run_program(["unshare", "-m", "sh", "-c", WRAP, self.hosts, balancer_path("resolve"),
                                   "--port", "0", "--workers", "1"], timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("the balancer started (it ran for 30 s) although a name does not resolve")
        self.assertNotEqual(p.returncode, 0)
        self.assertRegex(p.stdout + p.stderr, r"resolve\.def:7: server %s:%d resolve: %s does not resolve"
                         % (re.escape(NAME), PORT, re.escape(NAME)))

    def test_init_none_serves_503_until_it_resolves(self):
        self.start_backend(A3)
        self.write_hosts({NAME: [A3]})  # LAZY absent: init=none lets the balancer start
        lb = self.start_resolving()
        self.assertEqual(get(lb.port, "/lazy/x")[0], 503)
        lb.wait_for_line(r"resolve\.def:9: lookup of %s failed" % re.escape(LAZY))
        self.write_hosts({NAME: [A3], LAZY: [A3]})
        self.assertTrue(jtest.wait_until(lambda: get(lb.port, "/lazy/x")[0] == 404, WITHIN),
                        "the init=none pool still answers 503 after its name resolved")

        # The lookup fails from now on: the last answer stays, the failure is logged once.
        lb.wait_for_line(r"resolve\.def:9: %s resolves again" % re.escape(LAZY), timeout=WITHIN)
        outage = len(lb.lines)
        self.write_hosts({NAME: [A3]})
        self.assertTrue(jtest.wait_until(lambda: "lookup of %s failed" % LAZY in "\n".join(lb.lines[outage:]), WITHIN))
        failing = r'juggler_resolve_failing_lookups\{pool="lazy",server="%s:%d"\} ([3-9]|\d\d)' % (re.escape(LAZY), PORT)
        self.assertTrue(jtest.wait_until(lambda: re.search(failing, self.metrics(lb)), 6 * WITHIN),
                        "three lookups did not fail in a row")
        self.assertEqual(get(lb.port, "/lazy/x")[0], 404, "a failing lookup must keep the last answer")
        self.assertEqual("\n".join(lb.lines[outage:]).count("lookup of %s failed" % LAZY), 1,
                         "a failure is logged once per outage")
        self.write_hosts({NAME: [A3], LAZY: [A3]})
        self.assertTrue(jtest.wait_until(lambda: "%s resolves again" % LAZY in "\n".join(lb.lines[outage:]), WITHIN))


if __name__ == "__main__":
    unittest.main()
