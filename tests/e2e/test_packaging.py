"""Packaging end to end: `make install PREFIX=... DESTDIR=...` puts the balancer, its
configuration, the systemd unit, the logrotate snippet and the --help text where the prefix
says; `make deb` builds a Debian package (CPack) whose files, unpacked with dpkg -x, are the
same under /usr and /etc, and whose unit `systemd-analyze verify` accepts (skipped where
systemd-analyze is missing)."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import unittest

import jtest
from balancer import ROUTES_BIN

BUILD = os.path.dirname(os.path.abspath(ROUTES_BIN))  # the build folder the tests run from


def make(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(["make", "-C", jtest.SOURCE_DIR, f"BUILD={BUILD}", "JOBS=2", *args],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out


class Packaging(unittest.TestCase):
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
        with open(os.path.join(root, prefix.lstrip("/"), "lib", "systemd", "system", "juggler.service")) as f:
            unit = f.read()
        for line in (f"ExecStart={prefix}/bin/juggler --access-log /var/log/juggler/access.log",
                     f"WorkingDirectory={etc}/juggler", "Type=simple", "Restart=on-failure",
                     "AmbientCapabilities=CAP_NET_BIND_SERVICE"):
            self.assertIn(f"\n{line}\n", unit)
        self.assertNotRegex(unit, r"@\w+@")
        return unit

    def test_make_install_with_prefix_and_destdir(self):
        make("install", "PREFIX=/opt/juggler", f"DESTDIR={self.tmp}")
        self.check_tree(self.tmp, "/opt/juggler", "/opt/juggler/etc")
        # Nothing outside DESTDIR/PREFIX.
        self.assertEqual(os.listdir(self.tmp), ["opt"])

    def test_deb_unpacks_to_usr_and_etc(self):
        make("deb")
        (deb,) = glob.glob(os.path.join(BUILD, "package", "juggler_*.deb"))
        info = subprocess.run(["dpkg-deb", "-I", deb], capture_output=True, text=True, check=True).stdout
        self.assertRegex(info, r"Package: juggler\n")
        self.assertRegex(info, r"Depends: .*libuv1")
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
        unit = unit.replace("WorkingDirectory=/etc/", f"WorkingDirectory={root}/etc/")
        path = os.path.join(self.tmp, "juggler.service")
        with open(path, "w") as f:
            f.write(unit)
        out = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
        # Any line about the unit is a mistake in it (unknown keys and bad values only warn).
        complaints = [line for line in (out.stdout + out.stderr).splitlines() if "juggler.service" in line]
        self.assertEqual((out.returncode, complaints), (0, []), out.stdout + out.stderr)


if __name__ == "__main__":
    unittest.main()
