"""routes.def parser and validator (stdlib only).

parse(text) turns the text of a routes file into a Config and a list of
errors (line, message). It never stops at the first error: every statement is
checked, then the whole file (pools that exist, listeners that overlap, routes
that can never match). The emitter (emit_cpp.py) only ever sees a Config that
produced no error.

Every error is raised as DefError at exactly one place per message, so the
tests can check that each message has an error file (tests/codegen/errors/).
"""

from __future__ import annotations

import ipaddress
import re
import sys
from dataclasses import dataclass, field

# ---------------------------------------------------------------- vocabulary

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
# juggler::Method enumerators, in enum order; "Other" is matched only by `*`.
METHOD_ENUM = {m: m.capitalize() for m in METHODS}
ALL_METHOD_ENUMS = [METHOD_ENUM[m] for m in METHODS] + ["Other"]

STRATEGIES = {
    "round_robin": "RoundRobin",
    "least_conn": "LeastConn",
    "random": "Random",
    "consistent_hash": "ConsistentHash",
    "least_time": "LeastTime",
}
REDIRECT_CODES = (301, 302, 303, 307, 308)
# Response encodings: route `compress=` names -> RouteDef::compress bits (kCompress*).
ENCODINGS = {"gzip": 1, "br": 2, "zstd": 4}
# `set compress.level.NAME N`: the range each encoder takes, and its default.
COMPRESS_LEVELS = {"gzip": (1, 9, 5), "br": (0, 11, 4), "zstd": (1, 19, 3)}
RESERVED_POOL_NAMES = ("redirect", "respond", "https")
# The Upgrade tokens a proxied route tunnels without `upgrade=`.
DEFAULT_UPGRADES = ("websocket",)

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
HOSTNAME_RE = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
DURATION_RE = re.compile(r"([0-9]+)(ms|s|m|h)")
SIZE_RE = re.compile(r"([0-9]+)([kmg]?)")
INT_RE = re.compile(r"[0-9]+")

DURATION_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}

U16 = (1 << 16) - 1
U32 = (1 << 32) - 1
U64 = (1 << 64) - 1
# `set cache redis`: the default max_object (larger responses stream through
# uncached), the largest a Redis value may be (its proto-max-bulk-len less our
# record's header), the longest deadline, and what a key prefix may hold.
REDIS_MAX_OBJECT = 512 << 10
REDIS_MAX_VALUE = 256 << 20
REDIS_MAX_DEADLINE_MS = 10_000
REDIS_PREFIX_RE = re.compile(r"[A-Za-z0-9:._-]{1,64}")

# RouteDef::cache_ttl_ms of a route with `cache` and no TTL: the server's freshness, unbounded.
CACHE_NO_BOUND = U32
MAX_ROUTES = U16
MAX_POOLS = (1 << 15) - 1  # RouteDef::pool and ListenerDef::pool are int16
MAX_SERVERS = U16
DEFAULT_SLOTS = 4  # `server NAME:PORT resolve` without slots=
MAX_SLOTS = 255  # ServerDef::slot is a uint8
MAX_CERTS = U16


class DefError(Exception):
    """One error in one statement: the message without the FILE:LINE prefix."""

    # Set by the tests to learn which raise sites fired (the caller's line).
    trace: list[int] | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message
        if DefError.trace is not None:
            DefError.trace.append(sys._getframe(1).f_lineno)


def ascii_lower(s: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in s)


# ---------------------------------------------------------------- model


@dataclass
class Endpoint:
    host: str  # as stored in the table: no brackets, `*` made 0.0.0.0
    port: int
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: a DNS name
    written: str  # as written, e.g. "[::1]:80"

    @property
    def authority(self) -> str:
        if self.ip is not None and self.ip.version == 6:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass
class Listener:
    line: int
    kind: str  # http | https | tcp | tls
    endpoint: Endpoint
    certs: list[tuple[str, str]] = field(default_factory=list)
    pool_name: str | None = None
    pool_index: int = -1
    first_cert: int = 0
    proxy_protocol: bool = False  # a PROXY v1/v2 header comes first on each connection
    sni: bool = False  # tcp: the pool comes from the ClientHello's server_name (route sni)
    h2: bool = True  # https: ALPN offers h2 (then http/1.1); h2=off offers http/1.1 alone


@dataclass
class Server:
    line: int
    endpoint: Endpoint
    weight: int
    backup: bool
    pool_index: int
    slot: int = 0  # a slot of a `resolve` line (1..slots); 0: a numeric server


@dataclass
class Resolve:
    """`server NAME:PORT resolve [slots=N] [init=none]`: its slots are Servers."""
    line: int
    name: str
    port: int
    pool_index: int
    slots: int
    init_none: bool
    first: Server  # its first slot (first_server is that Server's number once numbered)


@dataclass
class Health:
    line: int
    method: str
    path: str
    interval_ms: int = 10_000
    timeout_ms: int = 2_000
    rise: int = 2
    fall: int = 3
    expect_lo: int = 200
    expect_hi: int = 399
    tcp: bool = False  # `health tcp`: a connect is the whole check


@dataclass
class Pool:
    line: int
    name: str
    index: int
    strategy: str = "round_robin"
    key: str = "None"  # HashKey enumerator
    key_name: str = ""
    slow_start_ms: int = 0
    max_fails: int = 3
    fail_window_ms: int = 10_000
    send_proxy: str = "Off"  # SendProxy enumerator: a PROXY header first on each server connection
    servers: list[Server] = field(default_factory=list)
    health: Health | None = None
    first_server: int = 0
    broken: bool = False  # its own line had an error: no follow-up complaints
    server_at: dict = field(default_factory=dict)  # (ip, port) -> Server
    server_lines: int = 0  # server statements, valid or not: a broken one is not "no servers"


