#!/usr/bin/env python3
"""Write mailkeys_kat.json: fixed mail key secrets, the records node00 and node01 sign for
them, and one envelope v2 from node00 to node01.

Run once; the committed output is the known answer. RSA-PSS and HPKE are randomized, so a
re-run gives other record signatures and another envelope; the signed bytes of the records,
the public halves and the Ed25519 signature over a given header and inner stay the same.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent / "src"))

from fluxchat import envelope2  # noqa: E402
from fluxchat.envelope import MailContent  # noqa: E402
from fluxchat.identity import load_identity  # noqa: E402
from fluxchat.mailkeys import MailKeySecrets, make_record, signed_bytes  # noqa: E402

PASSWORD = "test-password"
CREATED_AT = 1_795_000_000
RECORD_EXPIRES = CREATED_AT + 2 * 86400
EXPIRES_AT = CREATED_AT + 7 * 86400
UUID = bytes.fromhex("a0b1c2d3e4f5061728394a5b6c7d8e9f")
SUBJECT = "KAT v2 \u00e9t\u00e9 \U0001F511"
BODY = "forward secret\n"


def secrets(first: int) -> MailKeySecrets:
    return MailKeySecrets(bytes((first + i) % 256 for i in range(128)))


def main() -> None:
    sender = load_identity(HERE / "keys" / "node00", PASSWORD)
    recipient = load_identity(HERE / "keys" / "node01", PASSWORD)
    s_secrets, r_secrets = secrets(0), secrets(0x80)
    s_record = make_record(sender, s_secrets, CREATED_AT, RECORD_EXPIRES)
    r_record = make_record(recipient, r_secrets, CREATED_AT, RECORD_EXPIRES)
    content = MailContent("mail", UUID, sender.node_id, recipient.node_id, CREATED_AT,
                          SUBJECT, BODY, b"")
    signer = envelope2.MailSigner(sender.public_der, sender.node_id, s_record.encode(),
                                  s_secrets.signing_key())
    sealed = envelope2.seal(content, signer, r_record, EXPIRES_AT)
    header = envelope2.Header2(recipient.node_id, UUID, EXPIRES_AT, r_record.prekey_id)
    inner = envelope2.encode_inner(content, sender.public_der, s_record.encode())
    signature = s_secrets.signing_key().sign(envelope2.MAIL_CONTEXT + header.encode() + inner)
    kat = {
        "sender": "node00", "recipient": "node01",
        "sender_secrets": s_secrets.raw.hex(), "recipient_secrets": r_secrets.raw.hex(),
        "created_at": CREATED_AT, "record_expires_at": RECORD_EXPIRES,
        "expires_at": EXPIRES_AT, "uuid": UUID.hex(), "subject": SUBJECT, "body": BODY,
        "sender_sign_key": s_record.sign_key.hex(),
        "recipient_prekey_id": r_record.prekey_id.hex(),
        "recipient_record_signed": signed_bytes(r_record).hex(),
        "sender_record": s_record.encode().hex(),
        "recipient_record": r_record.encode().hex(),
        "header": header.encode().hex(),
        "signature": signature.hex(),
        "envelope": sealed.hex(),
    }
    (HERE / "mailkeys_kat.json").write_text(json.dumps(kat, indent=1, ensure_ascii=False)
                                            + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
