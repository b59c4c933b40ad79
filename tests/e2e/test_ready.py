"""/ready on the admin listener and `set drain.delay` (issue #17): for an L4 front that
health-checks each instance. The balancer built from tests/routes/ready.def (drain.delay
3s, timeout.drain 10s) in front of a testserver on 127.0.129.1:6901.

SIGTERM: /ready answers 503 at once; the traffic listener still accepts and serves for
drain.delay (so a front that saw the 503 stops sending before anything is refused); then
it closes, a request in flight finishes, and the admin listener answers until the process
exits, 0.
"""

from __future__ import annotations

import signal
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.129.1"
DELAY_S = 3.0          # drain.delay in tests/routes/ready.def
ADMIN_READY = r"admin listening on http://[\d.]+:(\d+)"


def get(port: int, path: str, timeout: float = 10.0):
    """(status, body) of one GET to HOST:port on a new connection."""
    status, _, body = jtest.http_request(port, path=path, host=HOST, timeout=timeout)
    return status, body


def served(port: int) -> bool:
    """A new connection to the traffic listener is accepted and answered 200."""
    try:
        return get(port, "/ping", timeout=5)[0] == 200
    except OSError:
        return False


class ReadyTest(BalancerTestCase):
    def test_sigterm_turns_ready_503_then_closes_the_listener_after_the_delay(self):
        self.start_backends(HOST, (6901,))
        lb = self.start_balancer("ready", workers=2, extra=["--admin", f"{HOST}:0"])
        admin = int(lb.wait_for_line(ADMIN_READY).group(1))
        self.assertEqual(get(admin, "/ready"), (200, b"ready\n"))
        self.assertIn("juggler_ready 1\n", get(admin, "/metrics")[1].decode())
        self.assertTrue(served(lb.port))
        # A request still in flight when the listener closes (the testserver answers after
        # 6 s): the drain waits for it, and /ready must keep answering meanwhile.
        slow = {}
        worker = threading.Thread(target=lambda: slow.update(r=get(lb.port, "/delay?ms=6000", timeout=30)))
        worker.start()
        self.addCleanup(worker.join, 30)
        time.sleep(0.2)   # the slow request reached the balancer (its connection is accepted)

        lb.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        self.assertTrue(jtest.wait_until(lambda: get(admin, "/ready")[0] == 503, 2.0), "/ready still 200")
        self.assertEqual(get(admin, "/ready"), (503, b"draining\n"))
        self.assertIn("juggler_ready 0\n", get(admin, "/metrics")[1].decode())
        # Within drain.delay new connections are still served...
        self.assertTrue(served(lb.port), "refused within drain.delay")
        self.assertLess(time.monotonic() - t0, DELAY_S, "the checks above took longer than drain.delay")
        # ...and refused once it is over, not before.
        self.assertTrue(jtest.wait_until(lambda: not served(lb.port), DELAY_S + 5), "still accepting")
        self.assertGreaterEqual(time.monotonic() - t0, DELAY_S * 0.9, "the listener closed before drain.delay")
        # Draining (the slow request is in flight): the admin listener still answers.
        self.assertIsNone(lb.poll())
        self.assertEqual(get(admin, "/ready"), (503, b"draining\n"))
        worker.join(30)
        self.assertEqual(slow.get("r", (None,))[0], 200)
        self.assertEqual(lb.wait(timeout=10), 0)

    def test_instance_names_the_process_in_logs_metrics_and_check(self):
        self.start_backends(HOST, (6901,))
        lb = self.start_balancer("ready", extra=["--admin", f"{HOST}:0"])
        admin = int(lb.wait_for_line(ADMIN_READY).group(1))
        self.assertRegex(lb.output(), r"Z juggler\[lb-test\.1\] info: listening on http://")
        self.assertRegex(get(admin, "/metrics")[1].decode(), r'juggler_build_info\{[^}]*instance="lb-test\.1"\} 1')
        check = jtest.run_program([lb.argv[0], "--check"])
        self.assertIn("instance lb-test.1", check.stdout)
        self.assertIn("drain.delay 3000ms", check.stdout)
        # No `set instance.header`: responses do not name the instance (test_instance_header.py).
        status, headers, _ = jtest.http_request(lb.port, path="/ping", host=HOST)
        self.assertEqual(status, 200)
        self.assertNotIn("lb-test.1", str(headers))
        self.assertNotIn("instance", check.stdout.replace("instance lb-test.1", ""))


if __name__ == "__main__":
    unittest.main()
