"""An independent, strict HTTP/1.1 request framing reader (RFC 9112), in plain Python.

The balancer and the testserver both parse with llhttp, so "the server read what the balancer
meant" compares llhttp with itself. This reader shares nothing with llhttp: the smuggling
table (test_smuggling.py) runs the exact bytes the balancer forwarded through it. Its own
tests are in test_framing.py; tests/fuzz/strict_framing.hpp is the same reader in C++ for
the fuzzers.

Framing only, and no leniency:
  request-line = method SP request-target SP HTTP-version CRLF
    method: a token; target: 1* octets that are not CTL, SP or DEL (its URI grammar is not
    framing and is not checked); version "HTTP/1." DIGIT. The one tolerance: words may be
    separated by a run of SP (RFC 9112 3 allows it; Juggler forwards the request line as
    received, row two_spaces_in_request_line). No HTAB/VT/FF/CR as separators.
  field-line = token ":" OWS *(VCHAR / obs-text / SP / HTAB) OWS CRLF (no obs-fold, no bare
    CR or LF, no NUL/CTL/DEL); the head ends at an empty line (CRLF).
  HTTP/1.1: exactly one Host.
  Transfer-Encoding: not on HTTP/1.0, never with Content-Length; over all its field lines,
    chunked exactly once and last (the names of codings before it are not framing: not
    checked).
  Content-Length: one field line, 1*DIGIT.
  chunked body (RFC 9112 7.1): 1*HEXDIG size, [ BWS ";" chunk-ext ] CRLF, data, CRLF; the
    last chunk, trailer field lines (as above), CRLF. The extension's bytes are
    HTAB/SP/VCHAR/obs-text; its name/value grammar is not framing and is not checked.
  Neither Transfer-Encoding nor Content-Length: no body.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

TCHAR = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\Z")
TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+\Z")
HEX = re.compile(rb"[0-9A-Fa-f]+")
OWS = b" \t"


class FramingError(ValueError):
    """The bytes are not a valid HTTP/1.1 request: `reason` at byte `offset`."""

    def __init__(self, reason: str, offset: int):
        super().__init__(f"{reason} at byte {offset}")
        self.reason = reason
        self.offset = offset


class Incomplete(Exception):
    """The bytes end before the message does (internal)."""


@dataclass
class Request:
    method: bytes
    target: bytes
    version: bytes
    headers: list = field(default_factory=list)  # [(name, value)] as bytes, in order
    body: bytes = b""  # decoded (chunk data joined)
    trailers: list = field(default_factory=list)
    chunked: bool = False
    content_length: Optional[int] = None
    start: int = 0  # offsets in the buffer: the message is data[start:end], its head ends at head_end
    head_end: int = 0
    end: int = 0

    def header(self, name: bytes) -> list:
        return [v for n, v in self.headers if n.lower() == name.lower()]


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    """The line at pos without its CRLF, and the offset after it. Bare CR or LF: FramingError."""
    lf = data.find(b"\n", pos)
    cr = data.find(b"\r", pos)
    if cr != -1 and (lf == -1 or cr < lf):
        if cr + 1 >= len(data):
            raise Incomplete
        if data[cr + 1:cr + 2] != b"\n":
            raise FramingError("CR not followed by LF", cr)
        return data[pos:cr], cr + 2
    if lf != -1:
        raise FramingError("bare LF", lf)
    raise Incomplete


def _field_line(line: bytes, offset: int) -> tuple[bytes, bytes]:
    if line[:1] in (b" ", b"\t"):
        raise FramingError("obs-fold or whitespace before a field name", offset)
    m = TCHAR.match(line)
    if not m:
        raise FramingError("a field name is not a token", offset)
    if line[m.end():m.end() + 1] != b":":
        raise FramingError("a field name is not a token (or whitespace before the colon)", offset + m.end())
    value = line[m.end() + 1:]
    if not FIELD_VALUE.match(value):
        raise FramingError("a byte not allowed in a field value", offset)
    return line[:m.end()], value.strip(OWS)


def _fields(data: bytes, pos: int) -> tuple[list, int]:
    """Field lines up to and including the empty line."""
    out = []
    while True:
        line, nxt = _line(data, pos)
        if line == b"":
            return out, nxt
        out.append(_field_line(line, pos))
        pos = nxt


def _chunk_ext(ext: bytes, offset: int) -> None:
    """What follows the chunk size on its line: nothing, or BWS ";" then field bytes (HTAB,
    SP, VCHAR, obs-text). Where the line ends is framing; the extension's name/value grammar
    is not, and is not checked (Juggler relays extensions it does not understand)."""
    if not ext:
        return
    rest = ext.lstrip(OWS)
    if not rest:
        raise FramingError("whitespace before the end of a chunk line", offset)
    if rest[:1] != b";":
        raise FramingError("chunk size not followed by ';' or CR LF", offset + len(ext) - len(rest))
    if not FIELD_VALUE.match(rest):
        raise FramingError("a byte not allowed in a chunk extension", offset)


def frame_request(data: bytes, start: int = 0) -> Optional[Request]:
    """The request at data[start:], or None when the bytes end before it does.

    Raises FramingError for anything RFC 9112 does not allow (see the module docstring)."""
    try:
        return _frame(data, start)
    except Incomplete:
        return None


def _frame(data: bytes, start: int) -> Request:
    line, pos = _line(data, start)
    m = re.match(rb"([^ ]*)( +)([^ ]*)( +)(.*)\Z", line, re.S)
    if not m:
        raise FramingError("a request line is three words separated by SP", start)
    method, target, version = m.group(1), m.group(3), m.group(5)
    if not TOKEN.match(method):
        raise FramingError("the method is not a token", start)
    if not TARGET.match(target):
        raise FramingError("empty or invalid request-target", start + m.start(3))
    if not re.match(rb"HTTP/1\.[0-9]\Z", version):
        raise FramingError("not HTTP/1.x", start + m.start(5))
    http10 = version == b"HTTP/1.0"
    headers, pos = _fields(data, pos)
    req = Request(method, target, version, headers, start=start, head_end=pos)
    hosts = req.header(b"host")
    cls = req.header(b"content-length")
    tes = req.header(b"transfer-encoding")
    if not http10 and len(hosts) != 1:
        raise FramingError("more than one Host" if hosts else "HTTP/1.1 without Host", start)
    if len(cls) > 1:
        raise FramingError("more than one Content-Length field line", start)
    if cls and not re.match(rb"[0-9]+\Z", cls[0]):
        raise FramingError("Content-Length is not 1*DIGIT", start)
    if tes:
        if http10:
            raise FramingError("Transfer-Encoding on HTTP/1.0", start)
        if cls:
            raise FramingError("Transfer-Encoding and Content-Length", start)
        codings = [c.strip(OWS) for v in tes for c in v.split(b",")]
        names = [c.split(b";")[0].strip(OWS) for c in codings if c]
        if not names:
            raise FramingError("empty Transfer-Encoding", start)
        chunked = [i for i, n in enumerate(names) if n.lower() == b"chunked"]
        if chunked != [len(names) - 1]:
            raise FramingError("chunked is not the final transfer coding (exactly once)", start)
        if b";" in [c for c in codings if c][-1]:
            raise FramingError("chunked with parameters", start)
        req.chunked = True
    if cls:
        req.content_length = int(cls[0])
        if len(data) - pos < req.content_length:
            raise Incomplete
        req.body = data[pos:pos + req.content_length]
        req.end = pos + req.content_length
        return req
    if not req.chunked:
        req.end = pos
        return req
    body = []
    while True:
        line, nxt = _line(data, pos)
        m = HEX.match(line)
        if not m:
            raise FramingError("chunk size is not 1*HEXDIG", pos)
        _chunk_ext(line[m.end():], pos + m.end())
        size = int(m.group(0), 16)
        pos = nxt
        if size == 0:
            break
        if len(data) - pos < size + 2:
            if len(data) - pos > size and data[pos + size:pos + size + 1] != b"\r":
                raise FramingError("chunk data not followed by CRLF", pos + size)
            raise Incomplete
        body.append(data[pos:pos + size])
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise FramingError("chunk data not followed by CRLF", pos + size)
        pos += size + 2
    req.trailers, pos = _fields(data, pos)
    req.body = b"".join(body)
    req.end = pos
    return req


def frame_requests(data: bytes) -> tuple[list, int]:
    """Every complete request in `data`, one after the other, and the offset where the
    complete ones end (a cut last request is left there). Raises FramingError."""
    out = []
    pos = 0
    while pos < len(data):
        req = frame_request(data, pos)
        if req is None:
            break
        out.append(req)
        pos = req.end
    return out, pos
