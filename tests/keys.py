"""Precomputed test identities from tests/data/keys (see tests/data/make_keys.py)."""

from __future__ import annotations

import functools
import hashlib
import shutil
import time
from pathlib import Path

from fluxchat.identity import Identity, load_identity
from fluxchat.linkkeys import LinkCredentials

KEYS = Path(__file__).resolve().parent / "data" / "keys"
TEST_PASSWORD = "test-password"
NODE_COUNT = 24


def key_dir(index: int) -> Path:
    return KEYS / f"node{index:02d}"


@functools.cache
def identity(index: int) -> Identity:
    """Test node `index` (RSA-2048); cached, since decrypting costs a PBKDF2 run."""
    return load_identity(key_dir(index), TEST_PASSWORD)


@functools.cache
def identity_4096() -> Identity:
    return load_identity(KEYS / "rsa4096", TEST_PASSWORD)


def install_identity(index: int, data_dir: Path) -> None:
    """Copy test identity `index` into a fresh data directory (0700, files 0600)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in ("private_key.pem", "public_key.pem", "certificate.pem"):
        shutil.copyfile(key_dir(index) / name, data_dir / name)
        (data_dir / name).chmod(0o600)


@functools.cache
def link_credentials(index: int) -> LinkCredentials:
    """Test node `index`'s link key (fixed seed), certified from an hour ago for two days.

    An hour, not a minute: test_session and test_fuzz date their handshakes with a clock read
    when the module is imported, and a record may be dated at most CLOCK_SKEW (600 s) after
    such a clock. On a loaded machine the suite reaches a test more than 11 minutes after
    importing it, and every handshake there failed (AUTH_FAILED, "not yet valid")."""
    seed = hashlib.sha256(b"fluxchat-test-link-key-%d" % index).digest()
    return LinkCredentials.issue(identity(index), seed, int(time.time()) - 3600)
