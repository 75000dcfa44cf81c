#!/usr/bin/env python3
"""A pool of pre-generated node identities for labs bigger than the 24 test keys.

`python3 bench/keypool.py [COUNT]` generates RSA-2048 identities once into
tmp/keypool/nodeNN/ (the layout of tests/data/keys: private_key.pem encrypted with the test
password and 1000 PBKDF2 rounds, public_key.pem, certificate.pem) plus one extra RSA-4096
identity in tmp/keypool/rsa4096b/; later runs reuse them. Benchmarks call `ensure_pool(n)`.
"""

from __future__ import annotations

import datetime
import functools
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "src"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fluxchat.identity import Identity, generate_identity, load_identity, write_identity  # noqa: E402

POOL = ROOT / "tmp" / "keypool"
PASSWORD = "test-password"      # same as tests/data/keys
ITERATIONS = 1000
EXTRA_4096 = "rsa4096b"


def key_dir(index: int) -> Path:
    return POOL / f"node{index:03d}"


def _make(target: Path, bits: int) -> str:
    if (target / "private_key.pem").exists():
        return ""
    identity = generate_identity(bits)
    tmp = target.with_name(target.name + ".tmp")
    write_identity(identity, tmp, PASSWORD, ITERATIONS, datetime.datetime.now(datetime.UTC))
    tmp.rename(target)   # a pool entry is complete or absent, even if interrupted
    return identity.id_text


def ensure_pool(count: int, bits: int = 2048) -> list[Path]:
    """Key directories 0..count-1, generating the missing ones on both cores."""
    dirs = [key_dir(i) for i in range(count)]
    missing = [d for d in dirs if not (d / "private_key.pem").exists()]
    if missing:
        POOL.mkdir(parents=True, exist_ok=True)
        print(f"keypool: generating {len(missing)} RSA-{bits} identities in {POOL}", flush=True)
        with ProcessPoolExecutor(2) as pool:
            list(pool.map(_make, missing, [bits] * len(missing)))
    return dirs


def ensure_4096() -> Path:
    """A second RSA-4096 identity (tests/data/keys/rsa4096 is the first)."""
    target = POOL / EXTRA_4096
    if not (target / "private_key.pem").exists():
        POOL.mkdir(parents=True, exist_ok=True)
        print(f"keypool: generating an RSA-4096 identity in {target}", flush=True)
        _make(target, 4096)
    return target


@functools.cache
def load(path: Path) -> Identity:
    return load_identity(path, PASSWORD)


def pool_identity(index: int) -> Identity:
    return load(key_dir(index))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ensure_pool(count)
    ensure_4096()
    print(f"keypool: {count} RSA-2048 identities and {EXTRA_4096} ready in {POOL}")


if __name__ == "__main__":
    main()
