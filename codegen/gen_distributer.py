#!/usr/bin/env python3
"""Compile a routes file into the C++ dispatch table (generated/distributer.cpp).

    python3 codegen/gen_distributer.py ROUTES_FILE -o OUTPUT_CPP
    python3 codegen/gen_distributer.py ROUTES_FILE --check
    python3 codegen/gen_distributer.py ROUTES_FILE -o OUTPUT_CPP --entry NAME

The output defines one external function, `const juggler::RouteTable& NAME()`
(route_table unless --entry says otherwise); distribute() is reached through
the table's `distribute` pointer.

Every problem is reported as `FILE:LINE: message` on stderr and the exit status
is 1; the output file is then neither written nor touched. The output is
written to a temporary file beside it and renamed into place, so a reader never
sees half a file. --check validates only: silent and exit 0 when the file is good.
The reference of the language is docs/routes-reference.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
from pathlib import Path

CODEGEN_DIR = Path(__file__).resolve().parent
REPO_ROOT = CODEGEN_DIR.parent
if str(CODEGEN_DIR) not in sys.path:
    sys.path.insert(0, str(CODEGEN_DIR))

import emit_cpp  # noqa: E402
import routesdef  # noqa: E402

PROG = "gen_distributer.py"


def display_path(path: str) -> str:
    """The path relative to the repository root when the file is inside it (so the
    output does not depend on where the repository or the build lives), else as given."""
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path


def write_atomically(output: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(output))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(output) + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, output)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description="Compile a routes file into generated/distributer.cpp.")
    ap.add_argument("routes", help="the routes file, e.g. routes.def")
    ap.add_argument("-o", "--output", help="the C++ file to write, e.g. generated/distributer.cpp")
    ap.add_argument("--entry", default="route_table", metavar="NAME",
                    help="name of the function that returns the table (default route_table)")
    ap.add_argument("--check", action="store_true", help="validate only: print nothing and write nothing when valid")
    args = ap.parse_args(argv)
    if not args.check and not args.output:
        ap.error("give -o OUTPUT_CPP, or --check")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.entry):
        ap.error(f"--entry {args.entry!r} is not a C++ identifier")

    shown = display_path(args.routes)
    try:
        data = Path(args.routes).read_bytes()
    except OSError as e:
        print(f"{PROG}: cannot read {args.routes}: {e.strerror}", file=sys.stderr)
        return 1
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        print(f"{shown}:{line}: the file is not valid UTF-8", file=sys.stderr)
        return 1

    config, errors = routesdef.parse(text)
    if errors:
        for line, message in errors:
            print(f"{shown}:{line}: {message}", file=sys.stderr)
        return 1
    if args.check:
        return 0

    cpp = emit_cpp.emit(config, shown, args.entry, hashlib.sha256(data).hexdigest()[:12])
    try:
        write_atomically(args.output, cpp)
    except OSError as e:
        print(f"{PROG}: cannot write {args.output}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
