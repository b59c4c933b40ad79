#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets: tests/fuzz/corpus/{request,response}/.

Each file is 3 control bytes (see the targets' comments: read boundaries, HEAD,
Connection line, head limit) followed by the bytes a client or server sends.
Deterministic: run it again after editing the lists below.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

REQUESTS = {
    "get": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "get_query": b"GET /spread/x?a=1&b=2 HTTP/1.1\r\nHost: a.example:8080\r\nUser-Agent: t\r\n\r\n",
    "head_10": b"HEAD /index.html HTTP/1.0\r\n\r\n",
    "http10_keepalive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n",
    "post_cl": b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    "post_chunked": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
    "chunked_trailer": b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Forwarded-For: 6.6.6.6\r\nX-Trailer: 1\r\n\r\n",
    "pipelined": b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nPOST /c HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /d HTTP/1.1\r\nHost: a\r\n\r\n",
    "hop_by_hop": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret, Content-Length\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nUpgrade: h2c\r\nProxy-Connection: close\r\n\r\n",
    "xff": b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n",
    "absolute_form": b"GET http://other.test:80/other/x?q HTTP/1.1\r\nHost: nope\r\n\r\n",
    "host_route": b"GET /other/y HTTP/1.1\r\nHost: other.test\r\n\r\n",
    "header_route": b"PUT /hdr/z HTTP/1.1\r\nHost: a\r\nX-Pool: other\r\nContent-Length: 0\r\n\r\n",
    "expect": b"PUT /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "options_star": b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "leading_crlf": b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "split_method": b"PROPPATCH /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    # smuggling attempts
    "cl_te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "te_cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "cl_cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhelloGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    "te_obfuscated": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 3\r\n\r\nabc",
    "te_chunked_identity": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te_twice": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunk_overflow": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\nx\r\n0\r\n\r\n",
    "chunk_bare_lf": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
    "bare_lf_head": b"GET / HTTP/1.1\nHost: a\nX: y\n\n",
    "bare_cr": b"GET / HTTP/1.1\rHost: a\r\nX: y\rZ: w\r\n\r\n",
    "obs_fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n two\r\n\r\n",
    "space_colon": b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello",
    "nul_value": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "two_hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "cl_plus": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    "cl_overflow": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551617\r\n\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
}

RESPONSES = {
    "ok_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Server: 1\r\n\r\nhello",
    "ok_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    "until_close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close",
    "http10": b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "no_content": b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
    "not_modified": b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
    "continue_then_ok": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "early_hints": b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    "hop_by_hop": b"HTTP/1.1 200 OK\r\nConnection: X-Drop, close\r\nX-Drop: 1\r\nKeep-Alive: timeout=5\r\nTrailer: X-T\r\nUpgrade: h2c\r\nContent-Length: 0\r\n\r\n",
    "connection_keepalive": b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
    "cl_te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "te_gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nrawbytes",
    "obs_fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 0\r\n\r\n",
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "status_999": b"HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n",
    "no_reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    "cut_short_cl": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some",
    "cut_short_chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "chunk_ext": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d\"\r\nhello\r\n0\r\n\r\n",
    "head_response": b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n",
    "many_headers": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %d\r\n" % (i, i) for i in range(40)) + b"Content-Length: 0\r\n\r\n",
    "space_colon": b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    "xff_in_response": b"HTTP/1.1 200 OK\r\nX-Forwarded-For: 1.2.3.4\r\nContent-Length: 0\r\n\r\n",
}


def write(kind, table):
    folder = os.path.join(HERE, "corpus", kind)
    os.makedirs(folder, exist_ok=True)
    for name, payload in sorted(table.items()):
        # Variants: one read; 2 reads split early; 3 reads split in the head.
        for suffix, ctl in (("", b"\x00\x40\x80"), ("_split", b"\x02\x20\xa0")):
            if kind == "response" and name == "head_response":
                ctl = bytes([ctl[0] | 0x04]) + ctl[1:]  # the request was HEAD
            if kind == "response" and name == "connection_keepalive":
                ctl = bytes([ctl[0] | 0x08]) + ctl[1:]  # the proxy adds Connection: close
            if suffix and len(table) > 20 and name not in ("get", "pipelined", "post_chunked", "split_method",
                                                            "chunked_trailer", "ok_chunked", "continue_then_ok",
                                                            "ok_cl", "hop_by_hop"):
                continue
            with open(os.path.join(folder, name + suffix), "wb") as f:
                f.write(ctl + payload)


if __name__ == "__main__":
    write("request", REQUESTS)
    write("response", RESPONSES)
