"""A delivery attempt must not undo what happened while it awaited the network.

Over loopback the recipient's receipt often arrives before its Ok to our Deliver; the attempt
then used to overwrite `delivered` with `handed_over` and send the mail again after a backoff.
"""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path
from typing import Any

from fluxchat.config import MailConfig
from fluxchat.mailer import Mailer
from fluxchat.routing import Peer
from fluxchat.store import OutboxMail, Store
from tests.keys import identity

NOW = 1_700_000_000
PEER = identity(1).node_id


class FakeOverlay:
    async def find_contact(self, node_id: bytes) -> Peer:
        return Peer(node_id, "127.0.0.1", 1)


class MailerRaceTest(unittest.IsolatedAsyncioTestCase):
    def setUp(self) -> None:
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.store = Store.open(Path(tmp.name) / "test.db")
        self.addCleanup(self.store.close)
        overlay: Any = FakeOverlay()
        self.mailer = Mailer(identity(0), self.store, overlay, net=None,  # type: ignore[arg-type]
                             config=MailConfig(), max_payload=1 << 20, clock=lambda: NOW)
        self.mail = OutboxMail(b"\x01" * 16, PEER, "s", "b", NOW, NOW + 3600, envelope=b"sealed")
        self.store.add_outbox(self.mail, NOW)

    def hand_over_after(self, meanwhile: Any) -> None:
        """Direct delivery succeeds, but `meanwhile` runs before the Ok comes back."""
        async def deliver(peer: Peer, envelope: bytes) -> bool:
            meanwhile()
            return True
        self.mailer._deliver_direct = deliver  # type: ignore[method-assign]

    async def test_receipt_before_the_ok_keeps_delivered(self) -> None:
        self.hand_over_after(lambda: self.store.set_outbox_state(self.mail.uuid, "delivered", NOW, "receipt"))
        await self.mailer.attempt(self.mail)
        current = self.store.get_outbox(self.mail.uuid)
        assert current is not None
        self.assertEqual(current.state, "delivered")
        self.assertEqual([s for _, s, _ in self.store.outbox_history(self.mail.uuid)], ["queued", "delivered"])
        self.assertEqual(self.store.due_outbox(NOW + 10**6, 10), [])  # never sent again

    async def test_mail_deleted_during_the_attempt(self) -> None:
        self.hand_over_after(lambda: self.store.delete_outbox(self.mail.uuid))
        await self.mailer.attempt(self.mail)  # no StorageError for the vanished row
        self.assertIsNone(self.store.get_outbox(self.mail.uuid))

    async def test_plain_hand_over_still_recorded(self) -> None:
        self.hand_over_after(lambda: None)
        await self.mailer.attempt(self.mail)
        current = self.store.get_outbox(self.mail.uuid)
        assert current is not None
        self.assertEqual((current.state, current.attempts), ("handed_over", 1))


if __name__ == "__main__":
    unittest.main()
