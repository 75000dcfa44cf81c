"""The bin/ scripts as a newcomer meets them: --help everywhere (and nothing else happens), start
reports only once the node answers or has died, stop is one clear line, the systemd unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from fluxchat.errors import IdentityError
from fluxchat.password import choose_password
from tests.keys import TEST_PASSWORD, identity
from tests.lab import write_config

ROOT = Path(__file__).resolve().parent.parent
BASH = shutil.which("bash") or "/bin/bash"
SCRIPTS = ("setup.sh", "start.sh", "stop.sh", "install-service.sh", "demo.sh", "tests.sh")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("FLUXCHAT_")}


def script(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BASH, str(ROOT / "bin" / name), *args], env=dict(ENV, **env), capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, cwd=ROOT)


def tree() -> set[Path]:
    return {p for p in ROOT.rglob("*") if ".venv" not in p.parts and "__pycache__" not in p.parts
            and ".hypothesis" not in p.parts and not p.name.startswith(".coverage")}


@unittest.skipUnless((ROOT / ".venv" / "bin" / "python").exists(), "run through bin/tests.sh (needs .venv)")
class ScriptsTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def test_every_script_has_help_and_it_changes_nothing(self) -> None:
        before = tree()
        for name in SCRIPTS:
            with self.subTest(name):
                done = script(name, "--help")
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertIn(f"usage: bin/{name}", done.stdout)
        self.assertEqual(tree() - before, set())

    def test_unknown_options_are_usage_errors(self) -> None:
        for name in ("setup.sh", "start.sh", "stop.sh", "install-service.sh"):
            with self.subTest(name):
                done = script(name, "--nope")
                self.assertEqual(done.returncode, 2, done.stderr)
                self.assertIn("usage:", done.stderr)

    def test_stop_without_a_config_or_a_node_is_one_line(self) -> None:
        missing = script("stop.sh", str(self.dir / "nope.json"))
        self.assertEqual(missing.returncode, 3)
        self.assertEqual(len(missing.stderr.strip().splitlines()), 1, missing.stderr)
        self.assertIn("no such file", missing.stderr)
        config = write_config(self.dir, 3, [])
        idle = script("stop.sh", str(config))
        self.assertEqual(idle.returncode, 0, idle.stderr)
        self.assertIn("is not running", idle.stdout)

    def test_start_reports_a_node_that_dies_then_one_that_runs(self) -> None:
        config = write_config(self.dir, 4, [])
        wrong = script("start.sh", str(config), FLUXCHAT_KEY_PASSWORD="wrong")
        self.assertEqual(wrong.returncode, 1, wrong.stdout)
        self.assertIn("the node exited", wrong.stderr)
        self.assertIn("wrong key password", wrong.stderr)
        self.assertEqual(list(self.dir.glob("*.stderr")), [])
        started = script("start.sh", str(config), FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD)
        try:
            self.assertEqual(started.returncode, 0, started.stderr)
            self.assertIn("node running with pid", started.stdout)
            self.assertIn(identity(4).id_text, started.stdout)
        finally:
            stopped = script("stop.sh", str(config))
        self.assertEqual(stopped.returncode, 0, stopped.stderr)
        self.assertIn("stopped", stopped.stdout)

    def test_start_without_a_password_and_without_a_terminal_says_so(self) -> None:
        config = write_config(self.dir, 5, [])
        done = script("start.sh", str(config))
        self.assertEqual(done.returncode, 2)
        self.assertIn("FLUXCHAT_KEY_PASSWORD", done.stderr)

    def test_systemd_user_unit(self) -> None:
        config = write_config(self.dir, 6, [])
        secret = self.dir / "password"
        secret.write_text(TEST_PASSWORD + "\n")
        secret.chmod(0o600)
        no_password = script("install-service.sh", "--print", str(config))
        self.assertEqual(no_password.returncode, 2)
        self.assertIn("FLUXCHAT_KEY_PASSWORD_FILE", no_password.stderr)
        printed = script("install-service.sh", "--print", str(config), FLUXCHAT_KEY_PASSWORD_FILE=str(secret))
        self.assertEqual(printed.returncode, 0, printed.stderr)
        unit = printed.stdout
        self.assertIn(f"ExecStart={ROOT}/.venv/bin/python {ROOT}/src/server_app.py -c {config}", unit)
        self.assertIn(f"Environment=FLUXCHAT_KEY_PASSWORD_FILE={secret}", unit)
        self.assertIn("RestartPreventExitStatus=2", unit)
        self.assertIn("WantedBy=default.target", unit)
        written = script("install-service.sh", str(config), FLUXCHAT_KEY_PASSWORD_FILE=str(secret),
                         XDG_CONFIG_HOME=str(self.dir / "xdg"))
        self.assertEqual(written.returncode, 0, written.stderr)
        path = self.dir / "xdg" / "systemd" / "user" / f"fluxchat-{config.stem}.service"
        self.assertEqual(path.read_text().strip(), unit.strip())


if __name__ == "__main__":
    unittest.main()


class ChoosePasswordTest(unittest.TestCase):
    def choose(self, *typed: str) -> tuple[str | None, list[str]]:
        answers, said = iter(typed), []
        try:
            return choose_password(lambda prompt: next(answers), said.append), said
        except IdentityError:
            return None, said

    def test_short_passwords_and_slips_are_asked_again(self) -> None:
        chosen, said = self.choose("abc", "long enough pw", "long enough pv", "long enough pw", "long enough pw")
        self.assertEqual(chosen, "long enough pw")
        self.assertEqual(len(said), 2)
        self.assertIn("at least 10", said[0])
        self.assertIn("differ", said[1])

    def test_three_failures_give_up_clearly(self) -> None:
        chosen, said = self.choose("a", "b", "c")
        self.assertIsNone(chosen)
        self.assertEqual(len(said), 3)
