"""Real node processes: nothing readable at rest, backup and restore, password change."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

from tests.keys import TEST_PASSWORD, identity
from tests.lab import SERVER_APP, ProcessNode
from tests.test_vault import files_containing

IPC_APP = SERVER_APP.with_name("ipc_app.py")
MARKERS = ("OKAPI-SUBJECT-4411", "OKAPI-BODY-9083", "OKAPI-REPLY-2270", "OKAPI-ALIAS-5512")


def run(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=dict(os.environ, **env))


def wait_for(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)
    return result


class VaultNodeTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.a = ProcessNode(self.dir, 0, [])
        self.a.start()
        self.addCleanup(self.a.stop)
        self.b = ProcessNode(self.dir, 1, [self.a.address])
        self.b.start()
        self.addCleanup(self.b.stop)

    def exchange(self) -> None:
        """a mails b, b reads and replies, both delete something: every marker passes through."""
        a_id, b_id = identity(0).id_text, identity(1).id_text
        self.a.call("contacts", {"action": "add", "alias": MARKERS[3], "id": b_id})
        self.a.call("mail", {"to": MARKERS[3], "subject": MARKERS[0], "body": MARKERS[1] * 20})
        self.a.call("mail", {"to": b_id, "subject": "second " + MARKERS[0], "body": MARKERS[1]})
        inbox = wait_for(lambda: (r := self.b.call("list", {}))["total"] == 2 and r["items"])
        first = self.b.call("read", {"uuid": inbox[0]["uuid"]})
        self.b.call("mail", {"to": a_id, "subject": "Re: " + first["subject"], "body": MARKERS[2]})
        self.b.call("delete", {"uuid": inbox[1]["uuid"]})
        wait_for(lambda: self.a.call("list", {})["total"] == 1)

    def assert_no_marker(self, where: Path) -> None:
        for marker in MARKERS:
            self.assertEqual(files_containing(where, marker.encode()), [], marker)

    def test_nothing_readable_at_rest_and_backup_restores_elsewhere(self) -> None:
        self.exchange()
        archive = self.a.data_dir / "a.fcbackup"   # under the data directory: scanned too
        made = run(IPC_APP, "-c", str(self.a.config_path), "backup", str(archive))
        self.assertEqual(made.returncode, 0, made.stderr)
        self.assertIn("bytes to", made.stdout)
        again = run(IPC_APP, "-c", str(self.a.config_path), "backup", str(archive))
        self.assertEqual(again.returncode, 1)
        self.assertIn("exists", again.stderr)
        self.assert_no_marker(self.dir)           # running: database, WAL, logs, archive
        self.a.stop()
        self.b.stop()
        self.assert_no_marker(self.dir)           # stopped and checkpointed

        # Restore on "another machine": a new, empty data directory with its own config.
        other = self.dir / "other"
        config = json.loads(self.a.config_path.read_text())
        config["data_dir"] = str(other / "node00")
        other.mkdir()
        config_path = other / "restore.json"
        config_path.write_text(json.dumps(config))
        wrong = run(SERVER_APP, "-c", str(config_path), "--restore", str(archive),
                    FLUXCHAT_KEY_PASSWORD="wrong")
        self.assertEqual(wrong.returncode, 2)
        self.assertIn("wrong key password", wrong.stderr)
        self.assertFalse((other / "node00").exists())
        done = run(SERVER_APP, "-c", str(config_path), "--restore", str(archive),
                   FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(identity(0).id_text, done.stdout)
        restored = ProcessNode(other, 0, [])
        restored.start()
        self.addCleanup(restored.stop)
        self.assertEqual(restored.call("info")["id"], identity(0).id_text)
        items = restored.call("list", {})["items"]
        self.assertEqual(restored.call("read", {"uuid": items[0]["uuid"]})["body"], MARKERS[2])
        self.assertEqual(restored.call("contacts", {})["contacts"][0]["alias"], MARKERS[3])

    def test_password_change(self) -> None:
        self.exchange()
        self.b.stop()
        config = str(self.b.config_path)
        running = run(SERVER_APP, "-c", str(self.a.config_path), "--change-password",
                      FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD, FLUXCHAT_NEW_KEY_PASSWORD="x")
        self.assertEqual(running.returncode, 1)
        self.assertIn("running", running.stderr)
        bad = run(SERVER_APP, "-c", config, "--change-password",
                  FLUXCHAT_KEY_PASSWORD="not it", FLUXCHAT_NEW_KEY_PASSWORD="new pw")
        self.assertEqual(bad.returncode, 1)
        self.assertIn("wrong key password", bad.stderr)
        changed = run(SERVER_APP, "-c", config, "--change-password",
                      FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD, FLUXCHAT_NEW_KEY_PASSWORD="new pw")
        self.assertEqual(changed.returncode, 0, changed.stderr)
        old = run(SERVER_APP, "-c", config, FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD)
        self.assertEqual(old.returncode, 2)
        self.assertIn("wrong key password", old.stderr)
        self.b.start(password="new pw")
        self.assertEqual(self.b.call("list", {})["total"], 1)


if __name__ == "__main__":
    unittest.main()
