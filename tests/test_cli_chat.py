"""The conversation commands of ipc_app.py against two real node processes: reply, thread,
conversations, sent mail, read/unread, uuid prefixes, several recipients, contacts --from/--force,
and watch (human lines and --json)."""

from __future__ import annotations

import json
import subprocess
import sys
import unittest
from typing import Any

from tests import test_cli
from tests.test_cli import A_ID, APP, B_ID, DEADLINE, UUID_RE, poll


class ChatCliTest(test_cli.CliTest):
    """Reuses test_cli's two nodes and helpers; load_tests below runs only the tests added here."""

    def test_reply_thread_and_conversations(self) -> None:
        uuid = self.send("Plans", "dinner at 8?")
        self.arrived(uuid)
        reply = self.ok("-c", self.cb, "reply", uuid[:8], "-b", "see you", "--quote").strip()
        self.assertRegex(reply, UUID_RE)
        poll(lambda: any(m["uuid"] == reply for m in self.a.call("list", {"limit": 1000})["items"]),
             "the reply in A's inbox")
        out = self.ok("-c", self.ca, "read", reply[:9])
        self.assertIn("Subject:  Re: Plans\n", out)
        self.assertIn(f"Replying: {uuid}\n", out)
        self.assertTrue(out.endswith("see you\n\n" + A_ID + " wrote:\n> dinner at 8?\n"), out)
        thread = self.ok("-c", self.ca, "thread", B_ID)
        self.assertLess(thread.index(f"({uuid[:8]})"), thread.index(f"({reply[:8]})"))
        self.assertIn("dinner at 8?", thread)
        as_json = self.ok_json("-c", self.ca, "thread", B_ID)
        self.assertEqual([m["direction"] for m in as_json["items"] if m["uuid"] in (uuid, reply)], ["out", "in"])
        chats = self.ok("-c", self.ca, "conversations")
        self.assertEqual(chats.splitlines()[0].split(), ["#", "WITH", "UNREAD", "MAILS", "LAST"])
        # Sent mail reads like received mail, with its state.
        sent = self.ok("-c", self.ca, "read", uuid)
        self.assertIn(f"To:       {B_ID}\n", sent)
        self.assertRegex(sent, r"State:    (handed_over|stored|delivered)\n")

    def test_unread_mark_and_sent_listing(self) -> None:
        uuid = self.send("unread one")
        self.arrived(uuid)
        self.assertEqual(self.row(self.ok("-c", self.cb, "list", "--unread"), uuid)[:2], ["*", uuid])
        self.assertEqual(self.ok("-c", self.cb, "mark", uuid[:12]), f"Marked {uuid} read.\n")
        self.assertNotIn(uuid, self.ok("-c", self.cb, "list", "--unread"))
        self.ok("-c", self.cb, "mark", uuid, "--unread")
        self.assertIn(uuid, self.ok("-c", self.cb, "list", "--unread"))
        listing = self.ok("-c", self.ca, "list", "--sent")
        self.assertEqual(listing.splitlines()[0].split()[:3], ["#", "UUID", "CREATED"])
        self.assertEqual(listing.splitlines()[1].split()[0], "1")
        self.assertIn("not_found", self.fails(1, "-c", self.cb, "read", "000000"))
        self.assertIn("first 6", self.fails(1, "-c", self.cb, "read", "00000"))

    def test_several_recipients_and_contacts_from(self) -> None:
        out = self.ok("-c", self.ca, "mail", "-t", B_ID, "-t", A_ID, "-b", "to both", "-s", "two")
        lines = out.splitlines()
        self.assertEqual(len(lines), 2, out)
        to_b = next(line.split()[0] for line in lines if B_ID[:9] in line)
        self.arrived(to_b)
        self.assertIn("Added ann", self.ok("-c", self.cb, "contacts", "add", "ann", "--from", to_b[:10]))
        self.assertIn("exists", self.fails(1, "-c", self.cb, "contacts", "add", "ann", B_ID))
        self.assertEqual(self.ok("-c", self.cb, "contacts", "add", "ann", B_ID, "--force"),
                         f"Added ann = {B_ID} (was {A_ID}).\n")
        self.ok("-c", self.cb, "contacts", "remove", "ann")

    def test_watch_prints_arrivals(self) -> None:
        for as_json in (False, True):
            argv = [sys.executable, str(APP), "-c", self.cb, "watch"] + (["--json"] if as_json else [])
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.addCleanup(test_cli._reap, proc)  # type: ignore[arg-type]
            assert proc.stdout is not None
            # The watch is up once the node counts a subscriber.
            poll(lambda: self.b.call("info")["counts"]["inbox"] >= 0 and self._watchers(self.b) > 0,
                 "watch subscribed")
            uuid = self.send("watched", "hi")
            line = self._line_with(proc, uuid if as_json else uuid[:8])
            if as_json:
                event: dict[str, Any] = json.loads(line)
                self.assertEqual((event["type"], event["from"], event["subject"]), ("mail", A_ID, "watched"))
            else:
                self.assertRegex(line, rf"^\d\d:\d\d:\d\d  mail from FC_\w+…: watched  \({uuid[:8]}\)$")
            proc.terminate()
            proc.communicate(timeout=DEADLINE)   # reads the rest and closes the pipes

    @staticmethod
    def _watchers(node: Any) -> int:
        return int(node.call("info").get("watchers", 0))

    @staticmethod
    def _line_with(proc: subprocess.Popen[str], text: str) -> str:
        assert proc.stdout is not None
        while line := proc.stdout.readline():
            if text in line:
                return line.rstrip("\n")
        raise AssertionError(f"watch ended without {text!r}: {proc.stderr.read() if proc.stderr else ''}")


def load_tests(loader: unittest.TestLoader, tests: unittest.TestSuite, pattern: str | None) -> unittest.TestSuite:
    names = [name for name in vars(ChatCliTest) if name.startswith("test_")]
    return unittest.TestSuite(ChatCliTest(name) for name in names)
