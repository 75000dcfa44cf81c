#!/usr/bin/env python3
"""Generate a node identity: encrypted private key, public key and self-signed certificate."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

from fluxchat.runtime_env import use_project_venv

if __name__ == "__main__":   # started as a script, perhaps by a python3 without our dependencies
    use_project_venv()

from fluxchat.errors import FluxError  # noqa: E402
from fluxchat.identity import CERTIFICATE_FILE, PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, generate_identity, write_identity  # noqa: E402
from fluxchat.password import read_password  # noqa: E402


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    if not value.isdigit():
        raise FluxError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Create private_key.pem (PKCS#8, PBES2/PBKDF2-HMAC-SHA256/AES-256-CBC), "
                    "public_key.pem and certificate.pem in the data directory; print the node ID.",
        epilog="The password comes from FLUXCHAT_KEY_PASSWORD, FLUXCHAT_KEY_PASSWORD_FILE or a prompt.")
    parser.add_argument("-d", "--data-dir", type=Path,
                        default=Path(os.environ.get("FLUXCHAT_DATA_DIR", "var/data1")),
                        help="where the identity files go (default: $FLUXCHAT_DATA_DIR or var/data1)")
    parser.add_argument("--bits", type=int, help="RSA key size (default: $FLUXCHAT_KEY_BITS or 4096)")
    parser.add_argument("--iterations", type=int,
                        help="PBKDF2 rounds (default: $FLUXCHAT_KEY_DERIVATION_ITERATIONS or 600000)")
    parser.add_argument("--force", action="store_true", help="replace an existing identity")
    args = parser.parse_args(argv)
    try:
        bits = args.bits or env_int("FLUXCHAT_KEY_BITS", 4096)
        iterations = args.iterations or env_int("FLUXCHAT_KEY_DERIVATION_ITERATIONS", 600_000)
        existing = [n for n in (PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, CERTIFICATE_FILE)
                    if (args.data_dir / n).exists()]
        if existing and not args.force:
            print(f"gen_rsa.py: {args.data_dir} already holds {', '.join(existing)}; "
                  "use --force to replace the identity", file=sys.stderr)
            return 1
        password = read_password(confirm=True)
        print(f"generating an RSA-{bits} key…", file=sys.stderr)
        identity = generate_identity(bits)
        print(f"encrypting it with {iterations} PBKDF2 rounds…", file=sys.stderr)
        write_identity(identity, args.data_dir, password, iterations,
                       datetime.datetime.now(datetime.UTC))
    except FluxError as exc:
        print(f"gen_rsa.py: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.data_dir}/{{{PRIVATE_KEY_FILE},{PUBLIC_KEY_FILE},{CERTIFICATE_FILE}}}",
          file=sys.stderr)
    print(identity.id_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
