"""Unit tests of strict_framing.py, the independent request framing reader the smuggling
table runs the forwarded bytes through (no processes, no network)."""

from __future__ import annotations

import unittest

from strict_framing import FramingError, frame_request, frame_requests

GET = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
POST = b"POST /e HTTP/1.1\r\nHost: h\r\n"
TE = b"Transfer-Encoding: chunked\r\n\r\n"

# Each of these must be a FramingError: smuggling framings and llhttp 8 leniencies.
BAD = {
    "cl_and_te": POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_twice_same": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl_list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl_plus": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl_hex": POST + b"Content-Length: 0x5\r\n\r\nhello",
    "te_not_last": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_twice": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_empty": POST + b"Transfer-Encoding: \r\n\r\n",
    "te_xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "space_before_colon": POST + b"Content-Length : 5\r\n\r\nhello",
    "space_in_name": POST + b"Content Length: 5\r\n\r\nhello",
    "obs_fold": POST + b"X: a\r\n b\r\n\r\n",
    "leading_space_name": POST + b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "bare_lf_head": b"GET / HTTP/1.1\nHost: h\n\n",
    "bare_cr_value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    "bare_cr_ends_head": b"GET / HTTP/1.1\r\nHost: h\r\n\rX",
    "nul_value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n",
    "del_value": b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n",
    "no_host": b"GET / HTTP/1.1\r\n\r\n",
    "two_hosts_same": b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    "http09": b"GET /\r\n\r\n",
    "http2": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
    "tab_in_request_line": b"GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n",
    "ff_in_target": b"GET /a\x0cb HTTP/1.1\r\nHost: h\r\n\r\n",
    "space_in_target": b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
    "chunk_data_without_crlf": POST + TE + b"5\r\nhelloXX0\r\n\r\n",
    "chunk_data_longer": POST + TE + b"3\r\nhello\r\n0\r\n\r\n",
    "chunk_size_0x": POST + TE + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_negative": POST + TE + b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_trailing_space": POST + TE + b"5 \r\nhello\r\n0\r\n\r\n",
    "chunk_ext_nul": POST + TE + b"5;a\x00\r\nhello\r\n0\r\n\r\n",
    "chunk_ext_lf_in_quotes": POST + TE + b"5;a=\"x\ny\"\r\nhello\r\n0\r\n\r\n",
    "chunk_bare_lf": POST + TE + b"5\nhello\n0\n\n",
    "chunk_last_bare_cr": POST + TE + b"5\r\nhello\r\n0\r\n\rX",
    "trailer_space_in_name": POST + TE + b"0\r\nFoo Bar: 1\r\n\r\n",
}


class StrictFraming(unittest.TestCase):
    def test_simple_get_ends_at_the_empty_line(self):
        req = frame_request(GET + b"GET /next HTTP/1.1\r\n")
        self.assertEqual((req.method, req.target, req.end, req.body), (b"GET", b"/", len(GET), b""))

    def test_http10_needs_no_host(self):
        self.assertEqual(frame_request(b"GET / HTTP/1.0\r\n\r\n").end, 18)

    def test_runs_of_sp_in_the_request_line(self):
        self.assertEqual(frame_request(b"GET  /x  HTTP/1.1\r\nHost: h\r\n\r\n").target, b"/x")

    def test_content_length_body(self):
        data = POST + b"Content-Length: 5\r\n\r\nhelloGET"
        req = frame_request(data)
        self.assertEqual((req.body, req.end, req.content_length), (b"hello", len(data) - 3, 5))

    def test_chunked_body_extensions_and_trailers(self):
        data = (POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n5 ; a = \"q\\\"x\" ;b\r\nhello\r\n"
                b"3;3xt=\r\n!!!\r\n0\r\nT: v\r\n\r\nX")
        req = frame_request(data)
        self.assertEqual((req.body, req.end, req.trailers), (b"hello!!!", len(data) - 1, [(b"T", b"v")]))
        self.assertTrue(req.chunked)

    def test_cut_messages_are_incomplete(self):
        data = POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        for cut in range(len(data)):
            self.assertIsNone(frame_request(data[:cut]), cut)

    def test_a_stream_of_requests(self):
        data = GET + POST + b"Content-Length: 2\r\n\r\nokGET /cut"
        reqs, end = frame_requests(data)
        self.assertEqual([r.target for r in reqs], [b"/", b"/e"])
        self.assertEqual(data[end:], b"GET /cut")

    def test_smuggling_framings_are_errors(self):
        for name, data in BAD.items():
            with self.subTest(name=name):
                with self.assertRaises(FramingError):
                    frame_request(data)

    def test_the_smuggled_request_after_a_body_is_a_second_request(self):
        inner = b"GET /headers?smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
        reqs, _ = frame_requests(POST + b"Content-Length: 0\r\n\r\n" + inner)
        self.assertEqual([r.target for r in reqs], [b"/e", b"/headers?smuggled"])


if __name__ == "__main__":
    unittest.main()