@dataclass
class Route:
    line: int
    index: int
    text: str
    methods: list[str] | None  # None = `*`
    pattern: str
    literal: str  # pattern without the trailing `*`
    prefix: bool
    host: str | None = None  # lower case; for a wildcard the suffix ".example.com"
    host_suffix: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)  # (lower name, value)
    action: str = "Proxy"  # Action enumerator
    pool_name: str | None = None
    pool_index: int = -1
    status: int = 0
    retries: int = 2
    compress: int = 0  # ENCODINGS bits
    cache_ms: int = 0  # 0 = not cached; CACHE_NO_BOUND: `cache` without a TTL
    upgrades: list[str] = field(default_factory=lambda: list(DEFAULT_UPGRADES))  # lower case; [] = none

    @property
    def conditional(self) -> bool:
        # `-> redirect https` applies to plain-HTTP requests only: over TLS the
        # request falls through to the next route (no redirect loop).
        return self.host is not None or bool(self.headers) or self.action == "RedirectHttps"

    def matches_path(self, path: str) -> bool:
        """The reference semantics of a pattern (the emitter compiles the same)."""
        lit = self.literal
        if not self.prefix:
            return path == lit
        return path.startswith(lit) or (lit.endswith("/") and path == lit[:-1])

    def matches(self, method: str, path: str, host: str, headers: list[tuple[str, str]]) -> bool:
        """Reference semantics of a whole route; `method` is a METHODS name or "OTHER"."""
        if self.methods is not None and method not in self.methods:
            return False
        if not self.matches_path(path):
            return False
        if self.host is not None:
            h = ascii_lower(host)
            if self.host_suffix:
                if not (len(h) > len(self.host) and h.endswith(self.host)):
                    return False
            elif h != self.host:
                return False
        for name, value in self.headers:
            got = next((v for n, v in headers if ascii_lower(n) == name), "")
            if got != value:
                return False
        return True


@dataclass
class SniRoute:
    """`route sni NAME|*.DOMAIN|* -> POOL`."""
    line: int
    name: str  # lower case; for a wildcard the suffix ".example.com"; "*" the default
    suffix: bool
    pool_name: str
    pool_index: int = -1


@dataclass
class Settings:
    workers: int = 0
    access_log: str = "Stdout"  # LogTarget enumerator
    access_log_path: str = ""
    access_log_format: str = "Combined"  # AccessLogFormat enumerator
    error_pages: str = ""
    connect_timeout_ms: int = 2_000
    client_header_timeout_ms: int = 10_000
    client_idle_timeout_ms: int = 60_000
    upstream_timeout_ms: int = 30_000
    drain_timeout_ms: int = 30_000
    tunnel_idle_timeout_ms: int = 3_600_000
    header_bytes: int = 16 << 10
    header_count: int = 100
    uri_bytes: int = 8 << 10
    body_bytes: int = 100 << 20
    requests_per_connection: int = 0
    connections_per_worker: int = 0
    cache: str = "Off"  # CacheKind enumerator
    cache_bytes: int = 64 << 20
    cache_address: str = ""
    cache_max_object: int = 1 << 20  # memory; Redis: REDIS_MAX_OBJECT unless given
    cache_redis_prefix: str = ""
    cache_redis_deadline_ms: int = 50
    cache_purge_from: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    admin_address: str = ""
    admin_endpoint: Endpoint | None = None
    admin_token_file: str = ""
    compress_levels: dict = field(default_factory=lambda: {k: v[2] for k, v in COMPRESS_LEVELS.items()})
    drain_delay_ms: int = 0
    instance: str = ""
    instance_header: str = ""  # the header's name (the C++ Settings.instance_header is the whole line)
    resolve_interval_ms: int = 10_000
    # HTTP/2: None = the default of juggler/route.hpp (written only when set)
    h2_max_streams: int | None = None
    h2_glitches: int | None = None
    h2_hpack_table: int | None = None
    h2_max_frame: int | None = None


@dataclass
class Config:
    settings: Settings = field(default_factory=Settings)
    listeners: list[Listener] = field(default_factory=list)
    pools: list[Pool] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    sni_routes: list[SniRoute] = field(default_factory=list)
    resolves: list[Resolve] = field(default_factory=list)  # `server NAME:PORT resolve` lines, in file order

    @property
    def servers(self) -> list[Server]:
        return [s for p in self.pools for s in p.servers]

    @property
    def certs(self) -> list[tuple[str, str]]:
        return [c for lst in self.listeners for c in lst.certs]


# ---------------------------------------------------------------- values


def parse_int(what: str, tok: str, lo: int, hi: int) -> int:
    if not INT_RE.fullmatch(tok) or not lo <= int(tok) <= hi:
        raise DefError(f"bad {what} '{tok}' (expected an integer {lo}..{hi})")
    return int(tok)


def parse_duration(what: str, tok: str, allow_zero: bool = False) -> int:
    """Milliseconds of `250ms`, `10s`, `2m`, `1h`."""
    m = DURATION_RE.fullmatch(tok)
    if not m:
        raise DefError(f"bad duration '{tok}' for {what} (expected e.g. 250ms, 10s, 2m, 1h)")
    ms = int(m.group(1)) * DURATION_UNITS[m.group(2)]
    if ms == 0 and not allow_zero:
        raise DefError(f"{what} must be longer than 0 (got '{tok}')")
    if ms > U32:
        raise DefError(f"duration '{tok}' for {what} is too long (at most 1193h)")
    return ms


def parse_size(what: str, tok: str, lo: int, hi: int) -> int:
    """Bytes of `512`, `16k`, `8m`, `1g` (1024-based)."""
    m = SIZE_RE.fullmatch(tok)
    if not m:
        raise DefError(f"bad size '{tok}' for {what} (expected e.g. 512, 16k, 8m, 1g)")
    n = int(m.group(1)) * SIZE_UNITS[m.group(2)]
    if not lo <= n <= hi:
        raise DefError(f"size '{tok}' for {what} is out of range (expected {lo}..{hi} bytes)")
    return n


