"""C++ emitter: a validated routesdef.Config -> the text of generated/distributer.cpp.

Output is a pure function of the input: every list is walked in file order (or
sorted), never in the order of a set, and nothing depends on time or on where
the generator runs.

distribute() is compiled, not interpreted:
  switch (method) -> one matcher per distinct candidate list (routes naming the
  method, and the `*` ones, in file order) -> a radix trie of the candidates'
  literal pattern bytes, walked with switch/memcmp and gotos -> a terminal: the
  routes that match a path ending here (or leaving the trie here), in file
  order, each behind its host/header conditions. Terminals share their common
  tails, so a long list of conditional routes is emitted once per distinct tail.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import emit_sni
from routesdef import ALL_METHOD_ENUMS, METHOD_ENUM, METHODS, Config, Route
from routesdef import STRATEGIES as STRATEGY_ENUM  # name -> enumerator

# ---------------------------------------------------------------- literals


def cstr(s: str) -> str:
    """A C++ string literal of the UTF-8 bytes of s (octal escapes: no hex run-on)."""
    out = ['"']
    for b in s.encode("utf-8"):
        c = chr(b)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append(f"\\{b:03o}")
    out.append('"')
    return "".join(out)


def cchar(b: int) -> str:
    c = chr(b)
    if c in "'\\":
        return f"'\\{c}'"
    if 32 <= b < 127:
        return f"'{c}'"
    return f"'\\{b:03o}'"


def cbool(v: bool) -> str:
    return "true" if v else "false"


def sv(s: str) -> str:
    """A string_view initializer: {} for empty (no pointer to a 1-byte literal)."""
    return cstr(s) if s else "{}"


# ---------------------------------------------------------------- tables


def emit_settings(c: Config) -> list[str]:
    s = c.settings
    fields = [
        ("workers", str(s.workers)),
        ("access_log", f"LogTarget::{s.access_log}"),
        ("access_log_path", sv(s.access_log_path)),
        ("access_log_format", f"AccessLogFormat::{s.access_log_format}"),
        ("error_pages", sv(s.error_pages)),
        ("connect_timeout_ms", str(s.connect_timeout_ms)),
        ("client_header_timeout_ms", str(s.client_header_timeout_ms)),
        ("client_idle_timeout_ms", str(s.client_idle_timeout_ms)),
        ("upstream_timeout_ms", str(s.upstream_timeout_ms)),
        ("drain_timeout_ms", str(s.drain_timeout_ms)),
        ("tunnel_idle_timeout_ms", str(s.tunnel_idle_timeout_ms)),
        ("header_bytes", f"{s.header_bytes}u"),
        ("header_count", f"{s.header_count}u"),
        ("uri_bytes", f"{s.uri_bytes}u"),
        ("body_bytes", f"{s.body_bytes}u"),
        ("requests_per_connection", f"{s.requests_per_connection}u"),
        ("connections_per_worker", f"{s.connections_per_worker}u"),
        ("cache", f"CacheKind::{s.cache}"),
        ("cache_bytes", f"{s.cache_bytes}u"),
        ("cache_address", sv(s.cache_address)),
        ("cache_max_object", f"{s.cache_max_object}u"),
        ("cache_redis_prefix", sv(s.cache_redis_prefix)),
        ("cache_redis_deadline_ms", f"{s.cache_redis_deadline_ms}u"),
        ("cache_purge_from", emit_cidr(s.cache_purge_from)),
        ("admin_address", sv(s.admin_address)),
        ("admin_token_file", sv(s.admin_token_file)),
        ("compress_level_gzip", str(s.compress_levels["gzip"])),
        ("compress_level_br", str(s.compress_levels["br"])),
        ("compress_level_zstd", str(s.compress_levels["zstd"])),
        ("drain_delay_ms", str(s.drain_delay_ms)),
        ("instance", sv(s.instance)),
        # The whole line, made here once: a response carries it without formatting.
        ("instance_header", sv(f"{s.instance_header}: {s.instance}\r\n" if s.instance_header else "")),
    ]
    if c.resolves or s.resolve_interval_ms != 10_000:  # the other tables keep their bytes
        fields.append(("resolve_interval_ms", f"{s.resolve_interval_ms}u"))
    for name in ("h2_max_streams", "h2_glitches", "h2_hpack_table", "h2_max_frame"):
        if getattr(s, name) is not None:  # else the default of juggler/route.hpp
            fields.append((name, f"{getattr(s, name)}u"))
    lines = ["constexpr Settings kSettings{"]
    lines += [f"    .{k} = {v}," for k, v in fields]
    lines.append("};")
    return lines


def emit_cidr(net) -> str:
    """A CidrDef initializer: family 0 (none), 4 or 6, the prefix length and the address bytes."""
    if net is None:
        return "{.family = 0, .bits = 0, .addr = {}}"
    addr = ", ".join(str(b) for b in net.network_address.packed)
    return f"{{.family = {net.version}, .bits = {net.prefixlen}, .addr = {{{addr}}}}}"


def emit_array(ctype: str, name: str, rows: list[str]) -> list[str]:
    if not rows:
        return []
    return [f"constexpr {ctype} {name}[] = {{"] + [f"    {r}," for r in rows] + ["};", ""]


def emit_tables(c: Config) -> tuple[list[str], dict[str, str]]:
    """The constexpr arrays, and the span initializer of each (`{}` when empty)."""
    kinds = {"http": "Http", "https": "Https", "tcp": "Tcp", "tls": "Tls"}
    listeners = [
        f"{{.kind = ListenKind::{kinds[lst.kind]}, .host = {cstr(lst.endpoint.host)}, "
        f".port = {lst.endpoint.port}, .pool = {lst.pool_index}, .first_cert = {lst.first_cert}, "
        f".cert_count = {len(lst.certs)}, .proxy_protocol = {cbool(lst.proxy_protocol)}, .line = {lst.line}, "
        f".sni = {cbool(lst.sni)}{'' if lst.h2 else ', .h2 = false'}}}"
        for lst in c.listeners
    ]
    certs = [f"{{.cert_file = {cstr(cert)}, .key_file = {cstr(key)}}}" for cert, key in c.certs]
    pools = []
    for p in c.pools:
        h = p.health
        if h is not None:
            health = (f"{{.enabled = true, .method = Method::{METHOD_ENUM[h.method]}, .path = {cstr(h.path)}, "
                      f".interval_ms = {h.interval_ms}, .timeout_ms = {h.timeout_ms}, .rise = {h.rise}, "
                      f".fall = {h.fall}, .expect_lo = {h.expect_lo}, .expect_hi = {h.expect_hi}, "
                      f".tcp = {cbool(h.tcp)}}}")
        else:
            health = ("{.enabled = false, .method = Method::Get, .path = {}, .interval_ms = 0, .timeout_ms = 0, "
                      ".rise = 0, .fall = 0, .expect_lo = 0, .expect_hi = 0, .tcp = false}")
        pools.append(
            f"{{.name = {cstr(p.name)}, .strategy = Strategy::{STRATEGY_ENUM[p.strategy]}, "
            f".key = HashKey::{p.key}, .key_name = {sv(p.key_name)}, .first_server = {p.first_server}, "
            f".server_count = {len(p.servers)},\n     .health = {health},\n     "
            f".slow_start_ms = {p.slow_start_ms}, .max_fails = {p.max_fails}, "
            f".fail_window_ms = {p.fail_window_ms}, .line = {p.line}, .send_proxy = SendProxy::{p.send_proxy}}}")
    servers = [
        f"{{.host = {cstr(s.endpoint.host)}, .port = {s.endpoint.port}, .authority = {cstr(s.endpoint.authority)}, "
        f".weight = {s.weight}, .backup = {cbool(s.backup)}, .pool = {s.pool_index}, .line = {s.line}"
        f"{f', .slot = {s.slot}' if s.slot else ''}}}"
        for p in c.pools for s in p.servers
    ]
    numbers = {id(s): i for i, s in enumerate(c.servers)}
    resolves = [
        f"{{.name = {cstr(r.name)}, .port = {r.port}, .pool = {r.pool_index}, .first_server = {numbers[id(r.first)]}, "
        f".slots = {r.slots}, .init_none = {cbool(r.init_none)}, .line = {r.line}}}"
        for r in c.resolves
    ]
    # The Upgrade token lists, one array per distinct list (most routes share the default).
    upgrade_lists: dict[tuple[str, ...], str] = {}
    for r in c.routes:
        if r.action == "Proxy" and r.upgrades:
            upgrade_lists.setdefault(tuple(r.upgrades), f"kUpgrades{len(upgrade_lists)}")
    routes = [
        f"{{.index = {r.index}, .line = {r.line}, .text = {cstr(r.text)},\n     "
        f".action = Action::{r.action}, .pool = {r.pool_index}, .status = {r.status}, .retries = {r.retries}, "
        f".compress = {r.compress}, .cache_ttl_ms = {r.cache_ms}, "
        f".upgrades = {upgrade_lists.get(tuple(r.upgrades), '{}') if r.action == 'Proxy' else '{}'}}}"
        for r in c.routes
    ]
    out: list[str] = []
    for tokens, name in upgrade_lists.items():
        out += emit_array("std::string_view", name, [cstr(t) for t in tokens])
    spans: dict[str, str] = {}
    for ctype, name, rows in (("ListenerDef", "kListeners", listeners), ("CertDef", "kCerts", certs),
                              ("PoolDef", "kPools", pools), ("ServerDef", "kServers", servers),
                              ("RouteDef", "kRoutes", routes), ("ResolveDef", "kResolves", resolves)):
        out += emit_array(ctype, name, rows)
        spans[name] = name if rows else "{}"
    return out, spans

# ---------------------------------------------------------------- the trie


@dataclass
class Node:
    depth: int
    text: bytes  # the path bytes that lead here
    children: dict[int, tuple[bytes, "Node"]] = field(default_factory=dict)  # first byte -> (edge, node)
    exact: list[int] = field(default_factory=list)  # routes matching exactly this path
    prefix: list[int] = field(default_factory=list)  # prefix routes whose literal is this path


def insert(root: Node, key: bytes) -> Node:
    node, rest = root, key
    while rest:
        hit = node.children.get(rest[0])
        if hit is None:
            child = Node(depth=node.depth + len(rest), text=key)
            node.children[rest[0]] = (rest, child)
            return child
        edge, child = hit
        k = 0
        while k < len(edge) and k < len(rest) and edge[k] == rest[k]:
            k += 1
        if k < len(edge):  # split the edge at k
            mid = Node(depth=node.depth + k, text=key[: node.depth + k])
            mid.children[edge[k]] = (edge[k:], child)
            node.children[rest[0]] = (edge[:k], mid)
            child = mid
        node, rest = child, rest[k:]
    return node


def build_trie(routes: list[Route]) -> Node:
    root = Node(depth=0, text=b"")
    for r in routes:
        lit = r.literal.encode("utf-8")
        if r.prefix:
            insert(root, lit).prefix.append(r.index)
            if lit.endswith(b"/"):  # `/static/*` also matches `/static`
                insert(root, lit[:-1]).exact.append(r.index)
        else:
            insert(root, lit).exact.append(r.index)
    return root


Item = "int | tuple[int, ...]"  # one route checked inline, or a run of routes checked by a shared function
Sources = "list[tuple[object, list[int]]]"  # (where the routes come from, their indices)

RUN_FUNCTION_MIN = 3  # shorter runs are checked inline


class Runs:
    """The shared check functions: a run of consecutive routes (in file order) that
    come from the same trie node's list, like a block of host-conditioned `/*`
    routes, is checked by one function that every terminal containing it calls.
    This keeps the code linear in the number of routes when many routes carry
    conditions."""

    def __init__(self, routes: list[Route]):
        self.all = routes
        self.names: dict[tuple[int, ...], str] = {}

    def name(self, run: tuple[int, ...]) -> str:
        return self.names.setdefault(run, f"check_{len(self.names)}")

    def emit(self) -> list[str]:
        out: list[str] = []
        hosts: list[str] = []  # the host switch functions, emitted before their callers
        for run, name in self.names.items():
            out.append(f"// routes {', '.join(str(i) for i in run)}")
            out.append(f"const RouteDef* {name}(const RequestHead& r) noexcept {{")
            for segment in self.segments(run):
                if len(segment) >= HOST_SWITCH_MIN:
                    hname = f"hosts_{len(hosts)}"
                    hosts += emit_host_switch(hname, [self.all[i] for i in segment])
                    out.append(f"  if (const RouteDef* m = {hname}(r.host)) return m;  "
                               f"// lines {self.all[segment[0]].line}-{self.all[segment[-1]].line}")
                    continue
                for i in segment:
                    r = self.all[i]
                    if r.conditional:
                        out.append(f"  if ({conditions(r)}) return &kRoutes[{i}];  // line {r.line}")
                    else:
                        out.append(f"  return &kRoutes[{i}];  // line {r.line}")
            if self.all[run[-1]].conditional:
                out.append("  return nullptr;")
            out += ["}", ""]
        if not hosts:
            return out
        fold = ["constexpr char fold(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }",
                ""]
        return fold + hosts + out

    def segments(self, run: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The run cut into blocks of routes whose only condition is an exact host
        (checked together by one switch) and blocks of anything else."""
        out: list[list[int]] = []
        for i in run:
            r = self.all[i]
            exact_host = r.host is not None and not r.host_suffix and not r.headers and r.action != "RedirectHttps"
            if out and (exact_host == out[-1][0]):
                out[-1][1].append(i)
            else:
                out.append([exact_host, [i]])
        result: list[tuple[int, ...]] = []
        for exact_host, lst in out:
            if exact_host and len(lst) >= HOST_SWITCH_MIN:
                result.append(tuple(lst))
            else:
                result += [(i,) for i in lst]
        return result


