#!/usr/bin/env python3
"""Print the FluxChat node ID of a public key: FC_ + base58(SHA-256(DER SubjectPublicKeyInfo))."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluxchat.runtime_env import use_project_venv

if __name__ == "__main__":   # started as a script, perhaps by a python3 without our dependencies
    use_project_venv()

from fluxchat.errors import FluxError  # noqa: E402
from fluxchat.identity import read_public_key_file, spki_der  # noqa: E402
from fluxchat.ids import fingerprint, format_id, id_from_spki  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Print the node ID of an RSA public key (PEM).",
        epilog="Check by hand: openssl rsa -pubin -in public_key.pem -outform DER | openssl dgst -sha256 -c",
    )
    parser.add_argument("-f", "--file", required=True, type=Path, help="public_key.pem of the node")
    parser.add_argument("--fingerprint", action="store_true",
                        help="also print the SHA-256 as colon-separated hex, as `openssl dgst -c` does")
    args = parser.parse_args(argv)
    try:
        node_id = id_from_spki(spki_der(read_public_key_file(args.file)))
    except FluxError as exc:
        print(f"gen_id.py: {exc}", file=sys.stderr)
        return 1
    print(format_id(node_id))
    if args.fingerprint:
        print(fingerprint(node_id))
    return 0


if __name__ == "__main__":
    sys.exit(main())
