"""Store.receive_all / move_all: a burst of mail in one transaction, each item on its own."""

from __future__ import annotations

import dataclasses
import unittest

from fluxchat.errors import StorageError
from fluxchat.outbox_states import OutboxState
from fluxchat.store import OutboxMail
from fluxchat.store_batch import (
    DELIVERED,
    DUPLICATE,
    IGNORED,
    NEW,
    MailArrival,
    OurReceipt,
    OutboxMove,
    ReceiptArrival,
)
from tests.test_store import StoreCase, inbox_mail, nid, outbox_mail, uid


def receipt_row(n: int, state: str = OutboxState.QUEUED) -> OutboxMail:
    return OutboxMail(uid(1000 + n), nid(1), "", "", 100, 2000, state, envelope=b"sealed",
                      kind="receipt")


def receipt_for(*mails: int, state: str = OutboxState.QUEUED) -> OurReceipt:
    return OurReceipt(receipt_row(mails[0], state), tuple(uid(n) for n in mails))


class ReceiveAllTest(StoreCase):
    def test_mails_and_our_receipt_commit_together(self) -> None:
        seen: list[tuple[str, bytes]] = []
        self.store.observers.append(lambda topic, uuid: seen.append((topic, uuid)))
        arrivals = [MailArrival(inbox_mail(n), 2) for n in range(3)]
        self.assertEqual(self.store.receive_all(arrivals, 100, [receipt_for(0, 1, 2)]), [NEW] * 3)
        for n in range(3):
            self.assertEqual(self.store.inbox_envelope_version(uid(n)), 2)
        receipt = self.store.get_outbox(uid(1000))
        assert receipt is not None
        self.assertEqual((receipt.kind, receipt.envelope), ("receipt", b"sealed"))
        self.assertEqual(seen, [("inbox", uid(n)) for n in range(3)] + [("outbox", uid(1000))])

    def test_copies_are_duplicates_even_within_one_batch(self) -> None:
        self.store.receive_all([MailArrival(inbox_mail(1), 1)], 100, [receipt_for(1)])
        again = [MailArrival(inbox_mail(1), 1), MailArrival(inbox_mail(2), 1),
                 MailArrival(inbox_mail(2), 1)]
        self.assertEqual(self.store.receive_all(again, 100, [receipt_for(1), receipt_for(2)]),
                         [DUPLICATE, NEW, DUPLICATE])
        self.assertEqual(self.store.count_inbox(), (2, 2))
        self.assertIsNotNone(self.store.get_outbox(uid(1002)))

    def test_a_failing_item_is_rolled_back_alone_and_gets_no_receipt(self) -> None:
        bad = MailArrival(dataclasses.replace(inbox_mail(2), sender=b"short"), 1)   # CHECK fails
        outcomes = self.store.receive_all(
            [MailArrival(inbox_mail(1), 1), bad, MailArrival(inbox_mail(3), 1)], 100,
            [receipt_for(1, 2), receipt_for(3)])
        self.assertEqual(outcomes[0], NEW)
        self.assertIsInstance(outcomes[1], StorageError)
        self.assertEqual(outcomes[2], NEW)
        # Its row went with it: a retry of that mail is new, not a duplicate.
        self.assertIsNone(self.store.read_inbox(uid(2)))
        self.assertFalse(self.store.is_seen(uid(2)))
        self.assertIsNotNone(self.store.read_inbox(uid(3)))
        # A receipt never confirms a mail that was not taken.
        self.assertIsNone(self.store.get_outbox(uid(1001)))
        self.assertIsNotNone(self.store.get_outbox(uid(1003)))

    def test_a_lone_mail_costs_three_statements(self) -> None:
        # On the path of every mail received one at a time: BEGIN, the INSERT that is also
        # the check that the uuid was never seen, COMMIT (no savepoint, no separate SELECT).
        statements: list[str] = []
        self.store._db.set_trace_callback(statements.append)
        try:
            self.assertEqual(self.store.receive_all([MailArrival(inbox_mail(1), 2)], 100), [NEW])
            self.assertEqual(len(statements), 3, statements)
            statements.clear()   # a copy, and a uuid seen before (its mail deleted since)
            self.store.remember_seen(uid(2), 100, 100)
            statements.clear()
            again = [MailArrival(inbox_mail(1), 2), MailArrival(inbox_mail(2), 2)]
            self.assertEqual(self.store.receive_all(again, 101), [DUPLICATE, DUPLICATE])
            self.assertEqual(len(statements), 4, statements)
        finally:
            self.store._db.set_trace_callback(None)
        self.assertIsNone(self.store.read_inbox(uid(2)))

    def test_a_receipt_for_mail_committed_before_is_written_once(self) -> None:
        self.store.receive_all([MailArrival(inbox_mail(1), 1)], 100)
        later = OurReceipt(receipt_row(1), ())
        self.assertEqual(self.store.receive_all([], 101, [later]), [])
        self.store.receive_all([], 102, [later])   # a second copy changes nothing
        self.assertEqual(len(self.store.outbox_history(uid(1001))), 1)

    def test_receipts_confirm_only_our_mail_to_their_sender(self) -> None:
        for n in (1, 2):
            self.store.add_outbox(outbox_mail(n), 100)   # to nid(2)
            self.store.set_outbox_state(uid(n), OutboxState.HANDED_OVER, 101)
        forged = ReceiptArrival(uid(50), 100, nid(3), (uid(1),), "from 3")
        real = ReceiptArrival(uid(51), 100, nid(2), (uid(1), uid(2), uid(9)), "from 2")
        copy = ReceiptArrival(uid(52), 100, nid(2), (uid(1),), "from 2 again")
        self.assertEqual(self.store.receive_all([forged, real, copy], 102),
                         [IGNORED, DELIVERED, IGNORED])
        for n in (1, 2):
            mail = self.store.get_outbox(uid(n))
            assert mail is not None
            self.assertEqual(mail.state, OutboxState.DELIVERED)
            self.assertEqual(self.store.outbox_history(uid(n))[-1], (102, "delivered", "from 2"))
        self.assertTrue(all(self.store.is_seen(uid(n)) for n in (50, 51, 52)))


