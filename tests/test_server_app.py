"""src/server_app.py as a process: start, single instance, signals, clear start-up errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from tests.keys import identity
from tests.lab import SERVER_APP, WAIT, ProcessNode

ENV = dict(os.environ, FLUXCHAT_KEY_PASSWORD="test-password")


def run_app(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SERVER_APP), "-c", str(config)], env=env,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


class ServerAppTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.addCleanup(self._tmp.cleanup)

    def test_runs_refuses_a_second_instance_and_stops_on_sigterm(self) -> None:
        node = ProcessNode(self.dir, 0, [])
        node.start()
        self.addCleanup(node.stop)
        pidfile = node.data_dir / "server.pid"
        self.assertEqual(int(pidfile.read_text()), node.proc.pid if node.proc else -1)
        self.assertEqual(node.call("info")["id"], identity(0).id_text)
        second = run_app(node.config_path, ENV)
        self.assertEqual(second.returncode, 1)
        self.assertIn("another node", second.stderr)
        self.assertEqual(len(second.stderr.strip().splitlines()), 1)
        started = time.monotonic()
        self.assertEqual(node.stop(signal.SIGTERM), 0)
        self.assertLess(time.monotonic() - started, 2.5)
        self.assertFalse(pidfile.exists())
        self.assertFalse((node.data_dir / "runtime.json").exists())

    def test_runs_as_a_lean_node_process(self) -> None:
        """fluxchat/process_env.py: the process started again, under the pid it was started
        with, with glibc's mmap threshold fixed in its environment, cryptography's legacy
        provider off, and without docstrings and column ranges (-OO, -X no_debug_ranges)."""
        node = ProcessNode(self.dir, 5, [])
        node.start()
        self.addCleanup(node.stop)
        assert node.proc is not None
        environ = Path(f"/proc/{node.proc.pid}/environ").read_bytes().split(b"\0")
        if os.confstr("CS_GNU_LIBC_VERSION"):
            self.assertIn(b"GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072", environ)
        self.assertIn(b"CRYPTOGRAPHY_OPENSSL_NO_LEGACY=1", environ)
        cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes().split(b"\0")
        self.assertEqual(cmdline[1:5], [b"-OO", b"-X", b"no_debug_ranges", str(SERVER_APP).encode()])
        self.assertEqual(node.call("info")["id"], identity(5).id_text)

    def test_stale_pid_file_is_taken_over(self) -> None:
        node = ProcessNode(self.dir, 1, [])
        (node.data_dir / "server.pid").write_text("999999\n")
        node.start()
        self.addCleanup(node.stop)
        self.assertEqual(node.call("info")["id"], identity(1).id_text)

    def test_wrong_password_is_one_line_and_exit_2(self) -> None:
        node = ProcessNode(self.dir, 2, [])
        result = run_app(node.config_path, dict(ENV, FLUXCHAT_KEY_PASSWORD="wrong"))
        self.assertEqual(result.returncode, 2)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertIn("wrong key password", result.stderr)
        self.assertNotIn("Traceback", result.stderr)

    def test_password_file_and_missing_password(self) -> None:
        node = ProcessNode(self.dir, 3, [])
        env = {k: v for k, v in ENV.items() if k != "FLUXCHAT_KEY_PASSWORD"}
        missing = run_app(node.config_path, env)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("FLUXCHAT_KEY_PASSWORD", missing.stderr)
        secret = self.dir / "pw"
        secret.write_text("wrong\n")
        bad = run_app(node.config_path, dict(env, FLUXCHAT_KEY_PASSWORD_FILE=str(secret)))
        self.assertIn("wrong key password", bad.stderr)

    def test_config_errors_and_id_mismatch(self) -> None:
        node = ProcessNode(self.dir, 4, [])
        config = json.loads(node.config_path.read_text())
        config["id"] = identity(5).id_text
        node.config_path.write_text(json.dumps(config))
        mismatch = run_app(node.config_path, ENV)
        self.assertEqual(mismatch.returncode, 2)
        self.assertIn("belongs to " + identity(4).id_text, mismatch.stderr)
        node.config_path.write_text('{"ipc": {"port": "abc"}}')
        bad = run_app(node.config_path, ENV)
        self.assertEqual(bad.returncode, 2)
        self.assertIn('ipc.port: expected 0..65535, got "abc"', bad.stderr)
        missing = run_app(self.dir / "nope.json", ENV)
        self.assertEqual(missing.returncode, 2)
        self.assertIn("no such file", missing.stderr)

    def test_port_in_use_is_one_clear_line(self) -> None:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            node = ProcessNode(self.dir, 7, [], {"port": busy.getsockname()[1],
                                                 "log": {"file": str(self.dir / "7.log")}})
            result = run_app(node.config_path, ENV)
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot listen for peers on 127.0.0.1:", result.stderr)
        self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
        self.assertFalse((node.data_dir / "server.pid").exists())

    def test_logs_go_to_the_log_file_without_secrets(self) -> None:
        node = ProcessNode(self.dir, 6, [], {"log": {"file": str(self.dir / "node.log")}})
        proc = subprocess.Popen([sys.executable, str(SERVER_APP), "-c", str(node.config_path)],
                                env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        runtime = node.data_dir / "runtime.json"
        deadline = time.monotonic() + WAIT
        while not runtime.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        token = (node.data_dir / "ipc.token").read_text().strip()
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(WAIT), 0)
        self.assertFalse((node.data_dir / "ipc.token").exists())
        log = (self.dir / "node.log").read_text()
        self.assertIn("listening for peers", log)
        self.assertIn("node stopped", log)
        for secret in ("test-password", token, "PRIVATE KEY"):
            self.assertNotIn(secret, log)
        self.assertEqual(os.stat(self.dir / "node.log").st_mode & 0o777, 0o600)


if __name__ == "__main__":
    unittest.main()
