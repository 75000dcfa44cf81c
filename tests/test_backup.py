"""Backup archives: round trip, and every kind of damage refused with nothing changed."""

from __future__ import annotations

import stat
import tempfile
import unittest
from pathlib import Path

from fluxchat.backup import restore, write_backup
from fluxchat.backup_format import MAGIC, ArchiveError
from fluxchat.errors import StorageError
from fluxchat.store import Store
from fluxchat.vault import create
from fluxchat.vault_format import KdfParams, WrongPassword
from tests.keys import TEST_PASSWORD, identity, install_identity
from tests.test_vault import MARKER, files_containing, fill

CHEAP = KdfParams(memory_kib=8192, iterations=1)


class BackupCase(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.root = Path(tmp.name)
        self.data = self.root / "node"
        install_identity(0, self.data)
        self.key = create(self.data, TEST_PASSWORD, CHEAP)
        fill(self.data / "fluxchat.db", 30, key=self.key)
        # A store left open with commits still in its write-ahead log, as on a running node.
        self.live = Store.open(self.data / "fluxchat.db", self.key)
        self.addCleanup(self.live.close)
        self.live.add_contact("late-contact", b"d" * 32)
        self.archive = self.root / "node.fcbackup"
        self.size = write_backup(self.data, self.key, self.archive, identity(0).id_text, 1000)

    def restored_store(self, target: Path) -> Store:
        store = Store.open(target / "fluxchat.db", self.key)
        self.addCleanup(store.close)
        return store


class RoundTripTest(BackupCase):
    def test_restore_keeps_id_mail_and_contacts(self) -> None:
        self.assertEqual(stat.S_IMODE(self.archive.stat().st_mode), 0o600)
        self.assertEqual(self.size, self.archive.stat().st_size)
        self.assertNotIn(MARKER.encode(), self.archive.read_bytes())
        target = self.root / "elsewhere" / "data"
        self.assertEqual(restore(self.archive, target, TEST_PASSWORD), identity(0).id_text)
        self.assertEqual(stat.S_IMODE(target.stat().st_mode), 0o700)
        store = self.restored_store(target)
        self.assertEqual(store.count_inbox()[0], 30)
        self.assertEqual(store.resolve_alias("late-contact"), b"d" * 32)
        self.assertEqual(files_containing(target, MARKER.encode()), [])
        self.assertEqual(sorted(p.name for p in self.data.parent.iterdir()),
                         ["elsewhere", "node", "node.fcbackup"])   # no snapshot or partial left

    def test_restore_into_an_existing_empty_directory(self) -> None:
        target = self.root / "empty"
        target.mkdir()
        restore(self.archive, target, TEST_PASSWORD)
        self.assertEqual(self.restored_store(target).count_inbox()[0], 30)

    def test_existing_backup_file_is_not_overwritten(self) -> None:
        before = self.archive.read_bytes()
        with self.assertRaisesRegex(StorageError, "exists"):
            write_backup(self.data, self.key, self.archive, identity(0).id_text, 1000)
        self.assertEqual(self.archive.read_bytes(), before)


class RefusalTest(BackupCase):
    def assert_refused(self, archive: Path, error: type[Exception], password: str = TEST_PASSWORD,
                       target: Path | None = None) -> None:
        target = target or self.root / "target"
        with self.assertRaises(error):
            restore(archive, target, password)
        self.assertFalse(target.exists())
        self.assertEqual([p.name for p in self.root.iterdir() if "restoring" in p.name], [])

    def damaged(self, content: bytes) -> Path:
        path = self.root / "damaged"
        path.write_bytes(content)
        return path

    def test_wrong_password(self) -> None:
        self.assert_refused(self.archive, WrongPassword, password="not it")

    def test_truncated_anywhere(self) -> None:
        good = self.archive.read_bytes()
        cuts = sorted({0, 5, len(MAGIC) + 2, len(MAGIC) + 30, *range(100, len(good), 997),
                       len(good) - 17, len(good) - 1})
        for cut in cuts:
            with self.subTest(cut=cut):
                self.assert_refused(self.damaged(good[:cut]), StorageError)

    def test_flipped_bytes_and_trailing_bytes(self) -> None:
        good = self.archive.read_bytes()
        for position in [*range(0, 200, 7), *range(200, len(good), 1499), len(good) - 1]:
            with self.subTest(position=position):
                flipped = bytearray(good)
                flipped[position] ^= 0x40
                # A flip inside the wrapped key file reads as a wrong password: also a refusal.
                self.assert_refused(self.damaged(bytes(flipped)), (StorageError, WrongPassword))
        self.assert_refused(self.damaged(good + b"\0"), ArchiveError)

    def test_not_an_archive_and_missing_file(self) -> None:
        self.assert_refused(self.damaged(b"hello world, not a backup at all"), ArchiveError)
        with self.assertRaisesRegex(StorageError, "cannot restore"):
            restore(self.root / "missing", self.root / "target", TEST_PASSWORD)

    def test_non_empty_target_is_untouched(self) -> None:
        target = self.root / "busy"
        target.mkdir()
        (target / "keep.txt").write_text("mine")
        with self.assertRaisesRegex(StorageError, "not empty"):
            restore(self.archive, target, TEST_PASSWORD)
        self.assertEqual([p.name for p in target.iterdir()], ["keep.txt"])


if __name__ == "__main__":
    unittest.main()
