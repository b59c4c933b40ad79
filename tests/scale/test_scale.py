"""Several Juggler instances behind one L4 front, on one machine, in network namespaces
(issue #17; `make test-scale`, docs/SCALING.md). Needs root (or CAP_SYS_ADMIN + CAP_NET_ADMIN)
and iproute2 and HAProxy; skipped, saying why, where a namespace cannot be made.

    client 10.77.0.10 ── front 10.77.0.2 (HAProxy, mode tcp, send-proxy-v2,
                                          httpchk GET /ready on :9090, inter 500ms fall 2)
                           ├─ lb1 10.77.0.21:8080 ┐ the same build of tests/routes/scale.def
                           └─ lb2 10.77.0.22:8080 ┘ (proxy_protocol; consistent_hash X-User)
                                 be1 10.77.0.31:6901, be2 .32:6902, be3 .33:6903 (testservers)

Every node is a namespace with one veth into a bridge that lives in a namespace of its own:
the subnet exists only inside them, nothing is added to the host's network. All of it (the
processes, then the namespaces) is torn down at the end, on failure, on SIGINT/SIGTERM and at
the run's deadline too. Asserted, in order:
  1. a key (X-User) reaches the same backend through either instance, for 1,000 keys;
  2. the backends see the client's address (PROXY v2 → X-Forwarded-For) through both;
  3. lb1 drained by SIGTERM during a client loop: 0 failed requests (the front sees /ready
     turn 503 and stops sending before drain.delay ends and the listener closes);
  4. lb2 killed (SIGKILL) during a client loop: failures only within the front's detection
     time (fall x inter + a margin), then none;
  5. a response stored through lb1 is a HIT through lb2 (the shared Redis cache);
  6. a name (`server NAME:PORT resolve`) gaining a record gets traffic on it within one
     resolve.interval, and a removed record gets none after it, without a failed request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import jtest  # noqa: E402
from balancer import balancer_path  # noqa: E402

SUBNET = "10.77.0"
HOSTS = {"front": 2, "client": 10, "lb1": 21, "lb2": 22, "be1": 31, "be2": 32, "be3": 33}
BACKENDS = {"be1": 6901, "be2": 6902, "be3": 6903}
FRONT = f"{SUBNET}.2:80"
INTER_S, FALL, RISE = 0.5, 2, 2   # the front's check of each instance's /ready
MARGIN_S = 1.5                    # beyond fall x inter: a check in flight, a loaded machine
DRAIN_DELAY_S = 3.0               # tests/routes/scale.def `set drain.delay`
KEYS = 1000
DEADLINE_S = 150                  # the whole run, teardown included

# A feature the build lacks: its test skips with the reason, its nodes are not made
# (empty since the redis and dns branches were merged; kept for the next such bullet).
PENDING: dict = {}
if "redis" not in PENDING:
    HOSTS["redis"] = 40
NAMED = "backends.scale.test"  # scale.def's resolve server, port 6904, in the instances' /etc/hosts
NAMED_PORT = 6904
RESOLVE_INTERVAL_S = 1.0       # scale.def `set resolve.interval`

HAPROXY_CFG = """\
global
    maxconn 4000
    stats socket {sock} mode 600 level admin
    log stdout format raw local0 notice

defaults
    mode tcp
    log global
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout check 1s
    # No retry and no redispatch: the client sees what the health check leaves to it.
    retries 0

frontend scale
    bind {front}
    default_backend instances

backend instances
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server check port 9090 inter {inter_ms}ms fall {fall} rise {rise} send-proxy-v2
    server lb1 {lb1}:8080
    server lb2 {lb2}:8080