HOST_SWITCH_MIN = 4  # fewer exact hosts are compared one by one


def emit_host_switch(name: str, routes: list, rtype: str = "const RouteDef*", none: str = "nullptr") -> list[str]:
    """A function from a host to the first of `routes` (all `host=NAME`, nothing
    else) naming it, or nullptr: a switch on the length, then a radix trie of the
    lower-case names walked with case-folded bytes. Cost: the length of the host,
    whatever the number of routes."""
    first: dict[str, Route] = {}
    for r in routes:
        first.setdefault(r.host, r)  # a later route with the same host can never win here
    by_length: dict[int, list[Route]] = {}
    for host, r in sorted(first.items(), key=lambda kv: (len(kv[0].encode()), kv[0].encode())):
        by_length.setdefault(len(host.encode()), []).append(r)
    lines = [f"{rtype} {name}(std::string_view h) noexcept {{", "  switch (h.size()) {"]
    body: list[str] = []
    for length, group in by_length.items():
        root = Node(depth=0, text=b"")
        leaf_route: dict[int, Route] = {}
        for r in group:
            leaf_route[id(insert(root, r.host.encode()))] = r
        label = f"l{length}"
        lines.append(f"    case {length}: goto {label};")
        order: list[Node] = []

        def walk(node: Node) -> None:
            order.append(node)
            for b in sorted(node.children):
                walk(node.children[b][1])

        walk(root)
        labels = {id(n): f"{label}_{k}" for k, n in enumerate(order)}

        def go(child: Node) -> str:
            r = leaf_route.get(id(child))
            if r is not None and not child.children:
                return getattr(r, "ret", None) or f"return &kRoutes[{r.index}];  // line {r.line}"
            return f"goto {labels[id(child)]};"

        for node in order:
            if node.depth == length:
                continue  # a leaf: its parent returns it
            body.append(f"{label if node is root else labels[id(node)]}:")
            d = node.depth
            kids = [node.children[b] for b in sorted(node.children)]
            if len(kids) == 1:
                edge, child = kids[0]
                body.append(f"  if ({host_edge_test(d, edge)}) {go(child)}")
            else:
                body.append(f"  switch (fold(h[{d}])) {{")
                for edge, child in kids:
                    if len(edge) == 1:
                        body.append(f"    case {cchar(edge[0])}: {go(child)}")
                    else:
                        body.append(f"    case {cchar(edge[0])}:")
                        body.append(f"      if ({host_edge_test(d + 1, edge[1:])}) {go(child)}")
                        body.append("      break;")
                body.append("  }")
            body.append(f"  return {none};")
    lines += [f"    default: return {none};", "  }"] + body + ["}", ""]
    return lines


