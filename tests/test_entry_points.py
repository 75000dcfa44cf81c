"""The programs as a newcomer starts them: under a python3 without our dependencies, in the
foreground (a ready line, a stopped line), and through the one `fluxchat` command."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

from fluxchat.runtime_env import REEXEC_MARK, installed_version, runtime_requirements, unmet
from tests.keys import identity, install_identity
from tests.lab import ProcessNode

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ("server_app.py", "ipc_app.py", "gen_id.py", "gen_rsa.py")
ENV = dict(os.environ, FLUXCHAT_KEY_PASSWORD="test-password")
ENV.pop(REEXEC_MARK, None)
ENV.pop("PYTHONPATH", None)   # as a user runs them: nothing but the script's own directory


def bare_pythons() -> list[list[str]]:
    """Interpreters that lack `cryptography` 48: ours without its site-packages, and the system's."""
    found = [[sys.executable, "-S"]]
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system:
        found.append([system])
    return found


class WithoutDependenciesTest(unittest.TestCase):
    def test_every_script_reexecutes_under_the_project_venv(self) -> None:
        for python in bare_pythons():
            for script in SCRIPTS:
                with self.subTest(python=python, script=script):
                    done = subprocess.run([*python, str(ROOT / "src" / script), "--help"], env=ENV,
                                          capture_output=True, text=True, timeout=60)
                    self.assertEqual(done.returncode, 0, done.stderr)
                    self.assertIn("usage:", done.stdout)

    def test_gen_id_computes_the_id_as_documented(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            install_identity(0, Path(tmp))
            done = subprocess.run([sys.executable, "-S", str(ROOT / "src" / "gen_id.py"), "-f",
                                   str(Path(tmp) / "public_key.pem")], env=ENV, capture_output=True,
                                  text=True, timeout=60)
        self.assertEqual((done.returncode, done.stdout.strip()), (0, identity(0).id_text), done.stderr)

    def test_a_venv_that_lacks_them_too_says_what_to_do(self) -> None:
        done = subprocess.run([sys.executable, "-S", str(ROOT / "src" / "gen_id.py"), "--help"],
                              env=dict(ENV, **{REEXEC_MARK: "1"}), capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 3)
        self.assertIn("cryptography is missing", done.stderr)
        self.assertIn("bin/setup.sh", done.stderr)
        self.assertEqual(len(done.stderr.strip().splitlines()), 1, done.stderr)

    def test_runtime_pins_are_read_up_to_the_tests_section(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "requirements.txt"
            path.write_text("# Runtime\ncryptography==48.0.0\n# a comment\nsqlcipher3==0.6.4  # why\n"
                            "# Tests and measurement\ncoverage==7.17.4\n")
            pins = runtime_requirements(path)
        self.assertEqual(pins, [("cryptography", "48.0.0"), ("sqlcipher3", "0.6.4")])
        self.assertEqual(unmet([("cryptography", "0.0.1"), ("no-such-package-here", "1")]),
                         [f"cryptography is {unmet_version()}, not 0.0.1", "no-such-package-here is missing"])
        self.assertEqual(unmet(runtime_requirements(ROOT / "requirements.txt")), [])

    def test_installed_versions_agree_with_importlib_metadata(self) -> None:
        from importlib import metadata
        names = [line.split("==")[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
                 if "==" in line and not line.startswith("#")]
        for name in [*names, "pip", "Typing.Extensions", "no-such-package-here"]:
            try:
                expected: str | None = metadata.version(name)
            except metadata.PackageNotFoundError:
                expected = None
            self.assertEqual(installed_version(name), expected, name)

    def test_the_version_check_stays_light(self) -> None:
        """importlib.metadata would load email, zipfile and csv into every node (bench/rss.py)."""
        code = ("import sys, fluxchat.runtime_env\n"
                "print(sorted({'email', 'zipfile', 'importlib.metadata'} & set(sys.modules)))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
        self.assertEqual(done.stdout.strip(), "[]")


def unmet_version() -> str:
    from importlib.metadata import version
    return version("cryptography")


class ForegroundTest(unittest.TestCase):
    def test_ready_line_then_stopped_line(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            node = ProcessNode(Path(tmp), 0, [])
            proc = subprocess.Popen([sys.executable, str(ROOT / "src" / "server_app.py"), "-c",
                                     str(node.config_path)], env=ENV, stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            assert proc.stdout is not None
            stdout = proc.stdout
            self.addCleanup(stdout.close)
            self.addCleanup(lambda: proc.poll() is None and proc.kill())
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True)
            reader.start()
            ready = lines.get(timeout=30)
            self.assertIn(f"FluxChat node {identity(0).id_text} ready: peers on 127.0.0.1:", ready)
            self.assertIn("local API on 127.0.0.1:", ready)
            self.assertIn("joined the network", lines.get(timeout=30))
            proc.send_signal(signal.SIGINT)
            self.assertEqual(proc.wait(10), 0)
            self.assertEqual(lines.get(timeout=5).strip(), f"FluxChat node {identity(0).id_text} stopped")
            reader.join(5)


class ConsoleCommandTest(unittest.TestCase):
    def test_one_command_for_the_node_the_id_and_the_client(self) -> None:
        code = "import sys, ipc_app; sys.argv[0] = 'fluxchat'; ipc_app.console()"
        for argv, expected in ((["node", "--help"], "Run a FluxChat node"),
                               (["node-id", "--help"], "node ID of an RSA public key"),
                               (["keygen", "--help"], "usage:"),
                               (["--help"], "Talk to a running FluxChat node")):
            with self.subTest(argv=argv):
                done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                                      timeout=60, env=dict(ENV, PYTHONPATH=str(ROOT / "src")))
                self.assertEqual(done.returncode, 0, done.stderr)
                self.assertIn(expected, done.stdout)

    def test_a_node_started_by_the_command_runs_lean(self) -> None:
        """`fluxchat node` starts itself again with the options of src/server_app.py
        (fluxchat/process_env.py), under the pid it was started with."""
        code = "import sys, ipc_app; sys.argv[0] = 'fluxchat'; ipc_app.console()"
        with tempfile.TemporaryDirectory() as tmp:
            node = ProcessNode(Path(tmp), 0, [])
            proc = subprocess.Popen([sys.executable, "-c", code, "node", "-c", str(node.config_path)],
                                    env=dict(ENV, PYTHONPATH=str(ROOT / "src")), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.addCleanup(lambda: proc.poll() is None and proc.kill())
            runtime = node.data_dir / "runtime.json"
            deadline = time.monotonic() + 30
            while not runtime.exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(json.loads(runtime.read_text())["pid"], proc.pid)
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
            self.assertEqual(cmdline[1:5], [b"-OO", b"-X", b"no_debug_ranges", b"-c"])
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(10), 0)


if __name__ == "__main__":
    unittest.main()
