#!/usr/bin/env python3
"""Regenerate the committed test identities (run once; tests never generate RSA keys).

Each `keys/nodeNN/` holds a node identity as bin/setup.sh writes it, encrypted with
TEST_PASSWORD and a low PBKDF2 iteration count so tests load keys quickly.
"""

import datetime
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from fluxchat.identity import generate_identity, write_identity  # noqa: E402

TEST_PASSWORD = "test-password"
TEST_ITERATIONS = 1000
COUNT_2048 = 24


def main() -> None:
    now = datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC)
    plan = [(f"node{i:02d}", 2048) for i in range(COUNT_2048)] + [("rsa4096", 4096)]
    for name, bits in plan:
        target = HERE / "keys" / name
        if (target / "private_key.pem").exists():
            continue
        identity = generate_identity(bits)
        write_identity(identity, target, TEST_PASSWORD, TEST_ITERATIONS, now)
        print(name, identity.id_text)


if __name__ == "__main__":
    main()