def host_edge_test(at: int, edge: bytes) -> str:
    """h[at..] starts with the lower-case `edge`, ignoring case (h is long enough)."""
    if len(edge) == 1:
        return f"fold(h[{at}]) == {cchar(edge[0])}"
    return f"iequals(std::string_view(h.data() + {at}, {len(edge)}), {cstr_bytes(edge)})"


class Matcher:
    """One matcher function: trie nodes first, then the shared terminal blocks."""

    def __init__(self, name: str, routes: list[Route], all_routes: list[Route], runs: Runs):
        self.name = name
        self.all = all_routes
        self.runs = runs
        self.root = build_trie(routes)
        self.lines: list[str | tuple[str, str]] = []  # str: code; (label, comment): a label
        self.referenced: set[str] = set()
        self.suffix_label: dict[tuple, str] = {}
        self.pending: list[tuple] = []  # terminals referenced, in order, not yet emitted
        self.uses_p = False
        self.uses_n = False
        self.uses_cond = False

    def terminal(self, sources: list) -> tuple:
        """The routes of `sources` in file order, cut after the first unconditional
        one, as items: consecutive routes from one source become one run."""
        merged = sorted((i, k) for k, (_, lst) in enumerate(sources) for i in lst)
        cut: list[tuple[int, int]] = []
        for i, k in merged:
            cut.append((i, k))
            if not self.all[i].conditional:
                break
        items: list = []
        j = 0
        while j < len(cut):
            e = j
            while e + 1 < len(cut) and cut[e + 1][1] == cut[j][1]:
                e += 1
            run = tuple(i for i, _ in cut[j : e + 1])
            # An unconditional last route stays outside the run, so the run's function
            # is the same whether or not the terminal is cut there.
            last = run[-1:] if not self.all[run[-1]].conditional else ()
            run = run[: len(run) - len(last)]
            if len(run) >= RUN_FUNCTION_MIN:
                items.append(run)
            else:
                items.extend(run)
            items.extend(last)
            j = e + 1
        return tuple(items)

    def final(self, item) -> bool:
        """The item always returns a route (it ends in an unconditional one)."""
        last = item[-1] if isinstance(item, tuple) else item
        return not self.all[last].conditional

    def item_code(self, item) -> str:
        if isinstance(item, tuple):
            name = self.runs.name(item)
            self.uses_cond = True
            if self.final(item):
                return f"return {name}(r);"
            return f"if (const RouteDef* m = {name}(r)) return m;"
        r = self.all[item]
        if not r.conditional:
            return f"return &kRoutes[{item}];  // line {r.line}"
        self.uses_cond = True
        return f"if ({conditions(r)}) return &kRoutes[{item}];  // line {r.line}"

    def goto_terminal(self, t: tuple) -> str:
        """A statement that finishes with terminal t: inline when it is one return."""
        if not t:
            return "return nullptr;"
        if len(t) == 1 and self.final(t[0]):
            return self.item_code(t[0])
        label = self.suffix_label.get(t)
        if label is None:
            label = f"t{len(self.suffix_label)}"
            self.suffix_label[t] = label
            self.pending.append(t)
        self.referenced.add(label)
        return f"goto {label};"

    def emit(self) -> list[str]:
        node_labels: dict[int, str] = {}
        order: list[tuple[Node, list]] = []

        def walk(node: Node, inherited: list) -> None:
            acc = inherited + [(id(node), node.prefix)] if node.prefix else inherited
            order.append((node, acc))
            for b in sorted(node.children):
                walk(node.children[b][1], acc)

        def ending(node: Node, acc: list) -> list:
            return acc + [(("exact", id(node)), node.exact)] if node.exact else acc

        walk(self.root, [])
        # A leaf where every path ends the same way needs no code of its own: its
        # parent jumps straight to the terminal.
        leaf_exit: dict[int, str] = {}
        for node, acc in order:
            if not node.children and self.terminal(acc) == self.terminal(ending(node, acc)):
                leaf_exit[id(node)] = ""
        for i, (node, _) in enumerate(order):
            node_labels[id(node)] = f"n{i}"

        def target(child: Node) -> str:
            if id(child) in leaf_exit:
                if not leaf_exit[id(child)]:
                    leaf_exit[id(child)] = self.goto_terminal(self.terminal(acc_of[id(child)]))
                return leaf_exit[id(child)]
            self.referenced.add(node_labels[id(child)])
            return f"goto {node_labels[id(child)]};"

        acc_of = {id(node): acc for node, acc in order}
        for node, acc in order:
            if id(node) in leaf_exit and node is not self.root:
                continue
            if node is not self.root:
                self.lines.append((node_labels[id(node)], cstr_bytes(node.text)))
            fallback = self.terminal(acc)
            at_end = self.terminal(ending(node, acc))
            d = node.depth
            kids = [node.children[b] for b in sorted(node.children)]
            if not kids:
                self.uses_n |= at_end != fallback
                if at_end == fallback:
                    self.lines.append(f"  {self.goto_terminal(fallback)}")
                else:
                    self.lines.append(f"  if (n == {d}) {self.goto_terminal(at_end)}")
                    self.lines.append(f"  {self.goto_terminal(fallback)}")
                continue
            self.uses_p = self.uses_n = True
            self.lines.append(f"  if (n == {d}) {self.goto_terminal(at_end)}")
            if len(kids) == 1:
                edge, child = kids[0]
                if len(edge) == 1:
                    self.lines.append(f"  if (p[{d}] == {cchar(edge[0])}) {target(child)}")
                else:
                    self.lines.append(f"  if ({edge_test(d, edge)}) {target(child)}")
            else:
                self.lines.append(f"  switch (p[{d}]) {{")
                for edge, child in kids:
                    if len(edge) == 1:
                        self.lines.append(f"    case {cchar(edge[0])}: {target(child)}")
                    else:
                        self.lines.append(f"    case {cchar(edge[0])}:")
                        self.lines.append(f"      if ({edge_test(d + 1, edge[1:])}) {target(child)}")
                        self.lines.append("      break;")
                self.lines.append("  }")
            self.lines.append(f"  {self.goto_terminal(fallback)}")
        self.emit_terminals()
        return self.render()

    def emit_terminals(self) -> None:
        """Each referenced terminal, as a chain of checks that ends in a return or
        jumps into the chain of an already emitted terminal with the same tail."""
        emitted: set[tuple] = set()
        while self.pending:
            t = self.pending.pop(0)
            for k in range(len(t) + 1):
                tail = t[k:]
                if tail in emitted:
                    self.lines.append(f"  goto {self.suffix_label[tail]};")
                    self.referenced.add(self.suffix_label[tail])
                    break
                label = self.suffix_label.setdefault(tail, f"t{len(self.suffix_label)}")
                emitted.add(tail)
                self.lines.append((label, ""))
                if not tail:
                    self.lines.append("  return nullptr;")
                    break
                self.lines.append(f"  {self.item_code(tail[0])}")
                if self.final(tail[0]):
                    break

    def render(self) -> list[str]:
        body: list[str] = []
        for item in self.lines:
            if isinstance(item, tuple):
                label, comment = item
                if label in self.referenced:
                    body.append(f"{label}:" + (f"  // {comment}" if comment else ""))
            else:
                body.append(item)
        param = "r" if self.uses_p or self.uses_n or self.uses_cond else "/*r*/"
        head = [f"const RouteDef* {self.name}(const RequestHead& {param}) noexcept {{"]
        if self.uses_p:
            head.append("  const char* const p = r.path.data();")
        if self.uses_n:
            head.append("  const std::size_t n = r.path.size();")
        return head + body + ["}"]