"""


def addr(node: str) -> str:
    return f"{SUBNET}.{HOSTS[node]}"


def run(argv: list, timeout: float = 15.0, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


class Deadline(Exception):
    pass


class Topology:
    """The namespaces, their links and the processes in them; down() undoes all of it."""

    PREFIX = "jscale"

    def __init__(self):
        self.tag = f"{self.PREFIX}{os.getpid()}"
        self.namespaces: list[str] = []
        self.procs: dict[str, jtest.ManagedProcess] = {}
        self.tmp = tempfile.mkdtemp(prefix="juggler-scale-")

    def ns(self, node: str) -> str:
        return f"{self.tag}-{node}"

    @classmethod
    def remove_stale(cls) -> None:
        """Namespaces a run that was SIGKILLed left behind (its pid is gone)."""
        listing = run(["ip", "netns", "list"], check=False).stdout
        for name in re.findall(rf"^({cls.PREFIX}(\d+)-\S+)", listing, re.M):
            if not os.path.exists(f"/proc/{name[1]}"):
                run(["ip", "netns", "del", name[0]], check=False)

    def add_ns(self, node: str) -> str:
        name = self.ns(node)
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def up(self, nodes) -> None:
        bridge = self.add_ns("br")
        run(["ip", "-n", bridge, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", bridge, "link", "set", "br0", "up"])
        for node in nodes:
            name = self.add_ns(node)
            port = f"v-{node}"
            run(["ip", "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name])
            run(["ip", "-n", bridge, "link", "set", port, "master", "br0", "up"])
            run(["ip", "-n", name, "addr", "add", f"{addr(node)}/24", "dev", "eth0"])
            run(["ip", "-n", name, "link", "set", "eth0", "up"])

    def spawn(self, key: str, node: str, argv: list, ready: str = None, timeout: float = 20.0):
        full = ["ip", "netns", "exec", self.ns(node), *argv]
        if ready is None:
            proc = jtest.ManagedProcess(full, name=key)
        else:
            proc = jtest.start_process(full, ready, timeout=timeout, name=key)
        self.procs[key] = proc
        return proc

    def down(self) -> None:
        # Every process told first, so the instances' drain.delay runs once, not once each.
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for key, proc in list(self.procs.items()):
            try:
                proc.stop(signal.SIGKILL if key.startswith("client") else signal.SIGTERM, timeout=5)
            except Exception as e:  # noqa: BLE001 - teardown goes on whatever one process did
                print(f"teardown: {key}: {e}", file=sys.stderr)
        for name in reversed(self.namespaces):
            run(["ip", "netns", "del", name], check=False)
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)


def namespaces_unavailable() -> str:
    """Why a namespace cannot be made here; empty when it can."""
    if not shutil.which("ip"):
        return "iproute2 (ip) is not installed"
    probe = f"{Topology.PREFIX}{os.getpid()}-probe"
    try:
        p = run(["ip", "netns", "add", probe], check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ip netns add: {e}"
    if p.returncode != 0:
        return f"ip netns add failed (root or CAP_SYS_ADMIN needed): {p.stderr.strip()}"
    run(["ip", "netns", "del", probe], check=False)
    return ""


class ScaleTest(unittest.TestCase):
    topo: Topology = None
    measured: dict = {}      # printed at the end: the numbers docs/SCALING.md quotes
    measured_raw: dict = {}  # the keys run, shared by tests 1 and 2

    # ------------------------------------------------------------ the topology

    @classmethod
    def setUpClass(cls):
        why = namespaces_unavailable()
        if why:
            raise unittest.SkipTest(f"network namespaces unavailable: {why}")
        if not shutil.which("haproxy"):
            raise RuntimeError("haproxy is not installed (tools/install-deps.sh scale installs it)")
        cls.balancer = balancer_path("scale")
        cls.testserver = jtest.binary("testserver")
        Topology.remove_stale()
        cls.topo = Topology()
        try:
            cls.start_all()
        except BaseException:
            cls.topo.down()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.topo:
            cls.topo.down()
        for k, v in cls.measured.items():
            print(f"measured: {k}: {v}")

    @classmethod
    def start_all(cls):
        topo = cls.topo
        topo.up(HOSTS)
        for n, (be, port) in enumerate(BACKENDS.items(), 1):
            topo.spawn(be, be, [cls.testserver, "--host", addr(be), "--port", str(port), "--quiet"],
                       jtest.TESTSERVER_READY)
            if "dns" not in PENDING:  # the named pool's servers: their page says which one
                topo.spawn(f"{be}-named", be, [cls.testserver, "--host", addr(be), "--port", str(NAMED_PORT),
                                               "--root", jtest.demo_root(n), "--quiet"], jtest.TESTSERVER_READY)
        if "redis" not in PENDING:
            topo.spawn("redis", "redis", ["redis-server", "--bind", addr("redis"), "--port", "6379", "--save", "",
                                          "--appendonly", "no", "--protected-mode", "no"], r"Ready to accept connections")
        cls.hosts = os.path.join(topo.tmp, "hosts")
        cls.write_hosts(["be1", "be2"])
        for lb in ("lb1", "lb2"):
            cls.start_instance(lb)
        cfg = os.path.join(topo.tmp, "haproxy.cfg")
        cls.stats_sock = os.path.join(topo.tmp, "haproxy.sock")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CFG.format(sock=cls.stats_sock, front=FRONT, inter_ms=int(INTER_S * 1000),
                                       fall=FALL, rise=RISE, lb1=addr("lb1"), lb2=addr("lb2")))
        run(["haproxy", "-c", "-q", "-f", cfg])
        topo.spawn("front", "front", ["haproxy", "-db", "-f", cfg])
        cls.wait_state("lb1", "UP", 15)
        cls.wait_state("lb2", "UP", 15)

    @classmethod
    def start_instance(cls, lb: str):
        argv = [cls.balancer, "--instance", lb]
        if "dns" not in PENDING:
            # The instance's /etc/hosts is the test's file, in a mount namespace of its own
            # (as tests/e2e/test_resolve.py does); exec keeps the balancer's pid for signals.
            argv = ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', cls.hosts, *argv]
        cls.topo.spawn(lb, lb, argv, r"admin listening on http://")

    @classmethod
    def write_hosts(cls, backends: list) -> None:
        """The records of NAMED: rewritten in place (a bind mount follows the inode), one write."""
        with open(cls.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(f"{addr(be)} {NAMED}\n" for be in backends))

    @classmethod
    def states(cls) -> dict:
        """The front's view of each instance (`show stat`: UP, DOWN, UP 1/2...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(cls.stats_sock)
            s.sendall(b"show stat\n")
            text = jtest.recv_to_end(s).decode()
        lines = text.strip().splitlines()
        cols = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(cols, line.split(",")))
            if row.get("pxname") == "instances" and row.get("svname") in ("lb1", "lb2"):
                out[row["svname"]] = row["status"]
        return out

    @classmethod
    def when_state(cls, lb: str, state: str, timeout: float):
        """Polls the front until it calls `lb` `state` (exactly): the time it saw it, or None."""
        def seen():
            try:
                return cls.states().get(lb) == state
            except OSError:
                return False
        return time.monotonic() if jtest.wait_until(seen, timeout) else None

    @classmethod
    def wait_state(cls, lb: str, state: str, timeout: float) -> float:
        t = cls.when_state(lb, state, timeout)
        if t is None:
            raise AssertionError(f"the front did not see {lb} {state} within {timeout}s: {cls.states()}\n"
                                 + cls.topo.procs["front"].output())
        return t

    def client(self, *args, timeout: float = 60.0) -> dict:
        """client.py in the client namespace, to the end; its JSON."""
        p = run(["ip", "netns", "exec", self.topo.ns("client"), sys.executable, os.path.join(HERE, "client.py"),
                 *map(str, args)], timeout=timeout)
        return json.loads(p.stdout)

    def loop_during(self, seconds: float, act, host: str = "scale.test", path: str = "/ping") -> list:
        """A client loop of `seconds`; `act()` runs once the loop's first answer came back
        and a second of traffic has passed. Returns the loop's [t, ok, instance, detail]."""
        name = f"client-{len(self.topo.procs)}"
        proc = self.topo.spawn(name, "client", [sys.executable, "-u", os.path.join(HERE, "client.py"), "loop",
                                                FRONT, str(seconds), "20000", host, path])
        proc.wait_for_line(r"^loop: first answer", timeout=15)
        time.sleep(1.0)  # traffic before the event: not a synchronisation, the loop's own clock decides
        act()
        code = proc.wait(timeout=seconds + 30)
        proc.stop()
        self.assertEqual(code, 0, proc.output())
        return json.loads(proc.output().strip().splitlines()[-1])["results"]

    # ------------------------------------------------------------ 1, 2: agree

    def keys_result(self) -> dict:
        if "keys" not in ScaleTest.measured_raw:
            t0 = time.monotonic()
            ScaleTest.measured_raw["keys"] = self.client("keys", FRONT, KEYS, timeout=120)
            ScaleTest.measured["keys"] = f"{KEYS} keys x 2 instances in {time.monotonic() - t0:.1f}s"
        return ScaleTest.measured_raw["keys"]

    def test_1_a_key_reaches_the_same_backend_through_either_instance(self):
        by = self.keys_result()["by"]
        self.assertEqual(sorted(by), ["lb1", "lb2"])
        self.assertEqual(len(by["lb1"]), KEYS)
        differ = [k for k in by["lb1"] if by["lb1"][k] != by["lb2"].get(k)]
        self.assertEqual(differ[:10], [], f"{len(differ)} of {KEYS} keys went to another backend through lb2")
        spread = {port: list(by["lb1"].values()).count(port) for port in sorted(set(by["lb1"].values()))}
        ScaleTest.measured["spread"] = spread
        self.assertEqual(sorted(spread), ["6901", "6902", "6903"], spread)
        self.assertGreater(min(spread.values()), KEYS // 6, spread)  # spread, not all on one

    def test_2_backends_see_the_client_address_through_both(self):
        xff = self.keys_result()["xff"]
        self.assertEqual(xff, {"lb1": [addr("client")], "lb2": [addr("client")]})

    # ------------------------------------------------------------ 3: drain

    def test_3_sigterm_drains_an_instance_without_a_failed_request(self):
        lb1 = self.topo.procs["lb1"]
        marks = {}

        def term():
            marks["term"] = time.monotonic()
            lb1.send_signal(signal.SIGTERM)
            marks["down"] = self.when_state("lb1", "DOWN", DRAIN_DELAY_S + 5)

        results = self.loop_during(1.0 + DRAIN_DELAY_S + 3.0, term)
        self.assertEqual(lb1.wait(timeout=20), 0, lb1.output())
        lb1.stop()
        failed = [r for r in results if not r[1]]
        drained_by_lb1 = sum(1 for r in results if r[0] >= marks["term"] and r[2] == "lb1")
        down = marks["down"] - marks["term"] if marks["down"] else None
        ScaleTest.measured["drain"] = (f"{len(results)} requests, {len(failed)} failed; front saw lb1 DOWN "
                                       f"{down if down is None else round(down, 2)}s after SIGTERM (drain.delay "
                                       f"{DRAIN_DELAY_S:.0f}s); lb1 answered {drained_by_lb1} after SIGTERM")
        self.assertEqual(failed[:5], [], f"{len(failed)} failed of {len(results)}")
        self.assertIsNotNone(down, "the front never saw /ready turn 503")
        self.assertLess(down, DRAIN_DELAY_S, "the front stopped after the listener closed")
        self.assertGreater(drained_by_lb1, 0, "lb1 answered nothing after SIGTERM: the drain was not exercised")
        self.assertTrue(any(r[0] > marks["down"] + 1 for r in results), "the loop ended before the drain did")
        self.assertTrue(all(r[2] == "lb2" for r in results if r[0] > marks["down"] + 0.1))
        # Back for the next test: a new process, seen UP by the front.
        self.start_instance("lb1")
        self.wait_state("lb1", "UP", 15)

    # ------------------------------------------------------------ 4: crash

    def test_4_sigkill_fails_requests_only_until_the_front_notices(self):
        lb2 = self.topo.procs["lb2"]
        marks = {}
        window = FALL * INTER_S + MARGIN_S

        def kill():
            marks["kill"] = time.monotonic()
            lb2.send_signal(signal.SIGKILL)
            marks["down"] = self.when_state("lb2", "DOWN", window + 5)

        results = self.loop_during(1.0 + window + 3.0, kill)
        lb2.wait(timeout=10)
        failed = [r for r in results if not r[1]]
        late = [r for r in failed if r[0] > marks["kill"] + window]
        early = [r for r in failed if r[0] < marks["kill"] - 0.5]
        last = max((r[0] - marks["kill"] for r in failed), default=0.0)
        down = marks["down"] - marks["kill"] if marks["down"] else None
        ScaleTest.measured["kill"] = (f"{len(results)} requests, {len(failed)} failed, the last "
                                      f"{last:.2f}s after SIGKILL; front saw lb2 DOWN "
                                      f"{down if down is None else round(down, 2)}s after (bound {window:.1f}s)")
        self.assertEqual(early, [], "failures before the kill")
        self.assertEqual(late[:5], [], f"{len(late)} failures later than {window}s after the kill")
        after = [r for r in results if r[0] > marks["kill"] + window]
        self.assertGreater(len(after), 20, "the loop ended too soon after the window")
        self.assertTrue(all(r[2] == "lb1" for r in after))
        lb2.stop()
        # Back for the next tests.
        self.start_instance("lb2")
        self.wait_state("lb2", "UP", 15)

    # ------------------------------------------------------------ 5, 6: pending

    def test_5_a_response_cached_through_lb1_is_a_hit_through_lb2(self):
        if "redis" in PENDING:
            self.skipTest(PENDING["redis"])
        # A redis-server in its own namespace (10.77.0.40); scale.def's `set cache redis` and
        # its cache.test route. Stored through lb1 (MISS), a HIT through lb2, answered by lb2.
        out = self.client("cache", FRONT, f"/bytes?n=2000&t={os.getpid()}&header=Cache-Control:max-age%3D60",
                          f"{addr('redis')}:6379")
        self.assertEqual(out["lb1"][-1], "MISS", out)
        self.assertEqual((out["lb2"], out["served_by"]), ("HIT", "lb2"), out)

    def test_6_a_dns_record_added_gets_traffic_and_a_removed_one_drains(self):
        if "dns" in PENDING:
            self.skipTest(PENDING["dns"])
        # scale.def's named pool (`server backends.scale.test:6904 resolve`) starts with be1 and
        # be2 in the instances' /etc/hosts; be3 is added, then be1 removed, during a loop.
        bound = RESOLVE_INTERVAL_S + MARGIN_S
        marks = {}

        def change():
            marks["add"] = time.monotonic()
            self.write_hosts(["be1", "be2", "be3"])
            time.sleep(bound + 1.0)  # the loop's traffic meanwhile is what is measured
            marks["remove"] = time.monotonic()
            self.write_hosts(["be2", "be3"])

        results = self.loop_during(1.0 + 2 * (bound + 1.0) + 1.0, change, host="named.test", path="/")
        failed = [r for r in results if not r[1]]
        self.assertEqual(failed[:5], [], f"{len(failed)} failed of {len(results)}")
        new = [r[0] for r in results if r[3] == "backend 3"]
        self.assertTrue(new, "the added record never got traffic")
        self.assertGreater(min(new), marks["add"])
        self.assertLess(min(new) - marks["add"], bound, "the added record got traffic later than an interval")
        after = [r for r in results if r[0] > marks["remove"] + bound]
        self.assertGreater(len(after), 20, "the loop ended too soon after the removal")
        self.assertEqual([r for r in after if r[3] == "backend 1"][:5], [], "the removed record still gets traffic")
        ScaleTest.measured["dns"] = (f"added record answered {min(new) - marks['add']:.2f}s after the change; "
                                     f"{len(results)} requests, {len(failed)} failed")


def main() -> int:
    # A bounded run: the deadline raises in the main thread, and teardown runs (finally).
    def expire(*_):
        raise Deadline(f"test_scale.py ran past its {DEADLINE_S}s deadline")

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, expire)
    signal.signal(signal.SIGTERM, stop)
    signal.alarm(DEADLINE_S)
    try:
        prog = unittest.main(exit=False, verbosity=2)
    finally:
        if ScaleTest.topo and ScaleTest.topo.namespaces:
            ScaleTest.topo.down()
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