class MoveAllTest(StoreCase):
    def test_moves_in_one_transaction_and_refused_ones_keep_the_envelope(self) -> None:
        for n in (1, 2):
            self.store.add_outbox(outbox_mail(n), 100)
        self.store.set_outbox_state(uid(2), OutboxState.DELIVERED, 101)   # the receipt came first
        moves = [OutboxMove(uid(n), OutboxState.HANDED_OVER, "handed over", next_attempt_at=500,
                            envelope=b"env%d" % n, attempted=True, keep_envelope=True)
                 for n in (1, 2)]
        self.assertEqual(self.store.move_all(moves, 102), [True, False])
        first, second = self.store.get_outbox(uid(1)), self.store.get_outbox(uid(2))
        assert first is not None and second is not None
        self.assertEqual((first.state, first.attempts, first.next_attempt_at, first.envelope),
                         ("handed_over", 1, 500, b"env1"))
        self.assertEqual((second.state, second.envelope), ("delivered", b"env2"))

    def test_a_move_that_fails_is_rolled_back_alone(self) -> None:
        for n in (1, 3):
            self.store.add_outbox(outbox_mail(n), 100)
        # uuid 2 has no row: keeping its envelope breaks the foreign key, and only that move.
        moves = [OutboxMove(uid(n), OutboxState.HANDED_OVER, "handed over", envelope=b"e",
                            attempted=True, keep_envelope=True) for n in (1, 2, 3)]
        outcomes = self.store.move_all(moves, 102)
        self.assertEqual(outcomes[0::2], [True, True])
        self.assertIsInstance(outcomes[1], StorageError)
        for n in (1, 3):
            self.assertEqual(self.store.outbox_history(uid(n))[-1],
                             (102, "handed_over", "handed over"))

    def test_nothing_to_do_costs_no_transaction(self) -> None:
        self.assertEqual(self.store.move_all([], 100), [])
        self.assertEqual(self.store.receive_all([], 100), [])


class AddOutboxAllTest(StoreCase):
    def test_a_group_is_written_with_its_history(self) -> None:
        mails = [outbox_mail(n) for n in range(5)]
        self.assertEqual(self.store.add_outbox_all(mails, 100), [None] * 5)
        for n in range(5):
            self.assertEqual(self.store.outbox_history(uid(n)), [(100, "queued", "")])

    def test_a_mail_that_fails_is_rolled_back_alone(self) -> None:
        self.store.add_outbox(outbox_mail(1), 100)
        outcomes = self.store.add_outbox_all([outbox_mail(0), outbox_mail(1), outbox_mail(2)], 100)
        self.assertEqual((outcomes[0], outcomes[2]), (None, None))
        self.assertIsInstance(outcomes[1], StorageError)
        self.assertEqual(self.store.count_outbox()["queued"], 3)


class DueExcludingTest(StoreCase):
    def test_mail_being_worked_on_is_left_out(self) -> None:
        for n in range(4):
            self.store.add_outbox(outbox_mail(n), 100)
        due = self.store.due_outbox(200, 10, exclude={uid(0), uid(2)})
        self.assertEqual([mail.uuid for mail in due], [uid(1), uid(3)])
        self.assertEqual(len(self.store.due_outbox(200, 2)), 2)

    def test_recipients_without_a_free_slot_are_left_out(self) -> None:
        self.store.add_outbox(outbox_mail(0), 100)
        self.store.add_outbox(dataclasses.replace(outbox_mail(1), recipient=nid(3)), 100)
        due = self.store.due_outbox(200, 10, skip_recipients=[nid(2)])
        self.assertEqual([mail.uuid for mail in due], [uid(1)])

    def test_mail_of_the_same_second_comes_in_the_order_it_was_queued(self) -> None:
        uuids = [uid(n) for n in (9, 3, 7, 1)]
        for uuid in uuids:
            self.store.add_outbox(dataclasses.replace(outbox_mail(0), uuid=uuid), 100)
        self.assertEqual([mail.uuid for mail in self.store.due_outbox(200, 10)], uuids)


if __name__ == "__main__":
    unittest.main()
