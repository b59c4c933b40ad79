"""HTTP/2 attacks beyond test_h2.py's (Rapid Reset, CONTINUATION, HPACK bomb, SETTINGS/PING
floods): server-side resets provoked by the client ("MadeYouReset", CVE-2025-8671) and the
stream-id protocol errors, each sent by tools/h2attacks.py -- the runner the HTTP/2 table of
docs/SECURITY.md was measured with, so the table and these assertions run the same frames.
The balancer is built from tests/routes/h2attack.def (the default h2.glitches), a testserver
on 127.0.210.1:6921 logs a line per request."""

from __future__ import annotations

import os
import subprocess
import sys
import unittest

import jtest
from balancer import H2BalancerTestCase

sys.path.insert(0, os.path.join(jtest.SOURCE_DIR, "tools"))
import h2attacks  # noqa: E402

HOST = "127.0.210.1"
GLITCH_BUDGET = 100  # the default `set h2.glitches`, which tests/routes/h2attack.def keeps
PROTOCOL_ERROR, STREAM_CLOSED, ENHANCE_YOUR_CALM = 1, 5, 11


class H2AttacksTest(H2BalancerTestCase):
    ROUTES, HOST, BACKEND_PORT = "h2attack", HOST, 6921

    def served(self, marker: str) -> int:
        """Requests naming `marker` the testserver logged (a line each: METHOD TARGET STATUS)."""
        return sum(1 for ln in list(self.backend.lines) if marker in ln)

    def attack(self, name: str, n: int | None = None, wait: float = 30.0) -> dict:
        r = h2attacks.run(name, HOST, self.port, backend_log=self.served, n=n, wait=wait, cafile=self.ca)
        r["text"] = f"{name}: {h2attacks.describe(r)}, {r['backend']} forwarded, {r['sent']} sent"
        return r

    def assert_goaway(self, r: dict, *codes: int) -> None:
        self.assertIsNotNone(r["goaway"], r["text"])
        self.assertIn(r["goaway"][0], codes, r["text"])

    def assert_others_served(self) -> None:
        out = subprocess.run(["curl", "-s", "--http2", "--cacert", self.ca, "--resolve", f"localhost:{self.port}:{HOST}",
                              "--max-time", "30", f"https://localhost:{self.port}/ping"],
                             capture_output=True, timeout=60)
        self.assertEqual(out.stdout, b"pong\n", out.stderr)

    # ------------------------------------------------------------ MadeYouReset

    def test_made_you_reset_server_resets_count_in_the_budget(self):
        # Each request goes with a WINDOW_UPDATE that overflows its window: nghttp2 resets
        # the stream (FLOW_CONTROL_ERROR). The resets count in the budget (at most that many
        # requests could reach the server), and a stream refused so is cut at once, before
        # its request goes out (both frames come in one read).
        r = self.attack("made_you_reset")
        self.assert_goaway(r, ENHANCE_YOUR_CALM)
        self.assertLessEqual(r["backend"], 2, r["text"])
        self.assert_others_served()

    def test_a_stream_reset_for_its_frames_counts_once(self):
        # The refused frame, its RST_STREAM and the stream's close are one offence (nghttp2
        # reports a bad header block twice, and closes the stream after): 60 such streams
        # (and the client's SETTINGS) stay within the budget of 100, and the connection with
        # them. Counted twice, the GOAWAY came after 50.
        for name in ("made_you_reset", "made_you_reset_field"):
            r = self.attack(name, n=GLITCH_BUDGET * 6 // 10, wait=2)
            self.assertIsNone(r["goaway"], r["text"])
            self.assertFalse(r["eof"] or r["broken"], r["text"])
            self.assertEqual(r["sent"], GLITCH_BUDGET * 6 // 10, r["text"])

    def test_made_you_reset_by_malformed_requests(self):
        # HEADERS with a connection-specific field: reset before anything is forwarded.
        r = self.attack("made_you_reset_field")
        self.assert_goaway(r, ENHANCE_YOUR_CALM)
        self.assertEqual(r["backend"], 0, r["text"])
        self.assert_others_served()

    def test_stream_errors_nghttp2_takes_for_connection_errors(self):
        # The other MadeYouReset frames end the connection at the first: nghttp2 treats them
        # as connection errors (RFC 9113 allows it for any stream error).
        for name, code in (("made_you_reset_zero_increment", PROTOCOL_ERROR),
                           ("made_you_reset_priority", PROTOCOL_ERROR),
                           ("made_you_reset_data", STREAM_CLOSED)):
            with self.subTest(name):
                r = self.attack(name, n=50)
                self.assert_goaway(r, code)
                self.assertLessEqual(r["backend"], 1, r["text"])
        self.assert_others_served()

    # ------------------------------------------------------------ stream ids

    def test_headers_on_a_closed_stream_is_a_connection_error(self):
        # Stream 1 answered, then HEADERS on stream 1 again: STREAM_CLOSED (RFC 9113 5.1),
        # the second request never forwarded.
        r = self.attack("stream_id_reuse")
        self.assertEqual(r["status"].get(1), ["200"], r["text"])
        self.assert_goaway(r, STREAM_CLOSED, PROTOCOL_ERROR)
        self.assertEqual(r["backend"], 1, r["text"])

    def test_even_stream_id_from_the_client_is_a_protocol_error(self):
        r = self.attack("stream_id_even")
        self.assert_goaway(r, PROTOCOL_ERROR)
        self.assertEqual(r["backend"], 0, r["text"])

    def test_decreasing_stream_ids_are_never_forwarded_and_counted(self):
        # nghttp2 ignores HEADERS on an id below the last (it cannot tell a client's
        # trailers crossing our RST_STREAM from a lie): one is dropped, the connection goes
        # on; a flood of them is counted in the budget.
        r = self.attack("stream_id_decreasing", n=1, wait=2)
        self.assertIsNone(r["goaway"], r["text"])
        self.assertEqual(r["status"].get(3), ["200"], r["text"])
        self.assertNotIn(1, r["status"], r["text"])
        self.assertEqual(r["backend"], 1, r["text"])
        r = self.attack("stream_id_decreasing", n=GLITCH_BUDGET * 3)
        self.assert_goaway(r, ENHANCE_YOUR_CALM)
        self.assertEqual(r["backend"], 1, r["text"])  # the stream with the highest id only
        self.assert_others_served()


if __name__ == "__main__":
    unittest.main()
