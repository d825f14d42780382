#!/usr/bin/python3
"""The `sacgate` command line: `--version`, `sacgate SUB --help` for every subcommand (its own
flags, exit 0), and every subcommand refusing unknown flags and stray arguments with exit 2 and a
message naming them. No gateway is started: nothing here gets as far as running a tier."""

import re
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
import sgtest  # noqa: E402

# subcommand -> flags its --help must list (its own, not another command's)
COMMANDS = {
    "all": ["--data-dir", "--mqtt-port", "--ws-port", "--admin-port", "--admin-bind", "--shard-count", "--sync",
            "--log-level"],
    "store": ["--name", "--bind", "--data-dir", "--sync", "--shards", "--health-port", "--log-level"],
    "router": ["--name", "--bind", "--shards", "--health-port", "--log-level"],
    "frontend": ["--name", "--bind", "--mqtt-port", "--ws-port", "--cert", "--key", "--threads", "--routers", "--health-port"],
    "admin": ["--bind", "--admin-port", "--tokens", "--routers", "--log-level"],
    "init": ["--data-dir", "--names"],
    "token": ["--device", "--key", "--host", "--ttl"],
}
# flags that belong to another command, which the given one must not offer
FOREIGN = {"all": "--tokens", "store": "--mqtt-port", "router": "--cert", "frontend": "--tokens",
           "admin": "--mqtt-port", "init": "--device", "token": "--data-dir"}


def run(*args, timeout=20):
    return subprocess.run([sgtest.BIN] + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


class CliTest(unittest.TestCase):

    def test_version(self):
        with open(sgtest.os.path.join(sgtest.REPO, "CMakeLists.txt")) as f:
            version = re.search(r"project\(sacgate VERSION ([0-9.]+)", f.read()).group(1)
        r = run("--version")
        self.assertEqual(r.returncode, 0, r)
        self.assertEqual(r.stdout.strip(), "sacgate " + version)

    def test_top_level_help(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0, r)
        for cmd in COMMANDS:
            self.assertRegex(r.stdout, r"(?m)^  %s\b" % cmd)
        self.assertIn("--version", r.stdout)
        r = run()
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("usage: sacgate", r.stderr)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("unknown command 'frobnicate'", r.stderr)

    def test_subcommand_help(self):
        for cmd, flags in COMMANDS.items():
            for asked in ("--help", "-h"):
                with self.subTest(cmd=cmd, flag=asked):
                    r = run(cmd, asked)
                    self.assertEqual(r.returncode, 0, r)
                    self.assertTrue(r.stdout.startswith("usage: sacgate %s " % cmd), r.stdout[:200])
                    listed = set(re.findall(r"(?m)^  (--[a-z-]+)", r.stdout))
                    for f in flags:
                        self.assertIn(f, listed, "sacgate %s --help does not list %s" % (cmd, f))
                    self.assertNotIn(FOREIGN[cmd], listed, "sacgate %s --help lists another command's flag" % cmd)
                    self.assertEqual(r.stderr, "")
        # help also after other flags, and never starts anything
        r = run("all", "--data-dir", "/nonexistent/x", "--help")
        self.assertEqual(r.returncode, 0, r)
        # the tiers list the configuration keys they read; `all` reads them all
        r = run("admin", "--help")
        self.assertIn("admin.max_body", r.stdout)
        self.assertNotIn("store.sync", r.stdout)
        self.assertIn("store.sync", run("all", "--help").stdout)

    def test_unknown_flags_are_refused(self):
        for cmd in COMMANDS:
            with self.subTest(cmd=cmd):
                r = run(cmd, "--no-such-flag", "1")
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("unknown flag '--no-such-flag' for '%s'" % cmd, r.stderr)
                self.assertIn("sacgate %s --help" % cmd, r.stderr)
                r = run(cmd, "--no-such-flag=1")
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("'--no-such-flag'", r.stderr)
                r = run(cmd, FOREIGN[cmd], "x")
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("unknown flag '%s'" % FOREIGN[cmd], r.stderr)
                r = run(cmd, "stray")
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("unexpected argument 'stray'", r.stderr)
                r = run(cmd, COMMANDS[cmd][0])
                self.assertEqual(r.returncode, 2, r)
                self.assertIn("%s needs a value" % COMMANDS[cmd][0], r.stderr)

    def test_tools_still_work(self):
        r = run("token", "--device", "valve-7", "--key", "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd28=", "--ttl", "60")
        self.assertEqual(r.returncode, 0, r)
        self.assertRegex(r.stdout, r"^SharedAccessSignature sr=localhost%2Fdevices%2Fvalve-7&sig=[^&]+&se=\d+\n$")
        r = run("token", "--device", "valve-7")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("token needs --device ID --key BASE64", r.stderr)
        r = run("init")
        self.assertEqual(r.returncode, 2, r)
        self.assertIn("init needs --data-dir", r.stderr)


if __name__ == "__main__":
    sgtest.main()