def edge_test(at: int, edge: bytes) -> str:
    """The path bytes at `at` are `edge` (the caller knows n > at - 1)."""
    if len(edge) == 1:
        return f"n > {at} && p[{at}] == {cchar(edge[0])}"
    return f"n >= {at + len(edge)} && __builtin_memcmp(p + {at}, {cstr_bytes(edge)}, {len(edge)}) == 0"


def cstr_bytes(b: bytes) -> str:
    out = ['"']
    for x in b:
        c = chr(x)
        if c in '"\\':
            out.append("\\" + c)
        elif 32 <= x < 127:
            out.append(c)
        else:
            out.append(f"\\{x:03o}")
    out.append('"')
    return "".join(out)


def conditions(r: Route) -> str:
    parts = []
    if r.host is not None:
        if r.host_suffix:
            n = len(r.host)
            parts.append(f"r.host.size() > {n} && iequals(r.host.substr(r.host.size() - {n}), {cstr(r.host)})")
        else:
            parts.append(f"iequals(r.host, {cstr(r.host)})")
    for name, value in r.headers:
        parts.append(f"r.header({cstr(name)}) == std::string_view({cstr(value)}, {len(value.encode('utf-8'))})")
    if r.action == "RedirectHttps":
        parts.append("!r.secure")  # only plain HTTP is sent to https
    return " && ".join(parts)


