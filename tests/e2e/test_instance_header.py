"""`set instance.header NAME` (issue #17): every response the balancer relays or answers
from its cache carries one `NAME: INSTANCE` line, so a client behind an L4 front can tell
which instance answered; `--instance` renames the process at run time (one image, many
pods). The balancer built from tests/routes/instance_header.def (instance lb-b, header
X-Served-By) in front of a testserver on 127.0.129.2:6901. Off by default: test_ready.py
(ready.def has `set instance` and no header). Responses are read off raw sockets.
"""

from __future__ import annotations

import socket
import unittest

import jtest
from balancer import BalancerTestCase, balancer_path

HOST = "127.0.129.2"
LINE = ("X-Served-By", "lb-b")


def served_by(r: jtest.RawResponse) -> list:
    return [(k, v) for k, v in r.headers if k.lower() == "x-served-by"]


class InstanceHeaderTest(BalancerTestCase):
    def setUp(self):
        self.start_backends(HOST, (6901,))

    def exchange(self, port: int, requests: list) -> list:
        """Sends each (raw request, is HEAD) in turn on one kept-alive connection; the responses."""
        with socket.create_connection((HOST, port), timeout=30) as s:
            reader = s.makefile("rb")
            out = []
            for raw, head in requests:
                s.sendall(raw.encode())
                out.append(jtest.read_response(reader, head=head))
            return out

    def test_every_relayed_response_carries_the_line_once(self):
        lb = self.start_balancer("instance_header")
        get = "GET {} HTTP/1.1\r\nHost: x\r\n\r\n"
        # A head the relay would otherwise pass on untouched (/ping), a chunked stream,
        # a 404, HEAD, and HTTP/1.0 keep-alive (where Connection is added too).
        rs = self.exchange(lb.port, [
            (get.format("/ping"), False),
            (get.format("/bytes?n=300000&chunked=1"), False),
            (get.format("/status/404"), False),
            ("HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n", True),
            ("GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
        ])
        for r in rs:
            self.assertEqual(served_by(r), [LINE], r.headers)
            self.assertEqual(r.header("X-Server"), "6901")  # the backend's own lines are kept
        self.assertEqual(rs[0].body, b"pong\n")
        self.assertEqual(rs[1].body, jtest.pattern_bytes(300000))
        self.assertEqual(rs[2].status, 404)
        self.assertEqual(rs[4].header("Connection"), "keep-alive")

    def test_a_cache_hit_names_the_instance_that_answered(self):
        lb = self.start_balancer("instance_header")
        get = "GET /bytes?n=1000&header=Cache-Control:max-age%3D60 HTTP/1.1\r\nHost: cached.test\r\n\r\n"
        miss, hit = self.exchange(lb.port, [(get, False), (get, False)])
        self.assertEqual(miss.header("X-Cache"), "MISS")
        self.assertEqual(hit.header("X-Cache"), "HIT", hit.headers)
        self.assertEqual(hit.body, jtest.pattern_bytes(1000))
        self.assertEqual(served_by(miss), [LINE], miss.headers)
        # The stored head holds the server's lines only: the hit has this process's line, once.
        self.assertEqual(served_by(hit), [LINE], hit.headers)

    def test_instance_flag_renames_the_process_everywhere(self):
        lb = self.start_balancer("instance_header", extra=["--instance", "pod-7", "--admin", f"{HOST}:0"])
        r = self.exchange(lb.port, [("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", False)])[0]
        self.assertEqual(served_by(r), [("X-Served-By", "pod-7")], r.headers)
        self.assertRegex(lb.output(), r"Z juggler\[pod-7\] info: listening on http://")
        admin = int(lb.wait_for_line(r"admin listening on http://[\d.]+:(\d+)").group(1))
        _, _, metrics = jtest.http_request(admin, path="/metrics", host=HOST)
        self.assertRegex(metrics.decode(), r'juggler_build_info\{[^}]*instance="pod-7"\} 1')
        check = jtest.run_program([balancer_path("instance_header"), "--check", "--instance", "pod-7"])
        self.assertIn("instance pod-7", check.stdout)
        self.assertIn("instance.header X-Served-By", check.stdout)

    def test_a_bad_instance_name_stops_the_start(self):
        p = jtest.run_program([balancer_path("instance_header"), "--port", "0", "--instance", "pod/7"])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("--instance: 'pod/7' is not 1 to 64 letters, digits", p.stderr + p.stdout)


if __name__ == "__main__":
    unittest.main()
