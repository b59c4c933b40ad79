"""Binary upgrade end to end (`make upgrade`, `bin/app.out --upgrade`; tests/routes/upgrade.def):
a second copy of the balancer's binary takes the listening sockets over from the running one
through its control socket (SCM_RIGHTS), while keep-alive and new-connection clients send
requests; the old process stops accepting, finishes what it has and exits 0.

Backends: testservers on 127.0.191.2 (6901, 6902); the balancer on 127.0.191.1."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

import jtest
from balancer import READY, BalancerTestCase, balancer_path

LB_HOST, BACKENDS = "127.0.191.1", "127.0.191.2"


def get(sock, reader, path: str) -> jtest.RawResponse:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    return jtest.read_response(reader)


class UpgradeTest(BalancerTestCase):
    def test_new_binary_takes_the_sockets_over_without_a_failed_request(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        root = os.path.join(folder, "root")
        os.mkdir(root)
        with open(os.path.join(root, "x"), "w") as f:
            f.write("ok\n")
        servers = [self.start_testserver(port=p, host=BACKENDS, root=root, quiet=False) for p in (6901, 6902)]
        old = self.start_balancer("upgrade", workers=2, cwd=folder)
        port = old.port
        new_binary = os.path.join(folder, "app-new")  # "a second build": the same program, another file
        shutil.copy2(balancer_path("upgrade"), new_binary)

        failures, idle_closes, served = [], [], []  # served: (monotonic time, status)
        lock = threading.Lock()
        stop = threading.Event()
        max_requests, deadline = 3000, time.monotonic() + 120

        def answered(label: str, r: jtest.RawResponse) -> bool:
            """Records a whole 200; anything else is a failure (False)."""
            if r.status != 200 or r.body != b"ok\n":
                failures.append(f"{label}: {r.status} {r.body!r}")
                return False
            with lock:
                served.append((time.monotonic(), r.status))
            return True

        def new_connection_client():
            for _ in range(max_requests):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    with socket.create_connection((LB_HOST, port), timeout=10) as s, s.makefile("rb") as f:
                        s.sendall(b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                        r = jtest.read_response(f)
                except Exception as e:  # noqa: BLE001 - a refused or reset connection is a failure
                    failures.append(f"new connection: {e!r}")
                    return
                if not answered("new connection", r):
                    return
                time.sleep(0.01)

        def keep_alive_client():
            s = f = None
            reused = False
            for _ in range(max_requests):
                if stop.is_set() or time.monotonic() > deadline:
                    break
                try:
                    if s is None:
                        s = socket.create_connection((LB_HOST, port), timeout=10)
                        f, reused = s.makefile("rb"), False
                    r = get(s, f, "/x")
                except (ConnectionResetError, BrokenPipeError, ConnectionError) as e:
                    # The server closed the kept-alive connection as the request went out
                    # (a drain closes idle connections): nothing of an answer came, which
                    # RFC 9112 9.3.1 lets a client retry on a new connection. Anything
                    # else (a fresh connection refused or reset) is a failure.
                    if not reused or not isinstance(e, (ConnectionResetError, BrokenPipeError)) and \
                            str(e) != "connection closed before a response":
                        failures.append(f"keep-alive: {e!r}")
                        break
                    idle_closes.append(repr(e))
                    f.close()
                    s.close()
                    s = None
                    continue
                except Exception as e:  # noqa: BLE001 - anything else is a failure
                    failures.append(f"keep-alive: {e!r}")
                    break
                if not answered("keep-alive", r):
                    break
                reused = True
                if (r.header("Connection") or "").lower() == "close":  # a draining server's last answer
                    f.close()
                    s.close()
                    s = None
                time.sleep(0.01)
            if s is not None:
                f.close()
                s.close()

        threads = [threading.Thread(target=keep_alive_client) for _ in range(10)]
        threads += [threading.Thread(target=new_connection_client) for _ in range(10)]
        for t in threads:
            t.start()
        slow = {}

        def slow_request():  # in flight on the old process when it hands over
            with socket.create_connection((LB_HOST, port), timeout=60) as s, s.makefile("rb") as f:
                r = get(s, f, "/delay?ms=3000")
                slow["status"], slow["old alive"] = r.status, old.poll() is None
                slow["connection"] = r.header("Connection")

        slow_thread = threading.Thread(target=slow_request)
        try:
            time.sleep(0.5)  # the clients are under way
            slow_thread.start()
            self.assertTrue(jtest.wait_until(lambda: any("wait" in s.output() for s in servers), 10))
            new = jtest.start_process([new_binary, "--port", "0", "--workers", "2", "--access-log", "off", "--upgrade"],
                                      READY, name="juggler:upgrade-new", cwd=folder, timeout=30)
            self.addCleanup(jtest.check_stopped_cleanly, new)
            self.assertEqual(int(new.wait_for_line(READY).group(1)), port)  # the same sockets
            old.wait_for_line(r"upgrade: process \d+ serves; this one stops accepting and drains", timeout=10)
            new.wait_for_line(r"the old balancer \(pid \d+\) stopped accepting and drains", timeout=10)
            slow_thread.join(timeout=60)
            self.assertEqual(old.wait(timeout=60), 0)  # exits 0 once drained
            exited = time.monotonic()
            self.assertTrue(jtest.wait_until(lambda: sum(1 for t, _ in served if t > exited) >= 50, 30))
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        self.assertEqual(failures, [])
        self.assertEqual(slow.get("status"), 200)
        self.assertTrue(slow["old alive"])  # the old process waited for its request in flight
        self.assertEqual((slow["connection"] or "").lower(), "close")
        self.assertNotEqual(new.pid, old.pid)
        # Served by the new process: the old one is gone.
        self.assertGreaterEqual(sum(1 for t, _ in served if t > exited), 50)
        self.assertGreater(len(served), 200)
        new.wait_for_line(r"control socket juggler\.sock")  # the next make reload / upgrade reaches it
        print(f"\nupgrade: {len(served)} requests, {len(idle_closes)} kept-alive connections closed idle "
              f"by the draining process and retried", file=sys.stderr)

    def test_a_new_process_that_cannot_start_leaves_the_old_one_serving(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder)
        self.start_testserver(port=6901, host=BACKENDS)
        self.start_testserver(port=6902, host=BACKENDS)
        old = self.start_balancer("upgrade", workers=2, cwd=folder)
        # One socket per worker: three workers cannot take two sockets over.
        out = jtest.run_program([balancer_path("upgrade"), "--port", "0", "--workers", "3", "--upgrade"], cwd=folder,
                                timeout=60)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertIn("the running balancer has 2 workers, this one 3: start it with --workers 2", out.stdout + out.stderr)
        old.wait_for_line(r"upgrade: the new process went away before it served; this one goes on")
        self.assertIsNone(old.poll())
        with socket.create_connection((LB_HOST, old.port), timeout=10) as s, s.makefile("rb") as f:
            self.assertEqual(get(s, f, "/ping").status, 200)
        self.assertNotIn("drains", old.output())


if __name__ == "__main__":
    sys.exit(unittest.main())
