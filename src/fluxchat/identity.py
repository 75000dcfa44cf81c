"""The node's RSA identity: key generation, encrypted storage, signing, certificates.

Files in the data directory: `private_key.pem` (PKCS#8, PBES2 with PBKDF2-HMAC-SHA256 and
AES-256-CBC), `public_key.pem` (SPKI) and `certificate.pem` (self-signed, CN = node ID).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import keyformats
from .asn1 import Asn1Error, pem_certificate_to_der, spki_from_certificate
from .errors import IdentityError
from .ids import format_id, id_from_spki
from .pkcs8 import encrypt_pkcs8, rsa_private_key_info
from .records import record

PRIVATE_KEY_FILE = "private_key.pem"
PUBLIC_KEY_FILE = "public_key.pem"
CERTIFICATE_FILE = "certificate.pem"
PUBLIC_EXPONENT = 65537
MIN_KEY_BITS = 2048
MAX_KEY_BITS = 8192
CERT_VALID_DAYS = 3650

PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def spki_der(public_key: rsa.RSAPublicKey) -> bytes:
    return public_key.public_bytes(
        keyformats.Encoding.DER, keyformats.PublicFormat.SubjectPublicKeyInfo
    )


@record
class Identity:
    private_key: rsa.RSAPrivateKey
    public_der: bytes
    node_id: bytes

    @classmethod
    def from_private_key(cls, key: rsa.RSAPrivateKey) -> Identity:
        der = spki_der(key.public_key())
        return cls(key, der, id_from_spki(der))

    @property
    def id_text(self) -> str:
        return format_id(self.node_id)

    def sign(self, data: bytes) -> bytes:
        """RSA-PSS-SHA256 (MGF1-SHA256, 32-byte salt)."""
        return self.private_key.sign(data, PSS, hashes.SHA256())


def load_public_key(der: bytes) -> rsa.RSAPublicKey:
    """Parse a peer's SPKI DER; only RSA keys of sane size with e = 65537 pass."""
    try:
        key = keyformats.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:   # e.g. an unknown key OID
        raise IdentityError("malformed public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise IdentityError("public key is not RSA")
    numbers = key.public_numbers()
    if not MIN_KEY_BITS <= key.key_size <= MAX_KEY_BITS or numbers.e != PUBLIC_EXPONENT:
        raise IdentityError("RSA key size or exponent not accepted")
    return key


def verify_signature(public_key: rsa.RSAPublicKey, signature: bytes, data: bytes) -> bool:
    try:
        public_key.verify(signature, data, PSS, hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def generate_identity(bits: int) -> Identity:
    if not MIN_KEY_BITS <= bits <= MAX_KEY_BITS:
        raise IdentityError(f"key size must be {MIN_KEY_BITS}..{MAX_KEY_BITS} bits, got {bits}")
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    return Identity.from_private_key(key)


def make_certificate(identity: Identity, now: datetime.datetime) -> bytes:
    """A self-signed TLS certificate whose CN is the node ID; returns PEM."""
    # Imported here: only setup makes certificates, and the module costs a node ~8 MiB.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.id_text)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(identity.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(identity.private_key, hashes.SHA256())
    )
    return cert.public_bytes(keyformats.Encoding.PEM)


def encrypt_private_key(key: rsa.RSAPrivateKey, password: str, iterations: int) -> bytes:
    return encrypt_pkcs8(rsa_private_key_info(key), password.encode("utf-8"), iterations,
                         salt=os.urandom(16), iv=os.urandom(16))


def write_secret_file(path: Path, data: bytes) -> None:
    """Create `path` with mode 0600 from the first byte on, then fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_identity(identity: Identity, data_dir: Path, password: str, iterations: int,
                   now: datetime.datetime) -> None:
    if not password:
        raise IdentityError("an empty key password is not accepted")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_pem = identity.private_key.public_key().public_bytes(
        keyformats.Encoding.PEM, keyformats.PublicFormat.SubjectPublicKeyInfo
    )
    write_secret_file(data_dir / PRIVATE_KEY_FILE,
                      encrypt_private_key(identity.private_key, password, iterations))
    write_secret_file(data_dir / PUBLIC_KEY_FILE, public_pem)
    write_secret_file(data_dir / CERTIFICATE_FILE, make_certificate(identity, now))


def read_public_key_file(path: Path) -> rsa.RSAPublicKey:
    try:
        pem = path.read_bytes()
        key = keyformats.load_pem_public_key(pem)
    except OSError as exc:
        raise IdentityError(f"{path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise IdentityError(f"{path}: not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise IdentityError(f"{path}: not an RSA public key")
    return key


def load_identity(data_dir: Path, password: str) -> Identity:
    """Decrypt the private key; a wrong password is an IdentityError with one clear line."""
    path = data_dir / PRIVATE_KEY_FILE
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise IdentityError(f"{path}: {exc.strerror}; run bin/setup.sh first") from exc
    try:
        key = keyformats.load_pem_private_key(pem, password.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{path}: wrong key password or damaged key file") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise IdentityError(f"{path}: not an RSA private key")
    identity = Identity.from_private_key(key)
    cert_path = data_dir / CERTIFICATE_FILE
    try:
        cert_key = spki_from_certificate(pem_certificate_to_der(cert_path.read_bytes()))
    except (OSError, Asn1Error) as exc:
        raise IdentityError(f"{cert_path}: missing or not a PEM certificate") from exc
    if id_from_spki(cert_key) != identity.node_id:
        raise IdentityError(f"{cert_path}: certificate does not belong to the private key")
    return identity
