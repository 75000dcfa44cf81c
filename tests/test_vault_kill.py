"""SIGKILL at many moments of the migration (and of the other vault paths): nothing is ever lost.

Each case runs the real code in a child process, kills it after a delay spread over the whole
operation, checks the invariant on what it left, then runs it again to completion.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path

from fluxchat.errors import StorageError
from fluxchat.sqldb import is_plaintext, open_database
from fluxchat.store import Store
from fluxchat.vault import unlock
from fluxchat.vault_format import KdfParams

CHEAP = KdfParams(memory_kib=8192, iterations=1)
SRC = Path(__file__).resolve().parent.parent / "src"
ROWS = 20_000
KILLS = 10   # kill moments, spread over the measured length of an uninterrupted run

MIGRATE = """
import sys
from collections.abc import Callable
from pathlib import Path
from fluxchat.vault_format import KdfParams
from fluxchat.vault_migrate import unlock_storage
data = Path(sys.argv[1])
print("go", flush=True)
unlock_storage(data, data / "fluxchat.db", "pw", KdfParams(8192, 1))
print("done", flush=True)
"""


def kill_moments(run_once: Callable[[], None]) -> list[float]:
    """KILLS moments from 0 to 1.2 times the length of one full run (timed here: the machine
    is shared, so a fixed list would miss the end of the work on a busy day)."""
    start = time.monotonic()
    run_once()
    span = (time.monotonic() - start) * 1.2
    return [span * i / (KILLS - 1) for i in range(KILLS)]


def run_child(script: str, args: list[str], kill_after: float | None) -> bool:
    """Run `script`; SIGKILL it `kill_after` seconds after it prints "go". True if it finished."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None
    try:
        if proc.stdout.readline().strip() != b"go":
            raise AssertionError(f"child failed before starting: {proc.wait()}")
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if code not in (0, -signal.SIGKILL):
        raise AssertionError(f"child exited with {code}")
    return b"done" in out


def make_plain_fixture(path: Path) -> None:
    Store.open(path).close()
    db = open_database(path, None)
    db.execute("BEGIN")
    db.executemany("INSERT INTO inbox VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                   ((i.to_bytes(16, "big"), b"a" * 32, b"b" * 32, f"subject {i}", "body " * 100,
                     i, i) for i in range(ROWS)))
    db.execute("COMMIT")
    db.close()


def inbox_rows(db_path: Path, key: bytes | None) -> int:
    db = open_database(db_path, key)
    try:
        return int(db.execute("SELECT count(*) FROM inbox").fetchone()[0])
    finally:
        db.close()


class MigrationKillTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.fixture = self.root / "fixture.db"
        make_plain_fixture(self.fixture)

    def check(self, data: Path) -> str:
        """The invariant: the database is the whole plaintext or the whole encrypted mailbox."""
        db = data / "fluxchat.db"
        if is_plaintext(db):
            self.assertEqual(inbox_rows(db, None), ROWS)
            return "plaintext"
        key = unlock(data, "pw")
        self.assertEqual(inbox_rows(db, key), ROWS)
        return "encrypted"

    def fresh(self, name: str) -> Path:
        data = self.root / name
        data.mkdir()
        shutil.copy(self.fixture, data / "fluxchat.db")
        return data

    def test_sigkill_during_migration_loses_nothing(self) -> None:
        timed = self.fresh("timed")
        seen = set()
        for delay in kill_moments(lambda: run_child(MIGRATE, [str(timed)], kill_after=None)):
            with self.subTest(delay=delay):
                data = self.fresh(f"d{delay}")
                finished = run_child(MIGRATE, [str(data)], kill_after=delay)
                seen.add((self.check(data), finished))
                self.assertTrue(run_child(MIGRATE, [str(data)], kill_after=None))
                self.assertEqual(self.check(data), "encrypted")
                leftovers = sorted(p.name for p in data.iterdir())
                self.assertEqual(leftovers, ["fluxchat.db", "storage_key.copy.json",
                                             "storage_key.json"])
        # The delays must have caught the work both before and after the switch.
        self.assertIn(("plaintext", False), seen)
        self.assertIn(("encrypted", True), seen)


class WrongKeyTest(unittest.TestCase):
    def test_plaintext_checker_refuses_wrong_key(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.db"
            Store.open(path, b"k" * 32).close()
            with self.assertRaises(StorageError):
                inbox_rows(path, b"j" * 32)


if __name__ == "__main__":
    unittest.main()
