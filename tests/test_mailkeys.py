"""Mail key records: signing, checking, refusals (other identity, expired, replayed), a KAT."""

from __future__ import annotations

import json
import unittest
from pathlib import Path

from fluxchat.cbor import dumps, loads
from fluxchat.mailkeys import (
    CLOCK_SKEW,
    MAX_LIFETIME,
    PREKEY_BYTES,
    SECRET_BYTES,
    MailKeyError,
    MailKeyRecord,
    MailKeySecrets,
    RecordCache,
    accept_for_directory,
    check_record,
    decode_record,
    make_record,
    prekey_id,
    signed_bytes,
)

from .keys import identity

KAT = json.loads((Path(__file__).resolve().parent / "data" / "mailkeys_kat.json")
                 .read_text(encoding="utf-8"))
A, B = identity(0), identity(1)
T0 = 1_800_000_000
DAY = 86400


def secrets(first: int) -> MailKeySecrets:
    return MailKeySecrets(bytes((first + i) % 256 for i in range(SECRET_BYTES)))


def record_of(who: int = 0, created: int = T0, lifetime: int = 2 * DAY) -> MailKeyRecord:
    return make_record(identity(who), secrets(who * 7), created, created + lifetime)


class RecordTest(unittest.TestCase):
    def test_round_trip(self) -> None:
        record = record_of()
        data = record.encode()
        self.assertEqual(check_record(data, A.node_id, A.public_der), record)
        self.assertEqual(decode_record(data), record)
        self.assertEqual(len(record.prekey), PREKEY_BYTES)
        self.assertEqual(record.prekey_id, prekey_id(record.prekey))

    def test_signed_by_another_identity_is_refused(self) -> None:
        # B signs a record that names A: A's key does not verify it, B's key is not A's.
        forged = make_record(B, secrets(1), T0, T0 + DAY)
        forged = MailKeyRecord(A.node_id, *[getattr(forged, f) for f in
                                            ("created_at", "expires_at", "sign_key",
                                             "prekey", "signature")])
        data = forged.encode()
        with self.assertRaises(MailKeyError):
            check_record(data, A.node_id, A.public_der)
        with self.assertRaises(MailKeyError):
            check_record(data, A.node_id, B.public_der)

    def test_record_of_another_node_is_refused(self) -> None:
        with self.assertRaises(MailKeyError):
            check_record(record_of(1).encode(), A.node_id, A.public_der)

    def test_every_byte_flip_is_refused(self) -> None:
        data = record_of().encode()
        for pos in range(len(data)):
            damaged = bytearray(data)
            damaged[pos] ^= 0x01 if pos % 2 else 0x80
            with self.assertRaises(MailKeyError, msg=f"byte {pos}"):
                check_record(bytes(damaged), A.node_id, A.public_der)

    def test_malformed_fields(self) -> None:
        good = loads(record_of().encode())
        variants = [good[:-1], good + [b""], [2] + good[1:], [True] + good[1:]]
        for index, value in [(1, b"short"), (2, -1), (3, good[2]), (3, good[2] + MAX_LIFETIME + 1),
                             (4, b"\0" * 31), (5, b"\0" * (PREKEY_BYTES - 1)), (6, b"")]:
            variants.append(good[:index] + [value] + good[index + 1:])
        for fields in variants:
            with self.assertRaises(MailKeyError, msg=repr(fields)[:80]):
                check_record(dumps(fields), A.node_id, A.public_der)
        for junk in (b"", b"\xff", dumps(5), b"\0" * 5000):
            with self.assertRaises(MailKeyError):
                decode_record(junk)

    def test_bad_public_halves_are_refused_even_when_signed(self) -> None:
        good = record_of()
        # An X25519 point of all zeros loads, but a wrong-length prekey does not: build a
        # record with a bad Ed25519 key instead, signed properly by A.
        bad = MailKeyRecord(A.node_id, T0, T0 + DAY, good.sign_key, b"\xff" * PREKEY_BYTES, b"")
        signed = MailKeyRecord(*[getattr(bad, f) for f in ("node_id", "created_at",
                                                            "expires_at", "sign_key", "prekey")],
                               A.sign(signed_bytes(bad)))
        try:
            check_record(signed.encode(), A.node_id, A.public_der)
        except MailKeyError:
            pass   # refused: the ML-KEM key does not load
        else:
            self.skipTest("this OpenSSL accepts an all-ones ML-KEM public key")

    def test_make_record_checks_its_times(self) -> None:
        for created, expires in [(T0, T0), (T0, T0 - 1), (T0, T0 + MAX_LIFETIME + 1), (-1, 5)]:
            with self.assertRaises(ValueError):
                make_record(A, secrets(0), created, expires)
        with self.assertRaises(ValueError):
            MailKeySecrets(b"\0" * (SECRET_BYTES - 1))

    def test_valid_at(self) -> None:
        record = record_of()
        self.assertTrue(record.valid_at(T0))
        self.assertTrue(record.valid_at(T0 - CLOCK_SKEW))
        self.assertFalse(record.valid_at(T0 - CLOCK_SKEW - 1))
        self.assertFalse(record.valid_at(record.expires_at))