# ---------------------------------------------------------------- distribute()


def emit_distribute(c: Config) -> list[str]:
    if not c.routes:
        return ["namespace {", "", "const RouteDef* distribute(const RequestHead& /*head*/) noexcept { return nullptr; }", "",
                "}  // namespace"]
    # Candidate list per juggler::Method, in enum order; Other gets only `*` routes.
    groups: dict[tuple[int, ...], list[str]] = {}
    for i, enum in enumerate(ALL_METHOD_ENUMS):
        method = METHODS[i] if i < len(METHODS) else None
        cands = tuple(r.index for r in c.routes if r.methods is None or (method is not None and method in r.methods))
        groups.setdefault(cands, []).append(enum)
    runs = Runs(c.routes)
    matchers: list[str] = []
    names: dict[tuple[int, ...], str] = {}
    for cands, enums in groups.items():
        if not cands:
            continue
        name = f"match_{len(names)}"
        names[cands] = name
        matchers.append(f"// {', '.join(enums)}: routes {', '.join(str(i) for i in cands)}")
        matchers += Matcher(name, [c.routes[i] for i in cands], c.routes, runs).emit()
        matchers.append("")
    out: list[str] = ["namespace {", "", *runs.emit(), *matchers]
    out.append("const RouteDef* distribute(const RequestHead& r) noexcept {")
    out.append("  switch (r.method) {")
    for cands, enums in groups.items():
        for enum in enums:
            out.append(f"    case Method::{enum}:")
        out.append(f"      return {names[cands]}(r);" if cands else "      return nullptr;")
    out.append("  }")
    out.append("  return nullptr;")
    out.append("}")
    out += ["", "}  // namespace"]
    return out


