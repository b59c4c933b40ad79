"""Shared helpers for Juggler's end-to-end tests (python3 standard library only).

Layers, each usable alone:
  * where things are:   SOURCE_DIR, BIN_DIR, binary(name)
  * ports:              free_port(), wait_for_port()
  * sanitizer reports:  assert_no_sanitizer_report(), run_program() -- subprocess.run for
                        our programs, raising on a sanitizer report in their output
  * processes:          ManagedProcess / start_process() -- a Popen that waited for its
                        "ready" line, keeps draining its output, and stops cleanly (its
                        output scanned for sanitizer reports whatever the signal)
  * the test backend:   start_testserver(), demo_root(n)
  * bodies:             PATTERN, pattern_bytes(), pattern_sha256()
  * HTTP on the wire:   http_request(), RawResponse / read_response(), raw_connection()
                        recv_exact(), recv_to_end() -- raw socket reads
  * unittest glue:      JugglerTestCase, whose start_* methods register the cleanup

Balancer helpers (start_balancer, ...) belong here too, built on start_process().
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
import unittest
from typing import Iterable, Optional, Sequence

# ---------------------------------------------------------------- where things are

SOURCE_DIR = os.environ.get("JUGGLER_SOURCE") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("JUGGLER_BIN") or os.path.join(SOURCE_DIR, "bin")
LOOPBACK = "127.0.0.1"


def binary(name: str) -> str:
    """Path of a built program in BIN_DIR; raises FileNotFoundError naming it if missing."""
    path = os.path.join(BIN_DIR, name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: build it first (make all), or set JUGGLER_BIN")
    return path


# ---------------------------------------------------------------- ports

def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago (bound with port 0, then released).

    Another process may take it before it is used: start_process() callers retry (see
    start_testserver) when the child reports the address in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Returns once a TCP connection to host:port succeeds; raises TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
            time.sleep(0.02)


def wait_refused(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> bool:
    """True once a connection to host:port is refused (the listener closed), False after
    `timeout`. A worker closes its listeners and drains in one step, so for a balancer
    whose one worker listens on the port this says its drain began."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                pass
        except ConnectionRefusedError:
            return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------- sanitizer reports

# What ASan, LSan, UBSan and TSan print (UBSan's "runtime error:" has no ERROR: line when it
# only warns). Under the ASan pass of the suite every output of our programs is scanned.
SANITIZER_REPORT = re.compile(r"ERROR: \w*Sanitizer|SUMMARY: \w*Sanitizer|runtime error:|WARNING: ThreadSanitizer")


def assert_no_sanitizer_report(name: str, *outputs) -> None:
    """Raises AssertionError (with the output) if any of `outputs` (str, bytes or None)
    holds a sanitizer report."""
    for output in outputs:
        if output is None:
            continue
        text = output.decode("utf-8", "replace") if isinstance(output, (bytes, bytearray)) else output
        if SANITIZER_REPORT.search(text):
            raise AssertionError(f"{name} reported a sanitizer error:\n{text}")


def run_program(argv: Sequence[str], timeout: float = 30.0, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for one of OUR programs (a balancer, the testserver; possibly behind a
    wrapper such as setpriv or prlimit) that is expected to exit by itself.

    Captures stdout and stderr (text, unless text=False is passed) and raises AssertionError
    if either holds a sanitizer report. The caller asserts the exact exit code.
    """
    kwargs.setdefault("text", True)
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs.setdefault("capture_output", True)
    argv = list(argv)
    result = subprocess.run(argv, timeout=timeout, **kwargs)
    assert_no_sanitizer_report(" ".join(argv), result.stdout, result.stderr)
    return result


# ---------------------------------------------------------------- processes

class ManagedProcess(subprocess.Popen):
    """A child process whose stdout+stderr are drained by a thread into `lines`.

    Draining matters: a child that logs to a pipe nobody reads blocks once the pipe is full.
    """

    def __init__(self, argv: Sequence[str], name: Optional[str] = None, env=None, cwd=None):
        super().__init__(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env, cwd=cwd, text=True, bufsize=1)
        self.name = name or os.path.basename(argv[0])
        self.argv = list(argv)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._drain, name=f"drain-{self.name}", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.stdout is not None
        for line in self.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """The first output line matching the regex `pattern` (searched, not anchored).

        Raises RuntimeError with the output so far if the process ends or time runs out.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                while seen < len(self.lines):
                    match = regex.search(self.lines[seen])
                    seen += 1
                    if match:
                        return match
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{self.name} did not print /{pattern}/ within {timeout}s:\n"
                                       + "\n".join(self.lines))
                self._cond.wait(left)
        try:
            code = self.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        raise RuntimeError(f"{self.name} exited ({code}) before printing /{pattern}/:\n" + self.output())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> Optional[int]:
        """Sends `sig`, waits up to `timeout`, then SIGKILLs. Returns the exit code. Idempotent.

        Whatever the signal, the whole output is then scanned: a sanitizer report in it raises
        AssertionError (so a process a test kills on purpose is checked too). The caller
        asserts the exit code it expects (check_stopped_cleanly: 0 after SIGTERM).
        """
        if self.poll() is None:
            try:
                self.send_signal(sig)
                self.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait()
        self._reader.join(timeout=5)
        if self.stdout:
            self.stdout.close()
        assert_no_sanitizer_report(self.name, self.output())
        return self.returncode


