"""C++ emitter of `route sni` (SNI pass-through): the RouteTable's sni() function,
compiled like the host= conditions of emit_cpp.py (whose emit() calls emit_sni())."""

from __future__ import annotations

from dataclasses import dataclass

import emit_cpp
from routesdef import Config


@dataclass
class SniName:
    """An exact `route sni NAME`, shaped for emit_host_switch (which returns `ret`)."""
    host: str
    line: int
    ret: str


def emit_sni(c: Config) -> list[str]:
    """sni_route(): exact names through a host switch (a switch on the length, then a trie of
    case-folded bytes, as for host= routes); then the *.DOMAIN suffixes, longest first; then
    the `*` default. No lookup table, no allocation."""
    exact = [SniName(host=r.name, line=r.line, ret=f"return {r.pool_index};  // line {r.line}")
             for r in c.sni_routes if not r.suffix and r.name != "*"]
    suffixes = sorted((r for r in c.sni_routes if r.suffix), key=lambda r: (-len(r.name.encode()), r.line))
    default = next((r for r in c.sni_routes if r.name == "*"), None)
    # A namespace of its own: its fold() is not the one of the host= switches.
    out = ["namespace {", "namespace sni_names {", ""]
    param = "h" if exact or suffixes else "/*h*/"
    if exact:
        out += ["constexpr char fold(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }",
                ""]
        out += emit_cpp.emit_host_switch("sni_exact", exact, rtype="int", none="-1")
    out.append(f"int sni_route(std::string_view {param}) noexcept {{")
    if exact:
        out.append("  if (const int p = sni_exact(h); p >= 0) return p;")
    for r in suffixes:
        n = len(r.name.encode())
        out.append(f"  if (h.size() > {n} && iequals(h.substr(h.size() - {n}), {emit_cpp.cstr(r.name)})) "
                   f"return {r.pool_index};  // line {r.line}")
    out.append(f"  return {default.pool_index};  // line {default.line}" if default else "  return -1;")
    out += ["}", "", "}  // namespace sni_names", "}  // namespace", ""]
    return out