# ---------------------------------------------------------------- the file


def emit(c: Config, source: str, entry: str = "route_table", source_hash: str = "") -> str:
    """The generated file: the tables and distribute() with internal linkage, reached
    only through the RouteTable value that the one external function `entry` returns, so
    several tables can be linked into one program (tests) or loaded into one process."""
    tables, spans = emit_tables(c)
    lines = [
        f"// DO NOT EDIT: generated by codegen/gen_distributer.py from {source}",
        f"// Edit {source} instead; the build regenerates this file.",
        '#include "juggler/route.hpp"',
        "",
        "namespace juggler {",
        "namespace {",
        "",
        *emit_settings(c),
        "",
        *tables,
        "}  // namespace",
        "",
        *emit_distribute(c),
        "",
        *emit_sni.emit_sni(c),
        f"const RouteTable& {entry}() noexcept {{",
        "  static constexpr RouteTable table{",
        f"      .source = {cstr(source)},",
        "      .settings = kSettings,",
        f"      .listeners = {spans['kListeners']},",
        f"      .certs = {spans['kCerts']},",
        f"      .pools = {spans['kPools']},",
        f"      .servers = {spans['kServers']},",
        f"      .routes = {spans['kRoutes']},",
        "      .distribute = distribute,",
        "      .sni = sni_names::sni_route,",
        f"      .source_hash = {cstr(source_hash)},",
        *([f"      .resolves = {spans['kResolves']},"] if c.resolves else []),
        "  };",
        "  return table;",
        "}",
        "",
        "}  // namespace juggler",
        "",
        "#ifdef JUGGLER_RELOADABLE",
        "// Built as a shared object by `make reload` (tools/reload.sh): what the running",
        "// balancer looks up. JUGGLER_TABLE_ABI is the hash of juggler/route.hpp; the",
        "// balancer refuses an object built against another.",
        'extern "C" __attribute__((visibility("default"))) const char juggler_table_abi[] = JUGGLER_TABLE_ABI;',
        'extern "C" __attribute__((visibility("default"))) const juggler::RouteTable* juggler_reload_table() noexcept {',
        f"  return &juggler::{entry}();",
        "}",
        "#endif",
        "",
    ]
    return "\n".join(lines)
