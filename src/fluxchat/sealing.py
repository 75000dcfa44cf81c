"""Sealing our mail for its recipient: envelope v2 to its mail key record when it has a valid
one, else v1 (RSA-OAEP + RSA-PSS, see envelope.py).

A burst of mail to one recipient looks its key and record up once, not once per mail.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from . import envelope2
from .envelope import MailContent, seal
from .identity import Identity
from .mailkeyring import MailKeyring
from .overlay import Overlay
from .store import OutboxMail

T = TypeVar("T")


async def off_loop(work: Callable[..., T], *args: Any) -> T:
    """Run RSA private-key work in a worker thread: `cryptography` releases the GIL there,
    so the event loop keeps serving links and several cores share the signing."""
    return await asyncio.get_running_loop().run_in_executor(None, work, *args)


def content_of(mail: OutboxMail, me: bytes, display_name: str) -> MailContent:
    """What an outbox mail's envelope carries, signed."""
    return MailContent("mail", mail.uuid, me, mail.recipient, mail.created_at, mail.subject,
                       mail.body, mail.ref or b"", display_name)


async def seal_all(mails: Sequence[OutboxMail], me: Identity, overlay: Overlay,
                   keyring: MailKeyring | None, display_name: str) -> list[bytes] | None:
    """Envelopes for `mails`, all to one recipient, in order; None if the recipient's key was
    not found (not started yet, or offline since long)."""
    if not mails:
        return []
    recipient = mails[0].recipient
    key = await overlay.find_key(recipient)
    if key is None:
        return None
    contents = [content_of(mail, me.node_id, display_name) for mail in mails]
    if keyring is not None and keyring.signer is not None:
        record = await keyring.record_for(recipient, key)
        if record is not None:   # v2 costs well under a millisecond: no worker thread
            signer = keyring.signer
            return [envelope2.seal(content, signer, record, mail.expires_at)
                    for content, mail in zip(contents, mails, strict=True)]
    return [await off_loop(seal, content, me, key, mail.expires_at, os.urandom(32),
                           os.urandom(12))
            for content, mail in zip(contents, mails, strict=True)]