def start_process(argv: Sequence[str], ready: str, timeout: float = 10.0, **kwargs) -> ManagedProcess:
    """Starts argv and returns once it printed a line matching the regex `ready`.

    The caller owns the process and must stop() it (JugglerTestCase does that for you).
    """
    proc = ManagedProcess(argv, **kwargs)
    try:
        proc.wait_for_line(ready, timeout)
    except BaseException:
        proc.stop(signal.SIGKILL)
        raise
    return proc


# ---------------------------------------------------------------- the test backend

TESTSERVER_READY = r"^testserver listening on (\S+):(\d+)$"


def demo_root(n: int) -> str:
    """tools/testserver/test_server_root_<n>, whose index.html says "Juggler demo backend <n>"."""
    return os.path.join(SOURCE_DIR, "tools", "testserver", f"test_server_root_{n}")


def start_testserver(port: Optional[int] = None, root: Optional[str] = None, quiet: bool = True,
                     host: str = LOOPBACK, extra_args: Iterable[str] = (), attempts: int = 5) -> ManagedProcess:
    """Starts bin/testserver and returns it once it listens; `.port` is its port.

    Without `port`, picks a free one, and picks again if another process took it meanwhile.
    """
    last_error: Optional[Exception] = None
    for _ in range(1 if port is not None else attempts):
        use_port = port if port is not None else free_port(host)
        argv = [binary("testserver"), "--port", str(use_port), "--host", host]
        if root is not None:
            argv += ["--root", root]
        if quiet:
            argv.append("--quiet")
        argv += list(extra_args)
        try:
            proc = start_process(argv, TESTSERVER_READY, name=f"testserver:{use_port}")
        except RuntimeError as error:
            last_error = error
            if "address already in use" in str(error):
                continue
            raise
        proc.port = use_port
        proc.host = host
        return proc
    raise RuntimeError(f"could not start testserver: {last_error}")


# ---------------------------------------------------------------- bodies

PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """Bytes offset..offset+n of the /bytes body: byte i is PATTERN[i % 62]."""
    start = offset % len(PATTERN)
    reps = (start + n) // len(PATTERN) + 1
    return (PATTERN * reps)[start:start + n]


def pattern_sha256(n: int) -> str:
    """sha256 hex digest of pattern_bytes(n), computed in constant memory."""
    digest = hashlib.sha256()
    block = pattern_bytes(len(PATTERN) * 16384)  # a whole number of periods, ~1 MB
    full, rest = divmod(n, len(block))
    for _ in range(full):
        digest.update(block)
    digest.update(block[:rest])
    return digest.hexdigest()


# ---------------------------------------------------------------- HTTP on the wire