def parse_cidr(tok: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """ADDR/BITS or a single ADDR (a /32 or /128), host bits zero."""
    try:
        net = ipaddress.ip_network(tok, strict=True)
    except ValueError as e:
        hint = " (host bits set)" if "host bits" in str(e) else ""
        raise DefError(f"bad network '{tok}' for cache.purge_from{hint} (expected e.g. 127.0.0.1, 10.0.0.0/8, "
                       f"::1, fd00::/8)") from None
    return net


def parse_endpoint(tok: str, role: str) -> Endpoint:
    """ADDR:PORT. role: "listen" (`*` allowed), "server" (a concrete address),
    "redis" (a DNS name allowed as well)."""
    expected = {
        "listen": "IPv4:PORT, [IPv6]:PORT or *:PORT, e.g. 0.0.0.0:80, [::]:443",
        "server": "IPv4:PORT or [IPv6]:PORT, e.g. 127.0.0.1:6901; a DNS name needs `server NAME:PORT resolve`",
        "redis": "HOST:PORT, e.g. 127.0.0.1:6379",
    }[role]
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    if tok.startswith("["):
        close = tok.find("]:")
        inner, port_s = (tok[1:close], tok[close + 2 :]) if close > 0 else ("", "")
        try:
            ip = ipaddress.IPv6Address(inner) if "%" not in inner else None
        except ValueError:
            ip = None
        if ip is None:
            raise DefError(f"bad address '{tok}' (expected {expected})")
        host = inner
    else:
        host, sep, port_s = tok.rpartition(":")
        if not sep or not host or ":" in host:
            raise DefError(f"bad address '{tok}' (expected {expected})")
        if host == "*" and role == "listen":
            host = "0.0.0.0"
        try:
            ip = ipaddress.IPv4Address(host)
        except ValueError:
            if role != "redis" or not HOSTNAME_RE.fullmatch(host):
                raise DefError(f"bad address '{tok}' (expected {expected})") from None
    if not INT_RE.fullmatch(port_s) or not 1 <= int(port_s) <= 65535:
        raise DefError(f"bad port in '{tok}' (expected 1..65535)")
    if role == "server" and ip is not None and ip.is_unspecified:
        raise DefError(f"server address '{tok}' is not a concrete address (0.0.0.0 and :: are only for listen)")
    return Endpoint(host=host, port=int(port_s), ip=ip, written=tok)


def endpoints_overlap(a: Endpoint, b: Endpoint) -> bool:
    if a.port != b.port or a.ip is None or b.ip is None or a.ip.version != b.ip.version:
        return False
    return a.ip == b.ip or a.ip.is_unspecified or b.ip.is_unspecified


def take_flag(rest: list[str], name: str) -> bool:
    """Removes the flag `name` from `rest`: whether it was there (twice: an error)."""
    if name not in rest:
        return False
    rest.remove(name)
    if name in rest:
        raise DefError(f"option '{name}' given twice")
    return True


def take_value(rest: list[str], name: str) -> str | None:
    """Removes `name=VALUE` from `rest`: VALUE, or None when absent (twice: an error)."""
    found = [t for t in rest if t.startswith(name + "=")]
    if len(found) > 1:
        raise DefError(f"option '{name}' given twice")
    if not found:
        return None
    rest.remove(found[0])
    return found[0][len(name) + 1:]


class Options:
    """The `name=value` and bare-flag options after a statement's fixed words."""

    def __init__(self, where: str, tokens: list[str], valued: list[str], flags: list[str] = ()):
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()
        self.order: list[tuple[str, str]] = []
        known = ", ".join([f"{v}=" for v in valued if v not in flags] +
                          [f"{f}[=...]" if f in valued else f for f in flags]) or "none"
        for tok in tokens:
            name, eq, value = tok.partition("=")
            if name not in valued and name not in flags:
                raise DefError(f"unknown option '{tok}' for {where} (expected: {known})")
            if name in self.values or name in self.flags:
                raise DefError(f"option '{name}' given twice")
            if name in flags and not (eq and name in valued):
                if eq:
                    raise DefError(f"option '{name}' takes no value (got '{tok}')")
                self.flags.add(name)
            else:
                if not value:
                    raise DefError(f"option '{name}' needs a value ({name}=...)")
                self.values[name] = value
            self.order.append((name, value))


# ---------------------------------------------------------------- the parser


class Parser:
    def __init__(self) -> None:
        self.config = Config()
        self.errors: list[tuple[int, str]] = []
        self.set_lines: dict[str, int] = {}
        self.pool_by_name: dict[str, Pool] = {}
        self.current_pool: Pool | None = None
        self.server_count = 0
        self.cert_count = 0
        self.saw_listen = False  # even a broken listen statement: no "no 'listen'" on top

    def parse(self, text: str) -> tuple[Config, list[tuple[int, str]]]:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, raw in enumerate(lines, start=1):
            tokens = raw.split("#", 1)[0].split()
            if not tokens:
                continue
            try:
                self.statement(number, tokens)
            except DefError as e:
                self.errors.append((number, e.message))
        self.finish()
        self.errors.sort(key=lambda e: e[0])  # stable: a line's errors keep their order
        return self.config, self.errors

    def statement(self, line: int, toks: list[str]) -> None:
        word = toks[0]
        handler = {
            "set": self.stmt_set,
            "listen": self.stmt_listen,
            "pool": self.stmt_pool,
            "server": self.stmt_server,
            "health": self.stmt_health,
            "route": self.stmt_route,
        }.get(word)
        if handler is None:
            raise DefError(f"unknown statement '{word}' (expected set, listen, pool, server, health or route)")
        handler(line, toks)

    # ------------------------------------------------------------ set

    SET_KEYS = [
        "workers", "access_log", "access_log_format", "error_pages",
        "timeout.connect", "timeout.client_header", "timeout.client_idle", "timeout.upstream", "timeout.drain",
        "timeout.tunnel_idle",
        "limit.header_bytes", "limit.header_count", "limit.uri_bytes", "limit.body_bytes",
        "limit.requests_per_connection", "limit.connections_per_worker",
        "cache", "cache.purge_from", "admin", "admin_token_file",
        "compress.level.gzip", "compress.level.br", "compress.level.zstd",
        "drain.delay", "instance", "instance.header", "resolve.interval",
        "h2.max_streams", "h2.glitches", "h2.hpack_table", "h2.max_frame",
    ]

    def stmt_set(self, line: int, toks: list[str]) -> None:
        if len(toks) < 2:
            raise DefError("'set' needs a key and a value (set KEY VALUE)")
        key, values = toks[1], toks[2:]
        if key not in self.SET_KEYS:
            raise DefError(f"unknown setting '{key}' (expected one of: {', '.join(self.SET_KEYS)})")
        if key in self.set_lines:
            raise DefError(f"setting '{key}' is already set at line {self.set_lines[key]}")
        if not values:
            raise DefError(f"'set {key}' needs a value")
        if key != "cache" and len(values) > 1:
            raise DefError(f"'set {key}' takes one value (unexpected '{values[1]}')")
        self.set_lines[key] = line
        s = self.config.settings
        v = values[0]
        if key == "workers":
            s.workers = 0 if v == "auto" else parse_int("workers", v, 1, 256)
        elif key == "access_log":
            if v in ("stdout", "off"):
                s.access_log = "Stdout" if v == "stdout" else "Off"
            else:
                s.access_log, s.access_log_path = "File", v
        elif key == "access_log_format":
            if v not in ("combined", "json"):
                raise DefError(f"bad access_log_format '{v}' (expected combined or json)")
            s.access_log_format = v.capitalize()
        elif key == "error_pages":
            s.error_pages = v
        elif key.startswith("timeout."):
            attr = key.split(".")[1] + "_timeout_ms"
            setattr(s, attr, parse_duration(key, v, allow_zero=(key == "timeout.drain")))
        elif key == "limit.header_count":
            s.header_count = parse_int(key, v, 1, U32)
        elif key == "limit.requests_per_connection":
            s.requests_per_connection = parse_int(key, v, 0, U32)
        elif key == "limit.connections_per_worker":
            s.connections_per_worker = parse_int(key, v, 0, U32)
        elif key == "limit.uri_bytes":
            s.uri_bytes = parse_size(key, v, 1, U32)
        elif key == "limit.header_bytes":
            s.header_bytes = parse_size(key, v, 1, U64)
        elif key == "limit.body_bytes":
            s.body_bytes = parse_size(key, v, 0, U64)
        elif key == "cache":
            self.set_cache(values)
        elif key == "cache.purge_from":
            s.cache_purge_from = parse_cidr(v)
        elif key.startswith("compress.level."):
            name = key[len("compress.level."):]
            lo, hi, _ = COMPRESS_LEVELS[name]
            s.compress_levels[name] = parse_int(key, v, lo, hi)
        elif key == "admin":
            s.admin_endpoint = parse_endpoint(v, "listen")
            s.admin_address = s.admin_endpoint.authority
        elif key == "admin_token_file":
            s.admin_token_file = v
        elif key == "h2.max_streams":
            s.h2_max_streams = parse_int(key, v, 1, 10000)
        elif key == "h2.glitches":
            s.h2_glitches = parse_int(key, v, 1, U32)
        elif key == "h2.hpack_table":
            s.h2_hpack_table = parse_size(key, v, 0, 1 << 20)
        elif key == "h2.max_frame":
            s.h2_max_frame = parse_size(key, v, 16384, (1 << 24) - 1)
        elif key == "drain.delay":
            s.drain_delay_ms = parse_duration(key, v, allow_zero=True)
        elif key == "resolve.interval":
            s.resolve_interval_ms = parse_duration(key, v)
        elif key == "instance":
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", v):
                raise DefError(f"'set instance' takes a name of 1 to 64 letters, digits, '.', '_' or '-' (got '{v}')")
            s.instance = v
        elif key == "instance.header":
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}", v):
                raise DefError(f"'set instance.header' takes a header name of 1 to 64 token characters (got '{v}')")
            s.instance_header = v

    def set_cache(self, values: list[str]) -> None:
        s = self.config.settings
        kind, rest = values[0], values[1:]
        if kind == "off":
            if rest:
                raise DefError(f"'set cache off' takes nothing more (unexpected '{rest[0]}')")
            s.cache = "Off"
        elif kind == "memory":
            opts = Options("set cache memory", rest, ["size", "max_object"])
            s.cache = "Memory"
            if "size" in opts.values:
                s.cache_bytes = parse_size("cache size", opts.values["size"], 1, U64)
            if "max_object" in opts.values:
                s.cache_max_object = parse_size("cache max_object", opts.values["max_object"], 1, U32)
            if s.cache_max_object > s.cache_bytes:
                raise DefError(f"cache max_object ({s.cache_max_object} bytes) is larger than the cache "
                               f"({s.cache_bytes} bytes)")
        elif kind == "redis":
            if not rest or "=" in rest[0]:
                raise DefError("'set cache redis' needs one address (set cache redis HOST:PORT)")
            s.cache = "Redis"
            s.cache_address = parse_endpoint(rest[0], "redis").written
            opts = Options("set cache redis", rest[1:], ["prefix", "max_object", "deadline"])
            s.cache_max_object = REDIS_MAX_OBJECT
            if "max_object" in opts.values:
                s.cache_max_object = parse_size("cache max_object", opts.values["max_object"], 1, REDIS_MAX_VALUE)
            if "prefix" in opts.values:
                if not REDIS_PREFIX_RE.fullmatch(opts.values["prefix"]):
                    raise DefError(f"bad redis prefix '{opts.values['prefix']}' (1 to 64 letters, digits or "
                                   f"':._-', e.g. prefix=juggler:)")
                s.cache_redis_prefix = opts.values["prefix"]
            if "deadline" in opts.values:
                s.cache_redis_deadline_ms = parse_duration("cache deadline", opts.values["deadline"])
                if s.cache_redis_deadline_ms > REDIS_MAX_DEADLINE_MS:
                    raise DefError(f"cache deadline '{opts.values['deadline']}' is too long (at most 10s: "
                                   f"every request on a cached route may wait that long for Redis)")
        else:
            raise DefError(f"bad cache '{kind}' (expected memory [size=SIZE], redis HOST:PORT or off)")

    # ------------------------------------------------------------ listen

    def stmt_listen(self, line: int, toks: list[str]) -> None:
        self.saw_listen = True
        if len(toks) < 3:
            raise DefError("'listen' needs a kind and an address (listen http|https|tcp|tls ADDR:PORT)")
        kind = toks[1]
        if kind not in ("http", "https", "tcp", "tls"):
            raise DefError(f"unknown listener kind '{kind}' (expected http, https, tcp or tls)")
        lst = Listener(line=line, kind=kind, endpoint=parse_endpoint(toks[2], "listen"))
        rest = toks[3:]
        lst.sni = kind == "tcp" and take_flag(rest, "sni")
        lst.proxy_protocol = take_flag(rest, "proxy_protocol")
        if kind != "https" and any(t.startswith("h2=") for t in rest):
            raise DefError("option 'h2' is for 'listen https' (HTTP/2 is offered through TLS ALPN)")
        h2 = take_value(rest, "h2")
        if h2 is not None:
            if h2 not in ("on", "off"):
                raise DefError(f"bad 'h2={h2}' (expected h2=on or h2=off)")
            lst.h2 = h2 == "on"
        if kind == "http":
            if rest:
                raise DefError(f"unexpected '{rest[0]}' after 'listen http ADDR:PORT' (expected proxy_protocol)")
        elif kind == "tcp":
            opts = Options("listen tcp", rest, ["pool"])
            if lst.sni and "pool" in opts.values:
                # (with proxy_protocol: the PROXY header first, then the ClientHello is peeked)
                raise DefError("'listen tcp ... sni' takes its pools from 'route sni' lines (no pool=)")
            if "pool" not in opts.values and not lst.sni:
                raise DefError("'listen tcp' needs pool=NAME (or sni, with 'route sni' lines)")
            lst.pool_name = opts.values.get("pool")
        else:
            if kind == "tls":
                # TLS terminated, the plaintext relayed as L4: the certificates of https and a pool.
                pool = take_value(rest, "pool")
                if not pool:
                    raise DefError("'listen tls' needs pool=NAME")
                lst.pool_name = pool
            for i, tok in enumerate(rest):
                name, eq, value = tok.partition("=")
                if name not in ("cert", "key") or not eq:
                    raise DefError(f"unknown option '{tok}' for listen {kind} (expected cert=FILE key=FILE pairs"
                                   f"{' and pool=NAME' if kind == 'tls' else ''})")
                if not value:
                    raise DefError(f"option '{name}' needs a value ({name}=FILE)")
                if name != ("cert" if i % 2 == 0 else "key"):
                    raise DefError(f"'{tok}' is out of order: give cert=FILE key=FILE pairs, cert first")
            if not rest:
                raise DefError(f"'listen {kind}' needs at least one cert=FILE key=FILE pair")
            if len(rest) % 2:
                raise DefError(f"'{rest[-1]}' has no key=FILE after it")
            lst.certs = [(rest[i].partition("=")[2], rest[i + 1].partition("=")[2]) for i in range(0, len(rest), 2)]
            if self.cert_count + len(lst.certs) > MAX_CERTS:
                raise DefError(f"too many certificates (at most {MAX_CERTS})")
            lst.first_cert = self.cert_count
            self.cert_count += len(lst.certs)
        for other in self.config.listeners:
            if endpoints_overlap(other.endpoint, lst.endpoint):
                raise DefError(
                    f"listener {lst.endpoint.written} overlaps {other.endpoint.written} at line {other.line}"
                    f" (same port, and the same address or a wildcard)")
        self.config.listeners.append(lst)

    # ------------------------------------------------------------ pool / server / health

    def stmt_pool(self, line: int, toks: list[str]) -> None:
        # A pool whose line is broken still collects its servers, quietly.
        pool = Pool(line=line, name="", index=-1, broken=True)
        self.current_pool = pool
        if len(toks) < 3:
            raise DefError("'pool' needs a name and a strategy (pool NAME round_robin|least_conn|random|"
                           "consistent_hash|least_time)")
        name, strategy = toks[1], toks[2]
        if not NAME_RE.fullmatch(name):
            raise DefError(f"bad pool name '{name}' (expected a letter or _, then letters, digits, _ or -)")
        if name in RESERVED_POOL_NAMES:
            raise DefError(f"pool name '{name}' is reserved (it is a word of the route syntax)")
        if name in self.pool_by_name:
            raise DefError(f"pool '{name}' is already defined at line {self.pool_by_name[name].line}")
        pool.name = name
        self.pool_by_name[name] = pool  # routes to it are not "unknown" even if the rest is broken
        if strategy not in STRATEGIES:
            raise DefError(f"unknown strategy '{strategy}' (expected {', '.join(STRATEGIES)})")
        pool.strategy = strategy
        opts = Options(f"pool {strategy}", toks[3:], ["key", "slow_start", "max_fails", "fail_window", "send_proxy"])
        if strategy == "consistent_hash":
            if "key" not in opts.values:
                raise DefError("consistent_hash needs key=ip|path|header:NAME|cookie:NAME|query:NAME")
            self.hash_key(pool, opts.values["key"])
        elif "key" in opts.values:
            raise DefError(f"key= is only for consistent_hash, not {strategy}")
        if "slow_start" in opts.values:
            pool.slow_start_ms = parse_duration("slow_start", opts.values["slow_start"], allow_zero=True)
        if "max_fails" in opts.values:
            pool.max_fails = parse_int("max_fails", opts.values["max_fails"], 0, 1000)
        if "fail_window" in opts.values:
            pool.fail_window_ms = parse_duration("fail_window", opts.values["fail_window"])
        if "send_proxy" in opts.values:
            version = opts.values["send_proxy"]
            if version not in ("v1", "v2"):
                raise DefError(f"bad send_proxy '{version}' (expected v1 or v2)")
            pool.send_proxy = version.upper()
        if len(self.config.pools) >= MAX_POOLS:
            raise DefError(f"too many pools (at most {MAX_POOLS})")
        pool.index = len(self.config.pools)
        pool.broken = False
        self.config.pools.append(pool)

    def hash_key(self, pool: Pool, key: str) -> None:
        kind, colon, name = key.partition(":")
        if not colon and kind in ("ip", "path"):
            pool.key = kind.capitalize()
            return
        if colon and kind in ("header", "cookie", "query"):
            if not TOKEN_RE.fullmatch(name):
                raise DefError(f"bad {kind} name '{name}' in key={key} (expected a token: letters, digits, -, _ ...)")
            pool.key = kind.capitalize()
            pool.key_name = ascii_lower(name) if kind == "header" else name
            return
        raise DefError(f"bad hash key '{key}' (expected ip, path, header:NAME, cookie:NAME or query:NAME)")

    def pool_for(self, what: str) -> Pool:
        if self.current_pool is None:
            raise DefError(f"'{what}' outside a pool (put it after a 'pool NAME STRATEGY' line)")
        return self.current_pool

    def stmt_server(self, line: int, toks: list[str]) -> None:
        pool = self.pool_for("server")
        pool.server_lines += 1
        if len(toks) < 2:
            raise DefError("'server' needs an address (server ADDR:PORT [weight=N] [backup], "
                           "or server NAME:PORT resolve [slots=N] [init=none])")
        if "resolve" in toks[2:]:
            self.server_resolve(line, pool, toks)
            return
        ep = parse_endpoint(toks[1], "server")
        opts = Options("server", toks[2:], ["weight"], ["backup"])
        weight = parse_int("weight", opts.values["weight"], 1, 256) if "weight" in opts.values else 1
        other = pool.server_at.get((ep.ip, ep.port))
        if other is not None:
            raise DefError(f"server {ep.written} is already in pool '{pool.name}' at line {other.line}")
        self.take_servers(1)
        server = Server(line=line, endpoint=ep, weight=weight, backup="backup" in opts.flags, pool_index=pool.index)
        pool.servers.append(server)
        pool.server_at[(ep.ip, ep.port)] = server

    def take_servers(self, n: int) -> None:
        if self.server_count + n > MAX_SERVERS:
            raise DefError(f"too many servers (at most {MAX_SERVERS}, counting each slot of a resolve line)")
        self.server_count += n

    def server_resolve(self, line: int, pool: Pool, toks: list[str]) -> None:
        """`server NAME:PORT resolve [slots=N] [init=none] [weight=N] [backup]`: N
        servers (slots) sharing the name, filled at run time from its A/AAAA records."""
        ep = parse_endpoint(toks[1], "redis")
        if ep.ip is not None:
            raise DefError(f"server {ep.written} resolve: '{ep.host}' is an address already "
                           "(resolve is for a DNS name; drop it)")
        opts = Options("server resolve", toks[2:], ["weight", "slots", "init"], ["backup", "resolve"])
        weight = parse_int("weight", opts.values["weight"], 1, 256) if "weight" in opts.values else 1
        slots = parse_int("slots", opts.values["slots"], 1, MAX_SLOTS) if "slots" in opts.values else DEFAULT_SLOTS
        init = opts.values.get("init", "")
        if init not in ("", "none"):
            raise DefError(f"bad init '{init}' (expected init=none: start even when the name does not resolve)")
        key = (ascii_lower(ep.host), ep.port)
        other = pool.server_at.get(key)
        if other is not None:
            raise DefError(f"server {ep.written} is already in pool '{pool.name}' at line {other.line}")
        self.take_servers(slots)
        first = None
        for k in range(1, slots + 1):
            server = Server(line=line, endpoint=ep, weight=weight, backup="backup" in opts.flags,
                            pool_index=pool.index, slot=k)
            pool.servers.append(server)
            first = first or server
        pool.server_at[key] = first
        self.config.resolves.append(Resolve(line=line, name=ep.host, port=ep.port, pool_index=pool.index,
                                            slots=slots, init_none=init == "none", first=first))

    def stmt_health(self, line: int, toks: list[str]) -> None:
        pool = self.pool_for("health")
        if pool.health is not None:
            raise DefError(f"pool '{pool.name}' already has a health check at line {pool.health.line}")
        if len(toks) >= 2 and toks[1] == "tcp":
            # Connect only (L4 pools whose servers do not speak HTTP).
            h = Health(line=line, method="GET", path="", tcp=True)
            self.health_options(h, toks[2:], ["interval", "timeout", "rise", "fall"])
            pool.health = h
            return
        if len(toks) < 3:
            raise DefError("'health' needs a method and a path (health GET /ping [interval=DUR] ...), or tcp")
        method, path = toks[1], toks[2]
        if method not in METHODS:
            raise DefError(f"unknown method '{method}' (expected {', '.join(METHODS)})")
        if not path.startswith("/"):
            raise DefError(f"health check path '{path}' must start with '/'")
        if pool.send_proxy != "Off":
            # The servers expect a PROXY header first; the check does not send one.
            raise DefError(f"an HTTP health check cannot check pool '{pool.name}' with "
                           f"send_proxy={pool.send_proxy.lower()} (use health tcp)")
        h = Health(line=line, method=method, path=path)
        self.health_options(h, toks[3:], ["interval", "timeout", "rise", "fall", "expect"])
        pool.health = h

    def health_options(self, h: Health, toks: list[str], known: list[str]) -> None:
        opts = Options("health", toks, known)
        v = opts.values
        if "interval" in v:
            h.interval_ms = parse_duration("interval", v["interval"])
        if "timeout" in v:
            h.timeout_ms = parse_duration("timeout", v["timeout"])
        if "rise" in v:
            h.rise = parse_int("rise", v["rise"], 1, 255)
        if "fall" in v:
            h.fall = parse_int("fall", v["fall"], 1, 255)
        if "expect" in v:
            m = re.fullmatch(r"([0-9]{3})-([0-9]{3})", v["expect"])
            if not m or not 100 <= int(m.group(1)) <= int(m.group(2)) <= 599:
                raise DefError(f"bad expect '{v['expect']}' (expected LO-HI with 100 <= LO <= HI <= 599, e.g. 200-399)")
            h.expect_lo, h.expect_hi = int(m.group(1)), int(m.group(2))
        if h.timeout_ms >= h.interval_ms:
            raise DefError(f"health timeout ({h.timeout_ms}ms) must be shorter than its interval ({h.interval_ms}ms)")

    # ------------------------------------------------------------ route

    def stmt_route(self, line: int, toks: list[str]) -> None:
        if len(toks) > 1 and toks[1] == "sni":
            self.stmt_route_sni(line, toks)
            return
        if "->" not in toks:
            raise DefError("route needs '-> ACTION' (route METHODS PATTERN [CONDITIONS] -> ACTION [OPTIONS])")
        arrow = toks.index("->")
        head, tail = toks[1:arrow], toks[arrow + 1 :]
        if len(head) < 2:
            raise DefError("route needs methods and a pattern before '->' (e.g. route GET,HEAD /static/* -> web)")
        methods = self.route_methods(head[0])
        pattern = head[1]
        if not pattern.startswith("/"):
            raise DefError(f"route pattern '{pattern}' must start with '/'")
        if "*" in pattern[:-1]:
            raise DefError(f"'*' is only allowed at the end of a pattern (got '{pattern}')")
        if "?" in pattern:
            raise DefError(f"route pattern '{pattern}' contains '?': patterns match the path, never the query")
        prefix = pattern.endswith("*")
        r = Route(line=line, index=len(self.config.routes), text=" ".join(toks), methods=methods,
                  pattern=pattern, literal=pattern[:-1] if prefix else pattern, prefix=prefix)
        for cond in head[2:]:
            self.route_condition(r, cond)
        self.route_action(r, tail)
        if len(self.config.routes) >= MAX_ROUTES:
            raise DefError(f"too many routes (at most {MAX_ROUTES})")
        self.config.routes.append(r)

    def stmt_route_sni(self, line: int, toks: list[str]) -> None:
        """`route sni NAME|*.DOMAIN|* -> POOL`: the pool of a `listen tcp ... sni` connection
        whose ClientHello names NAME (compared without case)."""
        if len(toks) != 5 or toks[3] != "->":
            raise DefError("route sni needs a name and a pool (route sni NAME|*.DOMAIN|* -> POOL)")
        name, pool = toks[2], toks[4]
        if name != "*":
            bare = name[2:] if name.startswith("*.") else name
            if not HOSTNAME_RE.fullmatch(bare) or ".." in bare:
                raise DefError(f"bad server name '{name}' (expected a name like db.example.com, *.example.com or *)")
        suffix = name.startswith("*.")
        key = ascii_lower(name[1:] if suffix else name)
        for other in self.config.sni_routes:
            if other.name == key and other.suffix == suffix:
                raise DefError(f"route sni {name} is already given at line {other.line}")
        self.config.sni_routes.append(SniRoute(line=line, name=key, suffix=suffix, pool_name=pool))

    @staticmethod
    def route_methods(tok: str) -> list[str] | None:
        if tok == "*":
            return None
        methods: list[str] = []
        for m in tok.split(","):
            if m not in METHODS:
                if not m:
                    raise DefError(f"bad method list '{tok}' (expected * or e.g. GET,HEAD)")
                raise DefError(f"unknown method '{m}' (expected * or a comma list of {', '.join(METHODS)})")
            if m in methods:
                raise DefError(f"method '{m}' is listed twice")
            methods.append(m)
        return methods

    @staticmethod
    def route_condition(r: Route, cond: str) -> None:
        if cond.startswith("host="):
            if r.host is not None:
                raise DefError("host= given twice (a route matches one host or one *.domain)")
            host = cond[len("host="):]
            bare = host[2:] if host.startswith("*.") else host
            if not HOSTNAME_RE.fullmatch(bare) or ".." in bare:
                raise DefError(f"bad host '{host}' (expected a name like api.example.com or *.example.com, "
                               "without a port)")
            r.host_suffix = host.startswith("*.")
            r.host = ascii_lower(host[1:] if r.host_suffix else host)
        elif cond.startswith("header:"):
            name, eq, value = cond[len("header:"):].partition("=")
            if not eq or not TOKEN_RE.fullmatch(name):
                raise DefError(f"bad header condition '{cond}' (expected header:NAME=VALUE)")
            if not value:
                raise DefError(f"header condition '{cond}' needs a value (header:NAME=VALUE)")
            lname = ascii_lower(name)
            if any(n == lname for n, _ in r.headers):
                raise DefError(f"header '{name}' is tested twice in one route")
            r.headers.append((lname, value))
        else:
            raise DefError(f"unknown route condition '{cond}' (expected host=HOST or header:NAME=VALUE before '->')")

    @staticmethod
    def route_action(r: Route, tail: list[str]) -> None:
        if not tail:
            raise DefError("route needs an action after '->' (POOL, redirect POOL CODE, redirect https CODE "
                           "or respond CODE)")
        word = tail[0]
        if word == "redirect":
            if len(tail) < 3:
                raise DefError("redirect needs a target and a code (redirect POOL CODE or redirect https CODE)")
            target, code, rest = tail[1], tail[2], tail[3:]
            if not INT_RE.fullmatch(code) or int(code) not in REDIRECT_CODES:
                raise DefError(f"bad redirect code '{code}' (expected 301, 302, 303, 307 or 308)")
            r.status = int(code)
            if target == "https":
                r.action = "RedirectHttps"
            else:
                r.action, r.pool_name = "Redirect", target
        elif word == "respond":
            if len(tail) < 2:
                raise DefError("respond needs a status code (respond CODE, e.g. respond 200)")
            code, rest = tail[1], tail[2:]
            if not INT_RE.fullmatch(code) or not 200 <= int(code) <= 599:
                raise DefError(f"bad status '{code}' for respond (expected 200..599)")
            r.action, r.status = "Respond", int(code)
        else:
            r.action, r.pool_name, rest = "Proxy", word, tail[1:]
        if r.action != "Proxy" and rest:
            if rest[0].partition("=")[0] in ("gzip", "compress", "cache", "retries", "upgrade"):
                raise DefError(f"option '{rest[0]}' is only for routes that proxy to a pool (-> POOL {rest[0]})")
            raise DefError(f"unexpected '{rest[0]}' after the action")
        opts = Options("a route", rest, ["cache", "retries", "compress", "upgrade"], ["gzip", "compress", "cache"])
        r.compress = Parser.route_compress(opts)
        if "upgrade" in opts.values:
            r.upgrades = Parser.route_upgrades(opts.values["upgrade"])
        if "cache" in opts.values:
            r.cache_ms = parse_duration("cache", opts.values["cache"])
            if r.cache_ms >= CACHE_NO_BOUND:
                raise DefError(f"duration '{opts.values['cache']}' for cache is too long (at most 1193h)")
        elif "cache" in opts.flags:
            r.cache_ms = CACHE_NO_BOUND
        if "retries" in opts.values:
            r.retries = parse_int("retries", opts.values["retries"], 0, 10)
        if r.action != "Proxy":
            r.retries = 0

    @staticmethod
    def route_upgrades(value: str) -> list[str]:
        """`upgrade=TOKEN,...`: the protocols a request may switch to (they replace the
        default websocket), or `none`."""
        if value == "none":
            return []
        tokens: list[str] = []
        for tok in value.split(","):
            if not TOKEN_RE.fullmatch(tok):
                raise DefError(f"bad upgrade token '{tok}' in upgrade= (expected a comma list of protocol names "
                               "like websocket, or none)")
            low = ascii_lower(tok)
            if low == "h2c" or low == "none":
                raise DefError(f"'{tok}' cannot be listed in upgrade= (h2c is always refused; none stands alone)")
            if low in tokens:
                raise DefError(f"upgrade token '{tok}' is listed twice")
            tokens.append(low)
        return tokens

    @staticmethod
    def route_compress(opts: Options) -> int:
        """`gzip` (= compress=gzip), `compress` (every encoding) or `compress=LIST`."""
        if "gzip" in opts.flags and ("compress" in opts.flags or "compress" in opts.values):
            raise DefError("gzip and compress both given (gzip is compress=gzip; compress alone is all encodings)")
        if "gzip" in opts.flags:
            return ENCODINGS["gzip"]
        if "compress" in opts.flags:
            return sum(ENCODINGS.values())
        if "compress" not in opts.values:
            return 0
        bits = 0
        for name in opts.values["compress"].split(","):
            if name not in ENCODINGS:
                raise DefError(f"unknown encoding '{name}' in compress= (expected a comma list of "
                               f"{', '.join(ENCODINGS)})")
            if bits & ENCODINGS[name]:
                raise DefError(f"encoding '{name}' is listed twice in compress=")
            bits |= ENCODINGS[name]
        return bits

    # ------------------------------------------------------------ whole file

    def finish(self) -> None:
        c = self.config
        if not self.saw_listen:
            self.errors.append((1, DefError("no 'listen' statement: a routes file needs at least one "
                                            "(listen http|https|tcp|tls ADDR:PORT)").message))
        for pool in c.pools:
            if pool.server_lines != len(pool.servers):
                continue  # a server line had an error already
            if not pool.servers:
                self.errors.append((pool.line, DefError(
                    f"pool '{pool.name}' has no servers (add 'server ADDR:PORT' lines after it)").message))
            elif all(s.backup for s in pool.servers):
                self.errors.append((pool.line, DefError(
                    f"pool '{pool.name}' has only backup servers (at least one must not be backup)").message))
        first = 0
        for pool in c.pools:
            pool.first_server = first
            first += len(pool.servers)
        for lst in c.listeners:
            if lst.pool_name is not None:
                lst.pool_index = self.resolve(lst.line, lst.pool_name, "listener")
        admin = c.settings.admin_endpoint
        if admin is None and c.settings.admin_token_file:
            self.errors.append((self.set_lines["admin_token_file"], DefError(
                "'set admin_token_file' needs 'set admin' (the token guards the admin listener)").message))
        if admin is not None:
            for lst in c.listeners:
                if endpoints_overlap(admin, lst.endpoint):
                    self.errors.append((self.set_lines["admin"], DefError(
                        f"admin address {admin.written} overlaps the listener at line {lst.line}").message))
                    break
        for sr in c.sni_routes:
            sr.pool_index = self.resolve(sr.line, sr.pool_name, "route sni")
        sni_listeners = [lst for lst in c.listeners if lst.sni]
        if c.sni_routes and not sni_listeners:
            self.errors.append((c.sni_routes[0].line, DefError(
                "route sni needs a 'listen tcp ADDR:PORT sni' listener").message))
        if sni_listeners and not c.sni_routes:
            self.errors.append((sni_listeners[0].line, DefError(
                "'listen tcp ... sni' needs 'route sni NAME -> POOL' lines").message))
        for r in c.routes:
            if r.pool_name is not None:
                r.pool_index = self.resolve(r.line, r.pool_name, "route")
            pool = c.pools[r.pool_index] if r.action == "Proxy" and r.pool_index >= 0 else None
            if pool is not None and pool.send_proxy != "Off":
                # Kept-alive server connections carry requests of many clients: one
                # PROXY header at their start cannot name each (docs/routes-reference.md).
                self.errors.append((r.line, DefError(
                    f"route proxies to pool '{pool.name}', which has send_proxy={pool.send_proxy.lower()}: "
                    "send_proxy is for the pools of tcp and tls listeners only").message))
        if c.settings.instance_header and not c.settings.instance:
            self.errors.append((self.set_lines["instance.header"], DefError(
                "'set instance.header' needs 'set instance NAME' (the header carries that name)").message))
        self.finish_cache()
        self.check_shadowed()

    def finish_cache(self) -> None:
        """A route with `cache` and no `set cache`: a memory cache of the default
        size. `set cache off` turns every route's cache off (one line to
        disable caching). cache.purge_from without a cache says nothing."""
        c = self.config
        s = c.settings
        cached = [r for r in c.routes if r.cache_ms]
        if "cache" not in self.set_lines and cached:
            s.cache = "Memory"
        if s.cache == "Off":
            for r in cached:
                r.cache_ms = 0
        if "cache.purge_from" in self.set_lines and s.cache == "Off":
            self.errors.append((self.set_lines["cache.purge_from"], DefError(
                "cache.purge_from without a cache (add 'cache' to a route, or 'set cache memory')").message))

    def resolve(self, line: int, name: str, who: str) -> int:
        pool = self.pool_by_name.get(name)
        if pool is None:
            self.errors.append((line, DefError(f"{who} refers to unknown pool '{name}'").message))
            return -1
        return pool.index

    def check_shadowed(self) -> None:
        """The obvious dead routes: an earlier unconditional route whose methods
        and pattern cover this one's. Earlier unconditional routes are indexed by
        literal, so a big file costs O(routes x pattern length), not O(routes^2)."""
        by_literal: dict[str, list[Route]] = {}
        for later in self.config.routes:
            lit = later.literal
            candidates = [lit[:k] for k in range(len(lit) + 1)] + [lit + "/"]
            shadow: Route | None = None
            for c in candidates:
                for earlier in by_literal.get(c, ()):
                    if (shadow is None or earlier.index < shadow.index) and covers(earlier, later) and (
                            earlier.methods is None or
                            (later.methods is not None and set(later.methods) <= set(earlier.methods))):
                        shadow = earlier
            if shadow is not None:
                self.errors.append((later.line, DefError(
                    f"route is unreachable: shadowed by the route at line {shadow.line}").message))
            if not later.conditional:
                by_literal.setdefault(lit, []).append(later)


def covers(a: Route, b: Route) -> bool:
    """Every path b's pattern matches, a's pattern matches too."""
    if not b.prefix:
        return a.matches_path(b.literal)
    if not a.prefix or not b.literal.startswith(a.literal):
        return False
    # b also matches its literal without the trailing '/'.
    return not b.literal.endswith("/") or a.matches_path(b.literal[:-1])


def parse(text: str) -> tuple[Config, list[tuple[int, str]]]:
    return Parser().parse(text)
