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

from fluxchat.backup import restore
from fluxchat.errors import IdentityError, StorageError
from fluxchat.identity import encrypt_private_key, load_identity
from fluxchat.sqldb import is_plaintext, open_database
from fluxchat.store import Store
from fluxchat.vault import create, unlock
from fluxchat.vault_format import KdfParams, WrongPassword
from tests.keys import identity, install_identity
from tests.test_vault import fill

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
    db.executemany("INSERT INTO inbox (uuid, sender, recipient, subject, body, created_at, "
                   "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        # At 0 s the export has not begun; where the later moments fall depends on the machine's
        # load, so StepKillTest.test_migration covers every step after the switch for certain.
        self.assertIn(("plaintext", False), seen)


# Kill the child just before its N-th file-system step (write, fsync, rename, unlink, link):
# run with N = 1, 2, … until it finishes, every boundary between two steps sees a SIGKILL.
STEP_KILLER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
limit, seen = int(sys.argv[2]), [0]
def killing(real):
    def step(*args, **kwargs):
        seen[0] += 1
        if seen[0] == limit:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return step
for name in ("write", "fsync", "replace", "rename", "unlink", "link", "rmdir"):
    setattr(os, name, killing(getattr(os, name)))
print("go", flush=True)
from kill_jobs import JOB
JOB(*sys.argv[3:])
print("done", flush=True)
"""

JOBS = """
from pathlib import Path
from fluxchat.backup import restore, write_backup
from fluxchat.store import Store
from fluxchat.vault import change_password, unlock
from fluxchat.vault_format import KdfParams

def passwd(data):
    change_password(Path(data), "old pw", "new pw", KdfParams(8192, 1), 1000)

def unpack(archive, target):
    restore(Path(archive), Path(target), "old pw")

def backup(data, target, node_id):
    key = unlock(Path(data), "old pw")
    store = Store.open(Path(data) / "fluxchat.db", key)   # open, as on a running node
    write_backup(Path(data), key, Path(target), node_id, 1)
    store.close()

def migrate(data):
    from fluxchat.vault_migrate import unlock_storage
    unlock_storage(Path(data), Path(data) / "fluxchat.db", "old pw", KdfParams(8192, 1))

JOB = {"passwd": passwd, "restore": unpack, "backup": backup, "migrate": migrate}[__import__("os").environ["JOB"]]
"""


def run_steps(root: Path, job: str, args: list[str], check: Callable[[bool], None]) -> int:
    """Kill `job` before each of its steps in turn, `check` what it left (True: finished)."""
    (root / "kill_jobs.py").write_text(JOBS)
    for limit in range(1, 500):
        proc = subprocess.run([sys.executable, "-c", STEP_KILLER, str(root), str(limit), *args],
                              capture_output=True, timeout=60,
                              env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", "JOB": job})
        finished = b"done" in proc.stdout
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(f"{job} failed at step {limit}: {proc.stderr.decode()[-800:]}")
        check(finished)
        if finished:
            return limit
    raise AssertionError(f"{job} never finished")


class StepKillTest(unittest.TestCase):
    """SIGKILL before every file-system step of password change, backup and restore."""

    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)

    def node_dir(self, name: str) -> Path:
        data = self.root / name
        install_identity(0, data)
        key = create(data, "old pw", CHEAP)
        for pem in data.glob("private_key.pem"):   # the test keys use another password
            pem.write_bytes(encrypt_private_key(identity(0).private_key, "old pw", 1000))
        fill(data / "fluxchat.db", 20, key=key)
        return data

    def opens(self, data: Path, password: str) -> bool:
        """The password opens both the storage key and the private key, and all mail is there."""
        try:
            key = unlock(data, password)
        except WrongPassword:
            with self.assertRaises(IdentityError):
                load_identity(data, password)
            return False
        self.assertEqual(load_identity(data, password).node_id, identity(0).node_id)
        self.assertEqual(inbox_rows(data / "fluxchat.db", key), 20)
        return True

    def test_password_change(self) -> None:
        work, outcomes = self.node_dir("work"), []

        def check(finished: bool) -> None:
            old, new = self.opens(work, "old pw"), self.opens(work, "new pw")
            self.assertNotEqual(old, new, "exactly one password must open the node")
            outcomes.append(new)
            if new and not finished:   # committed before the kill: start over for the next step
                shutil.rmtree(work)
                self.node_dir("work")
        steps = run_steps(self.root, "passwd", [str(work)], check)
        self.assertGreater(steps, 8)
        self.assertIn(False, outcomes[:-1])
        self.assertIn(True, outcomes[:-1])   # some kills came after the commit point
        self.assertTrue(outcomes[-1])

    def test_migration(self) -> None:
        data = self.root / "plain"
        fill(data / "fluxchat.db" if data.mkdir() is None else data, 20)

        def check(finished: bool) -> None:
            db = data / "fluxchat.db"
            key = None if is_plaintext(db) else unlock(data, "old pw")
            self.assertEqual(inbox_rows(db, key), 20)
            self.assertTrue(key is not None or not finished)
        self.assertGreater(run_steps(self.root, "migrate", [str(data)], check), 5)
        self.assertEqual(sorted(p.name for p in data.iterdir()),
                         ["fluxchat.db", "storage_key.copy.json", "storage_key.json"])

    def test_backup_then_restore(self) -> None:
        data = self.node_dir("node")
        archive = self.root / "node.fcbackup"

        def backup_check(finished: bool) -> None:
            if finished:
                self.assertTrue(archive.exists())
            elif archive.exists():   # killed after the archive got its name: it must be whole
                scratch = self.root / "scratch"
                restore(archive, scratch, "old pw")
                shutil.rmtree(scratch)
                archive.unlink()   # so the next run goes on to the later steps
            leftovers = [p.name for p in self.root.iterdir() if ".partial-" in p.name]
            self.assertLessEqual(len(leftovers), 1)   # the killed one; the next run removes it
        run_steps(self.root, "backup", [str(data), str(archive), identity(0).id_text], backup_check)
        target = self.root / "restored"

        def restore_check(finished: bool) -> None:
            self.assertTrue(target.exists() or not finished)
            if target.exists():   # it has its name only once whole
                self.assertTrue(self.opens(target, "old pw"))
                if not finished:
                    shutil.rmtree(target)   # so the next run goes on to the later steps
        run_steps(self.root, "restore", [str(archive), str(target)], restore_check)
        self.assertEqual([p.name for p in self.root.iterdir() if "restoring" in p.name], [])


class WrongKeyTest(unittest.TestCase):
    def test_plaintext_checker_refuses_wrong_key(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.db"
            Store.open(path, b"k" * 32).close()
            with self.assertRaises(StorageError):
                inbox_rows(path, b"j" * 32)


if __name__ == "__main__":
    unittest.main()
