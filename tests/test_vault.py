"""The storage key file, the encrypted database opener, and the migration of a plaintext store."""

from __future__ import annotations

import ast
import json
import os
import stat
import tempfile
import unittest
from pathlib import Path

from fluxchat.errors import IdentityError, StorageError
from fluxchat.sqldb import CACHE_KIB, is_plaintext, open_database
from fluxchat.store import InboxMail, Store
from fluxchat.vault import VAULT_COPY, VAULT_FILE, create, unlock
from fluxchat.vault_format import KdfParams, WrongPassword, parse, seal, unseal
from fluxchat.vault_migrate import OLD_PLAINTEXT, encrypt_in_place, unlock_storage

CHEAP = KdfParams(memory_kib=8192, iterations=1)
ROOT = Path(__file__).resolve().parent.parent
MARKER = "ZEBRA-MARKER-7731"


def sealed(password: str = "pw", key: bytes = b"k" * 32) -> bytes:
    return seal(key, password, CHEAP, b"s" * 16, b"n" * 12)


def files_containing(directory: Path, needle: bytes) -> list[str]:
    return [p.name for p in directory.rglob("*") if p.is_file() and needle in p.read_bytes()]


def fill(path: Path, count: int, key: bytes | None = None) -> None:
    store = Store.open(path, key)
    for i in range(count):
        store.add_inbox(InboxMail(i.to_bytes(16, "big"), b"a" * 32, b"b" * 32,
                                  f"{MARKER} subject {i}", f"{MARKER} body {i}", i, i))
    store.add_contact(f"{MARKER}-alias", b"c" * 32)
    store.close()


class FormatTest(unittest.TestCase):
    def test_round_trip_and_wrong_password(self) -> None:
        self.assertEqual(unseal(sealed(), "pw"), b"k" * 32)
        with self.assertRaises(WrongPassword):
            unseal(sealed(), "other")

    def test_edited_parameters_fail_like_a_wrong_password(self) -> None:
        record = json.loads(sealed())
        record["iterations"] = 2
        with self.assertRaises(WrongPassword):
            unseal(json.dumps(record).encode(), "pw")

    def test_every_byte_of_the_wrapped_key_matters(self) -> None:
        record = json.loads(sealed())
        raw = bytearray(parse(sealed())[3])
        for i in range(len(raw)):
            flipped = bytearray(raw)
            flipped[i] ^= 1
            record["wrapped"] = __import__("base64").b64encode(bytes(flipped)).decode()
            with self.assertRaises(WrongPassword):
                unseal(json.dumps(record).encode(), "pw")

    def test_damaged_files_are_storage_errors(self) -> None:
        good = json.loads(sealed())
        cases = [b"", b"{", b"[]", json.dumps(dict(good, format="x")).encode(),
                 json.dumps(dict(good, version=2)).encode(),
                 json.dumps(dict(good, memory_kib="8192")).encode(),
                 json.dumps(dict(good, memory_kib=1 << 40)).encode(),   # would allocate a petabyte
                 json.dumps(dict(good, salt="***")).encode(),
                 json.dumps(dict(good, nonce="AAAA")).encode(), b"x" * 5000]
        for content in cases:
            with self.subTest(content=content[:40]), self.assertRaises(StorageError):
                unseal(content, "pw")

    def test_empty_password_refused(self) -> None:
        with self.assertRaises(IdentityError):
            sealed(password="")


class VaultFilesTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)

    def test_two_private_copies(self) -> None:
        key = create(self.dir, "pw", CHEAP)
        for name in (VAULT_FILE, VAULT_COPY):
            self.assertEqual(stat.S_IMODE((self.dir / name).stat().st_mode), 0o600)
        self.assertEqual((self.dir / VAULT_FILE).read_bytes(), (self.dir / VAULT_COPY).read_bytes())
        self.assertEqual(unlock(self.dir, "pw"), key)
        with self.assertRaises(WrongPassword):
            unlock(self.dir, "nope")

    def test_damaged_or_missing_first_file_falls_back_to_the_copy_and_is_repaired(self) -> None:
        key = create(self.dir, "pw", CHEAP)
        good = (self.dir / VAULT_FILE).read_bytes()
        for damage in (b"", good[:40], None):
            with self.subTest(damage=damage):
                if damage is None:
                    (self.dir / VAULT_FILE).unlink()
                else:
                    (self.dir / VAULT_FILE).write_bytes(damage)
                self.assertEqual(unlock(self.dir, "pw"), key)
                self.assertEqual((self.dir / VAULT_FILE).read_bytes(), good)

    def test_lagging_copy_is_rewritten(self) -> None:
        create(self.dir, "pw", CHEAP)
        (self.dir / VAULT_COPY).write_bytes(b"stale")
        unlock(self.dir, "pw")
        self.assertEqual((self.dir / VAULT_COPY).read_bytes(), (self.dir / VAULT_FILE).read_bytes())

    def test_both_damaged_is_a_clear_error(self) -> None:
        create(self.dir, "pw", CHEAP)
        for name in (VAULT_FILE, VAULT_COPY):
            (self.dir / name).write_bytes(b"garbage")
        with self.assertRaisesRegex(StorageError, "JSON"):
            unlock(self.dir, "pw")


class EncryptedDatabaseTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.db = self.dir / "fluxchat.db"

    def test_no_marker_in_any_file_and_wrong_key_opens_nothing(self) -> None:
        fill(self.db, 50, key=b"K" * 32)
        store = Store.open(self.db, b"K" * 32)   # deletes leave nothing in clear either
        store.delete_inbox((3).to_bytes(16, "big"))
        self.assertEqual(store.count_inbox()[0], 49)
        self.assertEqual(files_containing(self.dir, MARKER.encode()), [])
        store.close()
        self.assertFalse(is_plaintext(self.db))
        for key in (b"L" * 32, None):
            with self.subTest(key=key), self.assertRaisesRegex(StorageError, "cannot open"):
                Store.open(self.db, key)

    def test_the_page_cache_is_bounded(self) -> None:
        """Decrypted pages in memory: at most CACHE_KIB per connection (bench/rss.py)."""
        fill(self.db, 5, key=b"K" * 32)
        db = open_database(self.db, b"K" * 32)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("PRAGMA cache_size").fetchone()[0], -CACHE_KIB)
        self.assertLessEqual(CACHE_KIB, 2048)

    def test_only_the_opener_touches_the_driver(self) -> None:
        allowed = {ROOT / "src" / "fluxchat" / "sqldb.py"}
        for folder in ("src", "tests", "bench"):
            for path in (ROOT / folder).rglob("*.py"):
                if path in allowed:
                    continue
                for node in ast.walk(ast.parse(path.read_text())):
                    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                             else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                    for name in names:
                        self.assertNotIn(name.split(".")[0], {"sqlite3", "sqlcipher3"},
                                         f"{path.relative_to(ROOT)} imports {name}; "
                                         "open databases through fluxchat.sqldb")


class MigrationTest(unittest.TestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)
        self.db = self.dir / "fluxchat.db"

    def test_plaintext_store_is_encrypted_whole(self) -> None:
        fill(self.db, 200)
        self.assertTrue(files_containing(self.dir, MARKER.encode()))
        key = unlock_storage(self.dir, self.db, "pw", CHEAP)
        self.assertFalse(is_plaintext(self.db))
        self.assertEqual(files_containing(self.dir, MARKER.encode()), [])
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()),
                         ["fluxchat.db", VAULT_COPY, VAULT_FILE])
        store = Store.open(self.db, key)
        self.addCleanup(store.close)
        self.assertEqual(store.count_inbox(), (200, 200))
        self.assertEqual(store.resolve_alias(f"{MARKER}-alias"), b"c" * 32)
        # Done once: the next start finds an encrypted file and the same key.
        self.assertEqual(unlock_storage(self.dir, self.db, "pw", CHEAP), key)
        self.assertFalse(encrypt_in_place(self.db, key))

    def test_crash_before_the_rename_keeps_the_plaintext_file(self) -> None:
        fill(self.db, 5)
        os.link(self.db, self.db.with_name("fluxchat.db" + OLD_PLAINTEXT))   # as if killed there
        (self.dir / "fluxchat.db.encrypting").write_bytes(b"half")
        key = create(self.dir, "pw", CHEAP)
        self.assertTrue(encrypt_in_place(self.db, key))
        store = Store.open(self.db, key)
        self.addCleanup(store.close)
        self.assertEqual(store.count_inbox()[0], 5)
        self.assertEqual(files_containing(self.dir, MARKER.encode()), [])

    def test_missing_key_file_with_encrypted_database_is_refused(self) -> None:
        fill(self.db, 1, key=b"K" * 32)
        with self.assertRaisesRegex(StorageError, "storage_key.json is missing"):
            unlock_storage(self.dir, self.db, "pw", CHEAP)
        self.assertFalse((self.dir / VAULT_FILE).exists())


if __name__ == "__main__":
    unittest.main()
