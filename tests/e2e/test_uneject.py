"""A passive ejection ends when the pool's active health check sees the server pass `rise`
times: a server killed under load and restarted a moment later gets traffic again within
about interval x rise, not after the whole fail_window (tests/routes/uneject.def:
max_fails=2 fail_window=10s, health interval=300ms rise=2)."""

from __future__ import annotations

import http.client
import signal
import threading
import time
import unittest

import jtest
from balancer import BalancerTestCase

HOST = "127.0.105.1"  # tests/routes/uneject.def
VICTIM = 6902
INTERVAL_S, RISE = 0.3, 2
BACK_WITHIN_S = INTERVAL_S * RISE + 2.4  # 3 s: slack for a loaded machine and sanitizers
FAIL_WINDOW_S = 10.0


class Load:
    """GETs /ping over kept-alive connections from a few threads until stopped, at most
    `limit` requests and `seconds` in all, each thread pausing `pause` seconds between
    requests (a few hundred a second: plenty to reach every server within tens of ms),
    recording (monotonic time, X-Server) per response."""

    def __init__(self, port: int, clients: int = 3, limit: int = 20000, seconds: float = 60.0,
                 pause: float = 0.005):
        self.port = port
        self.pause = pause
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.lock = threading.Lock()
        self.responses: list[tuple[float, str]] = []
        self.errors: list[str] = []
        self.sent = 0
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def _take(self) -> bool:
        with self.lock:
            if self.stopped.is_set() or self.sent >= self.limit or time.monotonic() > self.deadline:
                return False
            self.sent += 1
            return True

    def _client(self) -> None:
        conn = http.client.HTTPConnection(jtest.LOOPBACK, self.port, timeout=10)
        try:
            while self._take():
                try:
                    conn.request("GET", "/ping")
                    resp = conn.getresponse()
                    resp.read()
                    with self.lock:
                        if resp.status == 200:
                            self.responses.append((time.monotonic(), resp.headers.get("X-Server", "")))
                        else:
                            self.errors.append(f"status {resp.status}")
                    self.stopped.wait(self.pause)
                except (OSError, http.client.HTTPException) as error:
                    with self.lock:
                        self.errors.append(repr(error))
                    conn.close()
                    conn = http.client.HTTPConnection(jtest.LOOPBACK, self.port, timeout=10)
        finally:
            conn.close()

    def first_from(self, server: str, after: float) -> float | None:
        """When the first response from `server` received after `after` came, if any."""
        with self.lock:
            return next((t for t, s in self.responses if s == server and t > after), None)

    def wait_first_from(self, server: str, after: float, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.first_from(server, after)
            if seen is not None:
                return seen
            if not any(t.is_alive() for t in self.threads):
                break
            time.sleep(0.01)
        return self.first_from(server, after)

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=30)


class UnejectTest(BalancerTestCase):
    def kill_restart_and_time(self, wait_down: bool) -> None:
        """Kills the victim under load, waits for its ejection (and, with `wait_down`, for the
        active check to mark it DOWN as well), restarts it on the same port and asserts that
        it gets traffic again within BACK_WITHIN_S of the restart."""
        self.start_backends(HOST, (6901, 6903))
        victim = jtest.start_testserver(port=VICTIM, host=HOST)  # killed below: no clean-exit check
        self.addCleanup(victim.stop, signal.SIGKILL)
        lb = self.start_balancer("uneject", workers=2)
        load = Load(lb.port)
        self.addCleanup(load.stop)
        began = time.monotonic() - 1
        self.assertIsNotNone(load.wait_first_from(str(VICTIM), began, 10), "the victim never got traffic")

        victim.stop(signal.SIGKILL)
        ejected = lb.wait_for_line(rf"server {HOST}:{VICTIM} in pool web ejected for \d+ ms", timeout=10)
        ejected_at = time.monotonic()
        self.assertIn("ejected for 10000 ms", ejected.group(0))  # the first ejection: one fail_window
        if wait_down:  # fall=3 checks 300 ms apart
            lb.wait_for_line(rf"server {HOST}:{VICTIM} in pool web is DOWN", timeout=10)

        restarted = self.start_testserver(port=VICTIM, host=HOST)
        restarted_at = time.monotonic()
        # Up to the rest of the window and more, to say how long it took when it is too long.
        back = load.wait_first_from(str(VICTIM), restarted_at, FAIL_WINDOW_S + 5)
        load.stop()
        total, errors = len(load.responses), list(load.errors)
        self.assertIsNotNone(back, f"{VICTIM} got no traffic for {FAIL_WINDOW_S + 5:.0f} s after its restart "
                                   f"({total} responses, errors: {errors[:5]})")
        took = back - restarted_at
        print(f"\nuneject: {VICTIM} ejected, restarted {restarted_at - ejected_at:.2f} s later, "
              f"traffic again {took:.2f} s after the restart ({total} responses)", flush=True)
        self.assertLess(took, BACK_WITHIN_S, f"{VICTIM} sat out {took:.1f} s of the {FAIL_WINDOW_S:.0f} s window "
                                             f"although it answered its health checks")
        lb.wait_for_line(rf"server {HOST}:{VICTIM} in pool web back after passing {RISE} checks while ejected",
                         timeout=5)
        # Killing it cost no request: GETs on a refused connection go to another server.
        self.assertEqual(errors, [])
        restarted.stop()

    def test_a_server_restarted_at_once_is_back_after_rise_checks_not_after_the_window(self):
        self.kill_restart_and_time(wait_down=False)

    def test_a_server_restarted_after_going_down_is_back_after_rise_checks_not_after_the_window(self):
        self.kill_restart_and_time(wait_down=True)


if __name__ == "__main__":
    unittest.main()
