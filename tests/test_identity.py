"""Node identity: IDs, encrypted keys, certificates, and the openssl cross-checks."""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.errors import IdentityError
from fluxchat.identity import Identity, load_identity, load_public_key, verify_signature, write_identity
from fluxchat.ids import IdError, b58decode, b58encode, distance, fingerprint, format_id, parse_id
from tests.keys import KEYS, TEST_PASSWORD, identity, key_dir

ROOT = Path(__file__).resolve().parent.parent
HAVE_OPENSSL = shutil.which("openssl") is not None


class IdsTest(unittest.TestCase):
    def test_base58_known_answers(self) -> None:
        self.assertEqual(b58encode(b""), "")
        self.assertEqual(b58encode(b"\0\0\x01"), "112")
        self.assertEqual(b58encode(b"hello world"), "StV1DL6CwTryKyV")
        self.assertEqual(b58decode("StV1DL6CwTryKyV"), b"hello world")
        self.assertEqual(b58decode("112"), b"\0\0\x01")

    def test_parse_id_round_trip_and_rejections(self) -> None:
        node_id = identity(0).node_id
        self.assertEqual(parse_id(format_id(node_id)), node_id)
        for bad in ("", "FC_", "fc_" + format_id(node_id)[3:], "FC_" + "1" * 44,
                    format_id(node_id) + "1", "FC_0OIl", "FC_" + b58encode(b"\1" * 33), 42):
            with self.assertRaises(IdError, msg=repr(bad)):
                parse_id(bad)  # type: ignore[arg-type]

    def test_distance_and_fingerprint(self) -> None:
        a, b = identity(0).node_id, identity(1).node_id
        self.assertEqual(distance(a, a), 0)
        self.assertEqual(distance(a, b), distance(b, a))
        self.assertEqual(len(fingerprint(a).split(":")), 32)


class IdentityFilesTest(unittest.TestCase):
    def test_load_committed_identity_and_sign(self) -> None:
        me = identity(0)
        signature = me.sign(b"data")
        key = load_public_key(me.public_der)
        self.assertTrue(verify_signature(key, signature, b"data"))
        self.assertFalse(verify_signature(key, signature, b"other"))

    def test_wrong_password_is_one_clear_error(self) -> None:
        with self.assertRaises(IdentityError) as caught:
            load_identity(key_dir(0), "not the password")
        self.assertIn("wrong key password", str(caught.exception))
        self.assertNotIn("\n", str(caught.exception))

    def test_written_files_are_private_and_certificate_names_the_id(self) -> None:
        me = identity(1)
        now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = Path(tmp) / "data"
            write_identity(me, data_dir, "pw", 1000, now)
            self.assertEqual(stat.S_IMODE(data_dir.stat().st_mode), 0o700)
            for name in ("private_key.pem", "public_key.pem", "certificate.pem"):
                self.assertEqual(stat.S_IMODE((data_dir / name).stat().st_mode), 0o600)
            loaded = load_identity(data_dir, "pw")
            self.assertEqual(loaded.node_id, me.node_id)
            cert = x509.load_pem_x509_certificate((data_dir / "certificate.pem").read_bytes())
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            self.assertEqual(cn, me.id_text)
            # Certificate of another identity is refused.
            shutil.copy(key_dir(2) / "certificate.pem", data_dir / "certificate.pem")
            with self.assertRaises(IdentityError):
                load_identity(data_dir, "pw")

    def test_public_key_checks(self) -> None:
        with self.assertRaises(IdentityError):
            load_public_key(b"not a key")
        # An SPKI naming an algorithm `cryptography` does not know is our error, not its own.
        rsa_oid, unknown_oid = bytes.fromhex("2a864886f70d010101"), bytes.fromhex("2a864886f70d010163")
        with self.assertRaises(IdentityError):
            load_public_key(identity(0).public_der.replace(rsa_oid, unknown_oid))
        self.assertIsInstance(load_public_key(identity(0).public_der).key_size, int)


class PublicKeyFuzzTest(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.integers(0, 549), st.integers(0, 255))
    def test_any_bytes_raise_only_identity_error(self, junk: bytes, at: int, value: int) -> None:
        """Random bytes, and the real key with one byte changed (OIDs, lengths, exponent)."""
        der = bytearray(identity(0).public_der)
        der[at % len(der)] = value
        for candidate in (junk, bytes(der)):
            try:
                load_public_key(candidate)
            except IdentityError:
                pass


@unittest.skipUnless(HAVE_OPENSSL, "openssl not installed")
class OpensslAgreesTest(unittest.TestCase):
    def test_gen_id_matches_openssl_digest(self) -> None:
        public = key_dir(0) / "public_key.pem"
        der = subprocess.run(["openssl", "rsa", "-pubin", "-inform", "PEM", "-in", str(public),
                              "-outform", "DER"], check=True, capture_output=True).stdout
        digest = subprocess.run(["openssl", "dgst", "-sha256", "-c"], input=der, check=True,
                                capture_output=True).stdout.decode().split("= ")[1].strip()
        out = subprocess.run([sys.executable, str(ROOT / "src" / "gen_id.py"), "-f", str(public),
                              "--fingerprint"], check=True, capture_output=True, text=True).stdout
        node_text, fp = out.split()
        self.assertEqual(fp, digest)
        self.assertEqual(parse_id(node_text).hex(), digest.replace(":", ""))
        self.assertEqual(node_text, identity(0).id_text)

    def test_openssl_opens_the_encrypted_key_with_the_password(self) -> None:
        key = key_dir(0) / "private_key.pem"
        ok = subprocess.run(["openssl", "pkey", "-in", str(key), "-passin", "env:PW", "-noout"],
                            env=dict(os.environ, PW=TEST_PASSWORD), capture_output=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        bad = subprocess.run(["openssl", "pkey", "-in", str(key), "-passin", "pass:wrong",
                              "-noout"], capture_output=True)
        self.assertNotEqual(bad.returncode, 0)
        text = subprocess.run(["openssl", "asn1parse", "-in", str(key)], capture_output=True,
                              text=True).stdout
        for marker in ("PBES2", "PBKDF2", "hmacWithSHA256", "aes-256-cbc"):
            self.assertIn(marker, text)


class Rsa4096Test(unittest.TestCase):
    def test_committed_4096_bit_identity(self) -> None:
        me = Identity.from_private_key(load_identity(KEYS / "rsa4096", TEST_PASSWORD).private_key)
        self.assertEqual(me.private_key.key_size, 4096)


if __name__ == "__main__":
    unittest.main()