def http_request(port: int, method: str = "GET", path: str = "/", body: Optional[bytes] = None,
                 headers: Optional[dict] = None, host: str = LOOPBACK, timeout: float = 10.0):
    """One request on a fresh http.client connection. Returns (status, HTTPMessage, body bytes)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def raw_connection(port: int, host: str = LOOPBACK, timeout: float = 10.0) -> socket.socket:
    """A connected TCP socket, for bytes http.client would not send (pipelining, bad requests)."""
    return socket.create_connection((host, port), timeout=timeout)


class RawResponse:
    """A response read byte by byte off a socket: status, header list in order, body."""

    def __init__(self, version: str, status: int, reason: str, headers: list, body: bytes,
                 chunk_sizes: list):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers          # [(name, value)] as received
        self.body = body
        self.chunk_sizes = chunk_sizes  # sizes of the chunks if chunked, else []

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return default

    def __repr__(self) -> str:
        return f"RawResponse({self.status} {self.reason}, {len(self.body)} body bytes)"


def read_response(reader, head: bool = False) -> RawResponse:
    """Reads one response from a binary file object (sock.makefile("rb")).

    `head`: the request was HEAD, so no body follows whatever the headers say. A response
    without Content-Length or chunked encoding (and not bodiless) is read until EOF.
    Raises ConnectionError if the connection ends before a status line.
    """
    line = reader.readline()
    if not line:
        raise ConnectionError("connection closed before a response")
    version, status, reason = (line.decode("latin-1").rstrip("\r\n").split(" ", 2) + [""])[:3]
    headers = []
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").rstrip("\r\n").partition(":")
        headers.append((name, value.strip()))
    response = RawResponse(version, int(status), reason, headers, b"", [])
    code = response.status
    if head or code < 200 or code in (204, 304):
        return response
    if (response.header("Transfer-Encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size = int(reader.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while reader.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                break
            response.chunk_sizes.append(size)
            parts.append(reader.read(size))
            reader.readline()
        response.body = b"".join(parts)
    elif response.header("Content-Length") is not None:
        response.body = reader.read(int(response.header("Content-Length")))
    else:
        response.body = reader.read()
    return response


def read_responses(socks: Sequence[socket.socket], timeout: float = 60.0) -> list:
    """One response from each socket, read in parallel threads (each waited for at most
    `timeout`): the list in the sockets' order, None where none was read."""
    answers = [None] * len(socks)

    def read(i):
        answers[i] = read_response(socks[i].makefile("rb"))

    readers = [threading.Thread(target=read, args=(i,)) for i in range(len(socks))]
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=timeout)
    return answers


def recv_exact(s: socket.socket, n: int, have: bytes = b"") -> bytes:
    """`n` bytes from `s` (after the `have` already read), fewer only when the peer closed."""
    out = bytearray(have)
    while len(out) < n:
        chunk = s.recv(min(65536, n - len(out)))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def recv_to_end(s: socket.socket) -> bytes:
    """Everything `s` receives until the peer closes (or shuts down) its side."""
    out = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


def serve_connections(sock: socket.socket, handle) -> None:
    """Accepts on the listening `sock` in a daemon thread until it is closed; each connection
    goes to `handle(conn)` in a daemon thread of its own (raw TCP backends of the tests)."""
    def accept_loop():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept_loop, daemon=True).start()


def wait_until(predicate, timeout: float) -> bool:
    """Polls `predicate` (every 20 ms) until it holds or `timeout` seconds passed; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# ---------------------------------------------------------------- process facts and certificates

def access_log_lines(path: str, count: int = 1, pattern: Optional[str] = None, timeout: float = 5.0) -> list:
    """The balancer flushes its access log every 100 ms: polls `path` until it holds at least
    `count` lines (and, with `pattern`, one matching it) or `timeout` passed; returns the lines
    (the caller asserts on them)."""
    deadline = time.monotonic() + timeout
    lines: list = []
    while True:
        if os.path.exists(path):
            with open(path) as f:
                lines = f.read().splitlines()
        if len(lines) >= count and (pattern is None or any(re.search(pattern, line) for line in lines)):
            return lines
        if time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def rss_kb(pid: int) -> int:
    """Resident memory of process `pid` in kB (VmRSS), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def make_cert(directory: str, stem: str, cn: str, san: str) -> None:
    """A self-signed ECDSA P-256 certificate DIRECTORY/STEM.crt and its key STEM.key."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", os.path.join(directory, stem + ".key"), "-out", os.path.join(directory, stem + ".crt"),
         "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}"],
        check=True, capture_output=True)


# ---------------------------------------------------------------- unittest glue

def check_stopped_cleanly(proc: ManagedProcess) -> None:
    """Stops `proc` (SIGTERM) and raises AssertionError if it did not exit 0 or printed a
    sanitizer report, so the ASan pass of the suite catches leaks in our own programs."""
    code = proc.stop()  # raises on a sanitizer report
    if code != 0:
        raise AssertionError(f"{proc.name} exited {code} on SIGTERM:\n{proc.output()}")


class JugglerTestCase(unittest.TestCase):
    """Starts processes whose cleanup is registered at once, so a failing test leaks none.

    A process started here must exit 0 on SIGTERM without a sanitizer report, or the test
    errors in its cleanup.
    """

    def start_testserver(self, **kwargs) -> ManagedProcess:
        proc = start_testserver(**kwargs)
        self.addCleanup(check_stopped_cleanly, proc)
        return proc

    @classmethod
    def start_class_testserver(cls, **kwargs) -> ManagedProcess:
        """For setUpClass: one server shared by the class, stopped after its last test."""
        proc = start_testserver(**kwargs)
        cls.addClassCleanup(check_stopped_cleanly, proc)
        return proc