class DirectoryTest(unittest.TestCase):
    def test_fresh_record_is_taken(self) -> None:
        accept_for_directory(record_of(), None, T0 + 10)

    def test_expired_record_is_refused(self) -> None:
        record = record_of()
        with self.assertRaises(MailKeyError):
            accept_for_directory(record, None, record.expires_at)

    def test_future_record_is_refused(self) -> None:
        with self.assertRaises(MailKeyError):
            accept_for_directory(record_of(created=T0 + CLOCK_SKEW + 1), None, T0)
        accept_for_directory(record_of(created=T0 + CLOCK_SKEW), None, T0)

    def test_replayed_old_record_is_refused(self) -> None:
        old, new = record_of(created=T0), record_of(created=T0 + DAY)
        with self.assertRaises(MailKeyError):
            accept_for_directory(old, new, T0 + DAY + 5)
        accept_for_directory(new, old, T0 + DAY + 5)
        accept_for_directory(new, new, T0 + DAY + 5)   # republishing the same is fine


class CacheTest(unittest.TestCase):
    def test_second_check_skips_rsa_and_still_binds_the_node(self) -> None:
        cache, data = RecordCache(size=2), record_of().encode()
        first = cache.check(data, A.node_id, A.public_der)
        self.assertIs(cache.check(data, A.node_id, A.public_der), first)
        with self.assertRaises(MailKeyError):
            cache.check(data, B.node_id, A.public_der)
        with self.assertRaises(MailKeyError):
            cache.check(data, B.node_id, B.public_der)

    def test_another_record_of_the_same_sender_never_hits(self) -> None:
        cache = RecordCache()
        first, second = record_of(created=T0), record_of(created=T0 + 1)
        self.assertEqual(cache.check(first.encode(), A.node_id, A.public_der), first)
        self.assertEqual(cache.check(second.encode(), A.node_id, A.public_der), second)
        # Same keys, same times, another (randomized PSS) signature: other bytes, own entry.
        again = make_record(A, secrets(0), T0, T0 + 2 * DAY)
        self.assertNotEqual(again.encode(), first.encode())
        self.assertEqual(cache.check(again.encode(), A.node_id, A.public_der).signature,
                         again.signature)
        self.assertEqual(len(cache._seen), 3)

    def test_an_invalid_record_is_never_cached(self) -> None:
        cache, record = RecordCache(), record_of()
        damaged = bytearray(record.encode())
        damaged[-1] ^= 1   # the last byte of the RSA signature
        for _ in range(2):
            with self.assertRaises(MailKeyError):
                cache.check(bytes(damaged), A.node_id, A.public_der)
        self.assertEqual(len(cache._seen), 0)
        # A good record stays bound to the key it was checked under.
        cache.check(record.encode(), A.node_id, A.public_der)
        with self.assertRaises(MailKeyError):
            cache.check(record.encode(), A.node_id, B.public_der)
        self.assertEqual(len(cache._seen), 1)

    def test_bounded(self) -> None:
        cache = RecordCache(size=2)
        for created in (T0, T0 + 1, T0 + 2):
            cache.check(record_of(created=created).encode(), A.node_id, A.public_der)
        self.assertEqual(len(cache._seen), 2)


class KnownAnswerTest(unittest.TestCase):
    def test_public_halves_and_signed_bytes(self) -> None:
        r_secrets = MailKeySecrets(bytes.fromhex(KAT["recipient_secrets"]))
        s_secrets = MailKeySecrets(bytes.fromhex(KAT["sender_secrets"]))
        self.assertEqual(s_secrets.public_halves()[0].hex(), KAT["sender_sign_key"])
        record = check_record(bytes.fromhex(KAT["recipient_record"]), B.node_id, B.public_der)
        self.assertEqual(record.prekey, r_secrets.public_halves()[1])
        self.assertEqual(record.prekey_id.hex(), KAT["recipient_prekey_id"])
        self.assertEqual(signed_bytes(record).hex(), KAT["recipient_record_signed"])
        self.assertEqual((record.created_at, record.expires_at),
                         (KAT["created_at"], KAT["record_expires_at"]))
        # Re-signing gives other bytes (PSS is randomized) over the same signed bytes.
        again = make_record(B, r_secrets, record.created_at, record.expires_at)
        self.assertEqual(signed_bytes(again), signed_bytes(record))


if __name__ == "__main__":
    unittest.main()
