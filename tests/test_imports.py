"""What a node process imports: heavy packages a running node does not need stay out of it.

Each one costs every node process memory (bench/rss.py measures it): cryptography.x509 about
4 MiB, importlib.metadata with email and zipfile 1.8 MiB, aiohttp several. They are loaded
where they are used (the web app, a backup, a misspelled config, a password prompt), never at
start. What a node runs before it serves counts too: parsing its arguments (argparse's own help
formatter would bring shutil with bz2 and lzma, 0.5 MiB) and opening its log file
(logging.handlers would bring pickle and queue, 0.6 MiB), and loading its mail prekeys
(cryptography's ML-KEM constructors would build its OpenSSL backend object, 0.46 MiB). Keys are
encoded and loaded without cryptography's serialization package (its OpenSSH formats, 0.6 MiB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEPT_OUT = {"cryptography.x509", "aiohttp", "importlib.metadata", "email", "zipfile", "difflib",
            "fluxchat.backup", "fluxchat.vault_admin", "fluxchat.web",
            "shutil", "bz2", "lzma", "logging.handlers", "pickle", "getpass", "uuid", "platform",
            "cryptography.hazmat.backends.openssl.backend",
            "cryptography.hazmat.primitives.serialization"}


def loaded_by(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    # Not under coverage (bin/tests.sh starts it in every subprocess): it imports pickle, uuid...
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env=dict(env, PYTHONPATH=str(ROOT / "src")))
    return set(json.loads(done.stdout))


class ImportsTest(unittest.TestCase):
    def test_a_node_loads_only_what_it_runs(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            log = Path(tmp) / "node.log"
            loaded = loaded_by(
                "import logging, server_app, fluxchat.node\n"
                "from pathlib import Path\n"
                "args = server_app.parse_args(['-c', 'config.json', '-l', 'info'])\n"
                f"server_app.setup_logging(args.log_level, Path({str(log)!r}), False)\n"
                "logging.getLogger('fluxchat.test').info('logged')\n"
                "import os\n"
                "from fluxchat.mailkeys import SECRET_BYTES, MailKeySecrets, prekey_public\n"
                "secrets = MailKeySecrets(os.urandom(SECRET_BYTES))\n"
                "secrets.prekey_private(), prekey_public(secrets.public_halves()[1])")
            self.assertIn("logged", log.read_text())   # the probe did parse and log to the file
        self.assertIn("fluxchat.node", loaded)   # the probe did import the node
        self.assertEqual(loaded & KEPT_OUT, set())

    def test_a_node_forgets_the_command_line_parser_once_used(self) -> None:
        """server_app.main drops argparse and gettext after reading its arguments: nothing else
        holds them, so they are freed (0.3 MiB), not only taken out of sys.modules."""
        probe = ("import json, sys, weakref, server_app\n"
                 "args = server_app.parse_args(['-c', 'config.json'])\n"
                 "held = [weakref.ref(next(v for v in vars(sys.modules[name]).values() if isinstance(v, type)))\n"
                 "        for name in server_app.START_ONLY_MODULES]   # a class of each: it lives as its module does\n"
                 "del args\n"
                 "server_app.forget_start_modules()\n"
                 "print(json.dumps([ref() is not None for ref in held]))")
        env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS_")}
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              env=dict(env, PYTHONPATH=str(ROOT / "src")))
        self.assertEqual(json.loads(done.stdout), [False, False])

    def test_the_command_line_stays_small(self) -> None:
        loaded = loaded_by("import ipc_app")
        self.assertEqual(loaded & (KEPT_OUT | {"asyncio", "sqlcipher3", "fluxchat.node"}), set())


    def test_the_sqlcipher_check_tells_which_openssl_a_node_maps(self) -> None:
        """bin/build-sqlcipher.sh --check (ldd) agrees with what the interpreter really maps: with
        the system OpenSSL the SQLCipher module brings libcrypto.so, with the wheel it does not."""
        check = subprocess.run([str(ROOT / "bin" / "build-sqlcipher.sh"), "--check"],
                               capture_output=True, text=True)
        probe = "import sqlcipher3\nprint(any('libcrypto.so' in line for line in open('/proc/self/maps')))"
        maps = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                              env={k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")})
        self.assertIn(check.returncode, (0, 1), check.stderr)
        self.assertEqual(check.returncode == 0, maps.stdout.strip() == "True", check.stdout)


if __name__ == "__main__":
    unittest.main()
