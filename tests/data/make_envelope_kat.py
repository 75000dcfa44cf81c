#!/usr/bin/env python3
"""Write envelope_kat.json: fixed inputs, the deterministic encodings, one sealed envelope.

Run once; the committed output is the known answer. RSA-OAEP and RSA-PSS are randomized,
so re-running gives a different envelope; the inner encoding and the AAD stay the same.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from fluxchat.envelope import (  # noqa: E402
    ENVELOPE_VERSION,
    MailContent,
    OuterHeader,
    encode_header,
    encode_inner,
    seal,
)
from fluxchat.identity import load_identity  # noqa: E402

PASSWORD = "test-password"
CONTENT_KEY = bytes(range(32))
NONCE = bytes(range(0xA0, 0xAC))
UUID = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
CREATED_AT = 1_795_000_000
EXPIRES_AT = CREATED_AT + 7 * 86400
SUBJECT = "KAT \u00e9t\u00e9 \u4f60\u597d \U0001F4EC"
BODY = "line one\nline two\n"


def main() -> None:
    sender = load_identity(HERE / "keys" / "node00", PASSWORD)
    recipient = load_identity(HERE / "keys" / "node01", PASSWORD)
    content = MailContent("mail", UUID, sender.node_id, recipient.node_id, CREATED_AT,
                          SUBJECT, BODY, b"")
    header = OuterHeader(ENVELOPE_VERSION, recipient.node_id, UUID, EXPIRES_AT)
    envelope = seal(content, sender, recipient.public_der, EXPIRES_AT, CONTENT_KEY, NONCE)
    kat = {
        "sender": "node00",
        "recipient": "node01",
        "kind": content.kind,
        "uuid": UUID.hex(),
        "created_at": CREATED_AT,
        "expires_at": EXPIRES_AT,
        "subject": SUBJECT,
        "body": BODY,
        "ref": "",
        "content_key": CONTENT_KEY.hex(),
        "nonce": NONCE.hex(),
        "inner": encode_inner(content, sender.public_der).hex(),
        "aad": encode_header(header).hex(),
        "envelope": envelope.hex(),
    }
    (HERE / "envelope_kat.json").write_text(json.dumps(kat, indent=1, ensure_ascii=False) + "\n",
                                            encoding="utf-8")


if __name__ == "__main__":
    main()
