"""Packaging end to end: `make install PREFIX=... DESTDIR=...` puts the balancer, its
configuration, the systemd unit, the logrotate snippet and the --help text where the prefix
says; `make deb` builds a Debian package (CPack) whose files, unpacked with dpkg -x, are the
same under /usr and /etc, and whose unit `systemd-analyze verify` accepts (skipped where
systemd-analyze is missing).

Reload on an installed system (no source tree): the installed balancer is started as the
unit's ExecStart says, its /run/juggler and /var/lib/juggler moved into a temporary folder,
and the unit's ExecReload (the installed juggler-reload) is run with RUNTIME_DIRECTORY and
STATE_DIRECTORY as systemd sets them. The balancer listens where the installed routes.def
says (0.0.0.0, on ports the kernel picks); the route a reload adds goes to a testserver on
127.0.175.1.
After the reload, STATE/reload/current.so names the table swapped in, and the balancer started
again as ExecStart says (--table-if-exists that file) serves the reloaded routes; a corrupt
current.so stops that start with a message naming it; a binary installed after the reload starts
on its own table."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import unittest

import jtest
from balancer import READY, ROUTES_BIN

BUILD = os.path.dirname(os.path.abspath(ROUTES_BIN))  # the build folder the tests run from
HOST = "127.0.175.1"   # the testserver of the route a reload adds
FRESH_PORT = 6911
# What a reload needs beside the balancer, under PREFIX/share/juggler.
SHARE_FILES = ["reload.sh", "include/juggler/route.hpp",
               *(f"codegen/{name}" for name in ("gen_distributer.py", "routesdef.py", "emit_cpp.py", "emit_sni.py"))]


def make(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["make", "-C", jtest.SOURCE_DIR, f"BUILD={BUILD}", "JOBS=2", *args],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


def unit_value(unit: str, key: str) -> str:
    match = re.search(rf"^{key}=(.*)$", unit, re.M)
    assert match, f"no {key}= in the unit"
    return match.group(1)


def get(port: int, path: str) -> jtest.RawResponse:
    with socket.create_connection((HOST, port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return jtest.read_response(f)


class Packaging(jtest.JugglerTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.tmp)

    def check_tree(self, root: str, prefix: str, etc: str) -> str:
        """The installed files under `root`; returns the unit's text."""
        binary = os.path.join(root, prefix.lstrip("/"), "bin", "juggler")
        self.assertTrue(os.access(binary, os.X_OK), binary)
        version = jtest.run_program([binary, "--version"], timeout=10)
        self.assertRegex(version.stdout, r"^juggler \d+\.\d+\.\d+ \(routes from ")
        conf = os.path.join(root, etc.lstrip("/"))
        with open(os.path.join(conf, "juggler", "routes.def")) as f, open(os.path.join(jtest.SOURCE_DIR, "routes.def")) as g:
            self.assertEqual(f.read(), g.read())
        self.assertTrue(os.path.isdir(os.path.join(conf, "juggler", "certs")))
        with open(os.path.join(conf, "logrotate.d", "juggler")) as f:
            rotate = f.read()
        self.assertIn("/var/log/juggler/access.log {", rotate)
        self.assertIn("--signal=USR1 juggler.service", rotate)
        with open(os.path.join(root, prefix.lstrip("/"), "share", "doc", "juggler", "juggler.help")) as f:
            self.assertIn("--access-log-format", f.read())
        self.assertTrue(os.access(os.path.join(root, prefix.lstrip("/"), "bin", "juggler-reload"), os.X_OK))
        for name in SHARE_FILES:
            self.assertTrue(os.path.isfile(os.path.join(root, prefix.lstrip("/"), "share", "juggler", name)), name)
        with open(os.path.join(root, prefix.lstrip("/"), "lib", "systemd", "system", "juggler.service")) as f:
            unit = f.read()
        for line in (f"ExecStart={prefix}/bin/juggler --access-log /var/log/juggler/access.log"
                     " --control /run/juggler/juggler.sock --table-if-exists /var/lib/juggler/reload/current.so",
                     f"ExecReload={prefix}/bin/juggler-reload", "RuntimeDirectory=juggler", "StateDirectory=juggler",
                     f"WorkingDirectory={etc}/juggler", "Type=simple", "Restart=on-failure",
                     "DynamicUser=yes", "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
            self.assertIn(f"\n{line}\n", unit)
        self.assertNotRegex(unit, r"@\w+@")
        return unit

    def test_make_install_with_prefix_and_destdir(self):
        make("install", "PREFIX=/opt/juggler", f"DESTDIR={self.tmp}")
        unit = self.check_tree(self.tmp, "/opt/juggler", "/opt/juggler/etc")
        # Nothing outside DESTDIR/PREFIX.
        self.assertEqual(os.listdir(self.tmp), ["opt"])
        self.check_reload(self.tmp, unit)

    def test_deb_unpacks_to_usr_and_etc(self):
        make("deb")
        (deb,) = glob.glob(os.path.join(BUILD, "package", "juggler_*.deb"))
        info = subprocess.run(["dpkg-deb", "-I", deb], capture_output=True, text=True, check=True).stdout
        self.assertRegex(info, r"Package: juggler\n")
        self.assertRegex(info, r"Depends: .*libuv1")
        self.assertRegex(info, r"\n Recommends: python3, g\+\+\n")
        conffiles = subprocess.run(["dpkg-deb", "-I", deb, "conffiles"], capture_output=True, text=True, check=True)
        self.assertEqual(conffiles.stdout.split(), ["/etc/juggler/routes.def", "/etc/logrotate.d/juggler"])
        root = os.path.join(self.tmp, "root")
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        unit = self.check_tree(root, "/usr", "/etc")
        self.assertEqual(sorted(os.listdir(root)), ["etc", "usr"])
        self.verify_unit(unit, root)

    def verify_unit(self, unit: str, root: str) -> None:
        analyze = shutil.which("systemd-analyze")
        if not analyze:
            self.skipTest("systemd-analyze is not installed: the unit was checked by its lines only")
        # verify checks that ExecStart exists: point it (and the working directory) into the
        # unpacked tree.
        unit = unit.replace("ExecStart=/usr/bin/", f"ExecStart={root}/usr/bin/")
        unit = unit.replace("ExecReload=/usr/bin/", f"ExecReload={root}/usr/bin/")
        unit = unit.replace("WorkingDirectory=/etc/", f"WorkingDirectory={root}/etc/")
        path = os.path.join(self.tmp, "juggler.service")
        with open(path, "w") as f:
            f.write(unit)
        out = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        # Any line about the unit is a mistake in it (unknown keys and bad values only warn).
        complaints = [line for line in (out.stdout + out.stderr).splitlines() if "juggler.service" in line]
        self.assertEqual((out.returncode, complaints), (0, []), out.stdout + out.stderr)

    def check_reload(self, root: str, unit: str) -> None:
        """Starts the installed balancer as the unit does, then runs the unit's ExecReload
        with a routes file that adds a route (reloaded, the route answers) and with one that
        has an error (FILE:LINE, exit 1, the balancer untouched and still serving)."""
        run = os.path.join(self.tmp, "run")        # /run/juggler (RuntimeDirectory=)
        state = os.path.join(self.tmp, "state")    # /var/lib/juggler (StateDirectory=)
        logs = os.path.join(self.tmp, "log")       # /var/log/juggler (LogsDirectory=)
        for d in (run, state, logs):
            os.mkdir(d)
        workdir = root + unit_value(unit, "WorkingDirectory")
        start = shlex.split(unit_value(unit, "ExecStart").replace("/run/juggler/", run + "/")
                            .replace("/var/log/juggler/", logs + "/").replace("/var/lib/juggler/", state + "/"))
        self.assertIn(os.path.join(state, "reload", "current.so"), start)
        # The installed routes.def listens on 0.0.0.0:80 and :443 (certs/ in the working
        # directory): ports the kernel picks instead, one cert made for the test.
        jtest.make_cert(os.path.join(workdir, "certs"), "server", "localhost", "DNS:localhost")
        argv = [root + start[0], *start[1:], "--port", "0", "--https-port", "0", "--workers", "2"]
        lb = jtest.start_process(argv, READY, cwd=workdir, name="installed juggler")
        self.addCleanup(jtest.check_stopped_cleanly, lb)
        port = int(re.search(READY, lb.output()).group(1))
        self.start_testserver(host=HOST, port=FRESH_PORT)

        reload_argv = [root + unit_value(unit, "ExecReload")]
        env = {**os.environ, "RUNTIME_DIRECTORY": run, "STATE_DIRECTORY": state}

        def reload(text: str) -> subprocess.CompletedProcess:
            routes = os.path.join(self.tmp, "routes.def")
            with open(routes, "w") as f:
                f.write(text)
            return jtest.run_program([*reload_argv, routes], timeout=180, cwd=workdir, env=env)

        with open(os.path.join(workdir, "routes.def")) as f:
            installed = f.read()
        # The same settings and listeners (a reload may not change them), one route more,
        # before the catch-all.
        fresh = (f"pool fresh round_robin\n  server {HOST}:{FRESH_PORT}\n"
                 "route GET /headers -> fresh\n")
        catch_all = re.search(r"^route\s+\*\s+/\*", installed, re.M)
        self.assertIsNotNone(catch_all, "the installed routes.def has no catch-all route")
        changed = installed[:catch_all.start()] + fresh + installed[catch_all.start():]
        # A table left by an earlier reload: pruned by the next one (it is neither the
        # current table nor the previous).
        os.makedirs(os.path.join(state, "reload"))
        stale = os.path.join(state, "reload", "routes-000000000000-0.so")
        open(stale, "w").close()
        out = reload(changed)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertFalse(os.path.exists(stale), "an old table was not pruned")
        current = os.path.join(state, "reload", "current.so")
        self.assertEqual(glob.glob(os.path.join(state, "reload", "routes-*.so")),
                         [os.path.join(state, "reload", os.readlink(current))])
        self.assertRegex(out.stdout, r"^reloaded \S+ [0-9a-f]{12} -> \S*routes\.def [0-9a-f]{12}\n")
        self.assertTrue(glob.glob(os.path.join(state, "reload", "routes-*.so")), "no table in STATE_DIRECTORY")
        r = get(port, "/headers")
        self.assertEqual((r.status, r.header("X-Server")), (200, str(FRESH_PORT)), r.body)
        self.assertTrue(r.body.startswith(b"GET /headers HTTP/1.1"), r.body)

        # A mistake on line 3 of the file: named, nothing reaches the balancer.
        broken = "\n".join(changed.splitlines()[:2] + ["route GET /x -> nowhere"] + changed.splitlines()[2:])
        out = reload(broken)
        self.assertEqual(out.returncode, 1, out.stdout + out.stderr)
        self.assertRegex(out.stderr, r"(^|/)routes\.def:3: .*nowhere")
        self.assertNotIn("reloaded", out.stdout)
        self.assertEqual(lb.output().count("reloaded "), 1, lb.output())
        r = get(port, "/headers")
        self.assertEqual((r.status, r.header("X-Server")), (200, str(FRESH_PORT)), r.body)
        self.assertEqual(get(port, "/healthz").status, 200)

        # Stopped and started again as ExecStart says: the reloaded table, not the one
        # linked in (which has no /headers route to the fresh pool).
        jtest.check_stopped_cleanly(lb)
        lb = jtest.start_process(argv, READY, cwd=workdir, name="installed juggler, restarted")
        self.addCleanup(jtest.check_stopped_cleanly, lb)
        port = int(re.search(READY, lb.output()).group(1))
        r = get(port, "/headers")
        self.assertEqual((r.status, r.header("X-Server")), (200, str(FRESH_PORT)), r.body)
        self.assertIn(f"table from {current}", lb.output())
        jtest.check_stopped_cleanly(lb)

        # A corrupt current table: the start stops, naming the file (it does not fall back
        # to the linked-in routes the operator's reload replaced).
        with open(os.path.join(state, "reload", os.readlink(current)), "wb") as f:
            f.write(b"not a shared object\n")
        out = jtest.run_program(argv, timeout=30, cwd=workdir)
        self.assertEqual(out.returncode, 2, out.stdout + out.stderr)
        self.assertIn(f"refusing to start: --table {current}:", out.stderr)

        # A binary installed after the last reload (a new package; chmod stands in for it:
        # both change the inode's ctime) starts on its own table, with a warning, and does
        # not even open the table of the reload before it.
        binary = root + start[0]
        os.chmod(binary, os.stat(binary).st_mode)
        lb = jtest.start_process(argv, READY, cwd=workdir, name="installed juggler, newer binary")
        self.addCleanup(jtest.check_stopped_cleanly, lb)
        port = int(re.search(READY, lb.output()).group(1))
        self.assertIn(f"{current} is older than this binary", lb.output())
        self.assertNotEqual(get(port, "/headers").header("X-Server"), str(FRESH_PORT))


if __name__ == "__main__":
    unittest.main()
