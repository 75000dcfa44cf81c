"""bin/setup.sh end to end in a temporary copy of the project (RSA-2048 to stay fast)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BASH = shutil.which("bash") or "/bin/bash"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@unittest.skipUnless((VENV / "bin" / "python").exists(), "run through bin/tests.sh (needs .venv)")
class SetupScriptTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls._tmp = tempfile.TemporaryDirectory()
        cls.root = Path(cls._tmp.name) / "fluxchat"
        cls.root.mkdir()
        for name in ("bin", "src"):
            shutil.copytree(ROOT / name, cls.root / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("config-example.json", "requirements.txt"):
            shutil.copy(ROOT / name, cls.root / name)
        (cls.root / ".venv").symlink_to(VENV)   # the venv is not what is under test here

    @classmethod
    def tearDownClass(cls) -> None:
        cls._tmp.cleanup()

    def run_setup(self, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FLUXCHAT_")}
        base.update(FLUXCHAT_KEY_BITS="2048", FLUXCHAT_KEY_DERIVATION_ITERATIONS="2000")
        base.update(env)
        return subprocess.run([BASH, str(self.root / "bin" / "setup.sh")], env=base,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=120)

    def test_first_node_second_run_and_second_node(self) -> None:
        first = self.run_setup(FLUXCHAT_KEY_PASSWORD="pw-one")
        self.assertEqual(first.returncode, 0, first.stderr)
        node_id = first.stdout.strip().splitlines()[-1]
        data = self.root / "var" / "data1"
        config_path = self.root / "var" / "config1.json"
        self.assertEqual(mode(data), 0o700)
        for name in ("private_key.pem", "public_key.pem", "certificate.pem", "bootstrap.json"):
            self.assertEqual(mode(data / name), 0o600, name)
        self.assertEqual(mode(config_path), 0o600)
        config = json.loads(config_path.read_text())
        self.assertEqual(config["id"], node_id)
        self.assertEqual((config["port"], config["ipc"]["port"]), (25001, 26001))
        self.assertEqual(json.loads((data / "bootstrap.json").read_text()), [])
        derived = subprocess.run([str(VENV / "bin" / "python"), str(self.root / "src" / "gen_id.py"),
                                  "-f", str(data / "public_key.pem")],
                                 capture_output=True, text=True, check=True).stdout.strip()
        self.assertEqual(derived, node_id)
        if shutil.which("openssl"):
            opened = subprocess.run(["openssl", "pkey", "-in", str(data / "private_key.pem"),
                                     "-passin", "pass:pw-one", "-noout"], capture_output=True)
            self.assertEqual(opened.returncode, 0)

        before = {p: p.stat().st_mtime_ns for p in (self.root / "var").rglob("*")}
        again = self.run_setup(FLUXCHAT_KEY_PASSWORD="pw-one")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("nothing to do", again.stderr)
        self.assertEqual(again.stdout.strip(), node_id)
        self.assertEqual(before, {p: p.stat().st_mtime_ns for p in (self.root / "var").rglob("*")})

        second = self.run_setup(FLUXCHAT_CONFIG="var/config2.json", FLUXCHAT_PORT="25002",
                                FLUXCHAT_DATA_DIR="var/data2", FLUXCHAT_IPC_PORT="26002",
                                FLUXCHAT_BOOTSTRAP="127.0.0.1:25001, 192.0.2.5:25001",
                                FLUXCHAT_KEY_PASSWORD="pw-two")
        self.assertEqual(second.returncode, 0, second.stderr)
        config2 = json.loads((self.root / "var" / "config2.json").read_text())
        self.assertEqual((config2["port"], config2["ipc"]["port"]), (25002, 26002))
        self.assertNotEqual(config2["id"], node_id)
        self.assertEqual(json.loads((self.root / "var" / "data2" / "bootstrap.json").read_text()),
                         ["127.0.0.1:25001", "192.0.2.5:25001"])

    def test_no_password_without_terminal_is_a_clear_error(self) -> None:
        result = self.run_setup(FLUXCHAT_DATA_DIR="var/nopw", FLUXCHAT_CONFIG="var/nopw.json")
        self.assertEqual(result.returncode, 2)
        self.assertIn("FLUXCHAT_KEY_PASSWORD is not set", result.stderr)
        self.assertFalse((self.root / "var" / "nopw.json").exists())

    def test_missing_envsubst_names_the_package(self) -> None:
        tools = Path(self._tmp.name) / "tools"
        tools.mkdir(exist_ok=True)
        for tool in ("dirname", "python3"):
            target = tools / tool
            if not target.exists():
                target.symlink_to(shutil.which(tool) or tool)
        result = self.run_setup(PATH=str(tools), FLUXCHAT_KEY_PASSWORD="x")
        self.assertEqual(result.returncode, 3)
        self.assertIn("gettext-base", result.stderr)


if __name__ == "__main__":
    unittest.main()
