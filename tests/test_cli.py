"""The real src/ipc_app.py as a subprocess against real server_app.py daemons.

Node A (max_body_bytes 1000) and node B (bootstrapping from A) run for the whole module;
a third node is started only to be stopped. Mail only ever goes A → B over real TLS links, so
A's inbox and B's outbox stay empty, and A's contacts are empty outside the contacts test.
FLUXCHAT_TEST_LOG=info prints the nodes' logs at the end.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fluxchat import cli_show
from fluxchat.ids import fingerprint, parse_id
from fluxchat.ipc_protocol import MAX_LINE, make_request
from tests.keys import identity
from tests.lab import WAIT, ProcessNode

APP = Path(__file__).resolve().parent.parent / "src" / "ipc_app.py"
DEADLINE = WAIT   # a bound for a command or a condition, not a sleep: see tests/lab.py
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_BODY = 1000
A_ID, B_ID = identity(0).id_text, identity(1).id_text


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str


def poll(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """`check()` until it returns something truthy; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def cli_config(node: ProcessNode) -> Path:
    """The node's own config with the IPC port it really bound (the lab asks for port 0)."""
    settings = json.loads(node.config_path.read_text())
    settings["ipc"] = {**settings.get("ipc", {}), "port": node.runtime["ipc_port"]}
    path = node.config_path.with_name(f"cli{node.index:02d}.json")
    path.write_text(json.dumps(settings, indent=1))
    return path


def start_node(directory: Path, index: int, bootstrap: list[str],
               overrides: dict[str, Any] | None = None) -> ProcessNode:
    node = ProcessNode(directory, index, bootstrap, overrides)
    try:
        node.start()
    except BaseException:
        stop_node(node)
        raise
    return node


def stop_node(node: ProcessNode) -> None:
    """SIGTERM, and SIGKILL if that does not end it in time: no node outlives the tests."""
    try:
        node.stop()
    except subprocess.TimeoutExpired:
        node.kill()
        raise


def dump_logs(directory: Path) -> None:
    if os.environ.get("FLUXCHAT_TEST_LOG"):
        for log in sorted(directory.glob("node*/stderr.log")):
            print(f"----- {log.parent.name}\n{log.read_text(errors='replace')}", file=sys.stderr)


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def escape_free(text: str) -> bool:
    """No C0/C1 control (other than newline) and no bidi override reaches the terminal."""
    return not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0
                   or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in text)


class CliTest(unittest.TestCase):
    tmp: Path
    a: ProcessNode
    b: ProcessNode
    ca: str
    cb: str

    @classmethod
    def setUpClass(cls) -> None:
        holder = tempfile.TemporaryDirectory()
        cls.addClassCleanup(holder.cleanup)
        cls.tmp = Path(holder.name)
        cls.addClassCleanup(dump_logs, cls.tmp)  # cleanups run last-in first-out: after the stops
        cls.a = start_node(cls.tmp, 0, [], {"mail": {"max_body_bytes": MAX_BODY}})
        cls.addClassCleanup(stop_node, cls.a)
        cls.b = start_node(cls.tmp, 1, [cls.a.address])
        cls.addClassCleanup(stop_node, cls.b)
        cls.ca, cls.cb = str(cli_config(cls.a)), str(cli_config(cls.b))
        # A can only seal mail for B once it can reach B for B's key: wait for the link.
        poll(lambda: any(link["id"] == B_ID for link in cls.a.call("peers")["links"]),
             "B linked to A")

    # --- helpers ---------------------------------------------------------------------------

    def spawn(self, argv: tuple[str, ...], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        base = {k: v for k, v in os.environ.items() if k != "FLUXCHAT_CONFIG"}
        proc = subprocess.Popen([sys.executable, str(APP), *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.tmp,
                                env={**base, "PYTHONUTF8": "1", **(env or {})})
        self.addCleanup(_reap, proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[bytes], stdin: bytes = b"") -> Run:
        out, err = proc.communicate(stdin, timeout=DEADLINE)
        return Run(proc.returncode, out.decode("utf-8"), err.decode("utf-8"))

    def app(self, *argv: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Run:
        return self.finish(self.spawn(argv, env), stdin)

    def apps(self, *argvs: tuple[str, ...]) -> list[Run]:
        """Independent invocations, run side by side to keep the module fast."""
        return [self.finish(proc) for proc in [self.spawn(argv) for argv in argvs]]

    def ok(self, *argv: str, stdin: bytes = b"") -> str:
        run = self.app(*argv, stdin=stdin)
        self.assertEqual((run.code, run.err), (0, ""), argv)
        return run.out

    def ok_json(self, *argv: str) -> Any:
        return json.loads(self.ok("--json", *argv))

    def fails(self, code: int, *argv: str, stdin: bytes = b"") -> str:
        run = self.app(*argv, stdin=stdin)
        self.assertEqual((run.code, run.out), (code, ""), (argv, run.err))
        return run.err

    def send(self, subject: str = "Test", body: str = "Hello World", to: str = B_ID) -> str:
        """A mails B through the CLI in the seed's form; returns the uuid it printed."""
        out = self.ok("mail", "-c", self.ca, "-s", subject, "-b", body, "-t", to)
        self.assertRegex(out, f"^{UUID_RE.pattern}\n$")
        return out.strip()

    def arrived(self, uuid: str) -> None:
        poll(lambda: any(m["uuid"] == uuid for m in self.b.call("list", {"limit": 1000})["items"]),
             f"mail {uuid} in B's inbox")

    def delivered(self, uuid: str) -> dict[str, Any]:
        return poll(lambda: (s := self.a.call("status", {"uuid": uuid}))["state"] == "delivered" and s,
                    f"mail {uuid} delivered")

    def row(self, listing: str, uuid: str) -> list[str]:
        rows = [line for line in listing.splitlines() if uuid in line]
        self.assertEqual(len(rows), 1, listing)
        cells = rows[0].split()
        return cells[1:] if listing.startswith("#") else cells  # drop the row number

    # --- the seed's forms and the whole flow ---------------------------------------------

    def test_seed_forms_mail_list_read_status(self) -> None:
        uuid = self.send("Test", "Hello World")
        self.arrived(uuid)
        listing = self.ok("-c", self.cb, "list")
        self.assertEqual(listing.splitlines()[0].split(), ["#", "UUID", "RECEIVED", "FROM", "SUBJECT"])
        row = self.row(listing, uuid)
        self.assertEqual((row[0], row[1], row[4], row[5]), ("*", uuid, A_ID[:9] + "…", "Test"))
        out = self.ok("-c", self.cb, "read", "--uuid", uuid)
        self.assertIn(f"From:     {A_ID}\n", out)
        self.assertIn(f"To:       {B_ID}\n", out)
        self.assertIn("Subject:  Test\n", out)
        self.assertIn("Verified: yes", out)
        self.assertIn(f"UUID:     {uuid}\n", out)
        self.assertTrue(out.endswith("\n\nHello World\n"), out)
        self.assertEqual(self.row(self.ok("-c", self.cb, "list"), uuid)[0], uuid)  # no longer new
        self.delivered(uuid)
        status = self.ok("-c", self.ca, "status", "--uuid", uuid)
        self.assertIn("State:     delivered\n", status)
        self.assertIn(f"To:        {B_ID[:9]}…\n", status)
        self.assertIn("History:", status)

    def test_options_after_the_command_and_short_uuid(self) -> None:
        uuid = self.send("after")
        self.arrived(uuid)
        self.assertIn(uuid, self.ok("list", "-c", self.cb))
        self.assertEqual(self.ok("read", "-u", uuid.upper(), "-c", self.cb).rsplit("\n\n", 1)[1],
                         "Hello World\n")
        self.assertEqual(json.loads(self.ok("read", uuid, "--json", "-c", self.cb))["uuid"], uuid)
        self.assertIn(uuid, self.ok("status", uuid, "-c", self.ca))
        self.assertIn(A_ID, self.ok("info", "--json", "-c", self.ca))

    def test_config_from_environment(self) -> None:
        run = self.app("info", env={"FLUXCHAT_CONFIG": self.ca})
        self.assertEqual(run.code, 0, run.err)
        self.assertIn(A_ID, run.out)
        run = self.app("info")  # cwd has no var/config1.json
        self.assertEqual((run.code, run.out), (2, ""))
        self.assertIn("var/config1.json", run.err)

    def test_list_new_only(self) -> None:
        uuid = self.send("new only")
        self.arrived(uuid)
        self.assertEqual(self.row(self.ok("-c", self.cb, "list", "-n"), uuid)[:2], ["*", uuid])
        self.ok("-c", self.cb, "read", "-u", uuid)
        self.assertNotIn(uuid, self.ok("-c", self.cb, "list", "--new"))
        self.assertIn(uuid, self.ok("-c", self.cb, "list"))

    def test_list_outbox(self) -> None:
        uuid = self.send("outgoing")
        row = self.row(self.ok("-c", self.ca, "list", "--outbox"), uuid)
        self.assertEqual((row[0], row[3], row[-1]), (uuid, B_ID[:9] + "…", "outgoing"))
        self.assertIn(row[4], ("queued", "handed_over", "stored", "delivered"))
        self.assertEqual(self.ok("-c", self.cb, "list", "--outbox"), "No mail in outbox.\n")

    def test_empty_mailbox(self) -> None:
        self.assertEqual(self.ok("-c", self.ca, "list"), "No mail in inbox.\n")
        self.assertEqual(self.ok("-c", self.ca, "list", "-n"), "No new mail in inbox.\n")
        self.assertEqual(self.ok_json("-c", self.ca, "list"), {"folder": "inbox", "total": 0, "offset": 0,
                                                                     "items": []})

    def test_delete(self) -> None:
        uuid = self.send("to delete")
        self.arrived(uuid)
        self.assertEqual(self.ok("-c", self.cb, "delete", "-u", uuid), f"Deleted {uuid}.\n")
        self.assertNotIn(uuid, self.ok("-c", self.cb, "list"))
        err = self.fails(1, "-c", self.cb, "read", "-u", uuid)
        self.assertTrue(err.startswith(f"error: not_found: no mail {uuid}"), err)
        err = self.fails(1, "-c", self.cb, "delete", uuid)
        self.assertTrue(err.startswith(f"error: not_found: no mail {uuid}"), err)
        # The sender may delete its outbox copy too.
        self.assertEqual(self.ok_json("-c", self.ca, "delete", uuid), {"uuid": uuid, "deleted": True})
        self.fails(1, "-c", self.ca, "status", uuid)

    def test_body_from_stdin(self) -> None:
        body = "first line\nsecond line\n\ttabbed\n"
        out = self.ok("mail", "-c", self.ca, "-t", B_ID, "-s", "stdin", "-b", "-", stdin=body.encode())
        uuid = out.strip()
        self.arrived(uuid)
        self.assertEqual(self.ok_json("-c", self.cb, "read", "-u", uuid)["body"], body)
        # Without -b, piped input is the body as well.
        uuid = self.ok("mail", "-c", self.ca, "-t", B_ID, stdin=b"piped").strip()
        self.arrived(uuid)
        mail = self.ok_json("-c", self.cb, "read", "-u", uuid)
        self.assertEqual((mail["subject"], mail["body"]), ("", "piped"))
        err = self.fails(2, "mail", "-c", self.ca, "-t", B_ID, "-b", "-", stdin=b"\xff\xfe")
        self.assertIn("not UTF-8", err)

    def test_emoji_and_cjk_round_trip(self) -> None:
        subject, body = "Grüße 🎉 你好", "こんにちは 🌍\n第二行 — ünïcödé\n"
        uuid = self.send(subject, body)
        self.arrived(uuid)
        self.assertEqual(self.row(self.ok("-c", self.cb, "list"), uuid)[-3:], subject.split())
        out = self.ok("-c", self.cb, "read", "-u", uuid)
        self.assertIn(f"Subject:  {subject}\n", out)
        self.assertTrue(out.endswith("\n\n" + body + "\n"), out)
        mail = self.ok_json("-c", self.cb, "read", "-u", uuid)
        self.assertEqual((mail["subject"], mail["body"]), (subject, body))

    def test_terminal_escapes_are_neutralised(self) -> None:
        subject = "\x1b[2J\x1b[31mred\x9b1m\u202eevil"
        body = "line\x1b]0;pwned\x07\r\nnext\rover\u2066x"
        uuid = self.send(subject, body)
        self.arrived(uuid)
        listing = self.ok("-c", self.cb, "list")
        self.assertTrue(escape_free(listing), repr(listing))
        self.assertIn("\\x1b[2J\\x1b[31mred\\x9b1m\\u202eevil", listing)
        out = self.ok("-c", self.cb, "read", "-u", uuid)
        self.assertTrue(escape_free(out), repr(out))
        self.assertIn("Subject:  \\x1b[2J\\x1b[31mred\\x9b1m\\u202eevil\n", out)
        self.assertTrue(out.endswith("\n\nline\\x1b]0;pwned\\x07\nnext\\x0dover\\u2066x\n"), repr(out))
        mail = self.ok_json("-c", self.cb, "read", "-u", uuid)  # scripts get the exact text
        self.assertEqual((mail["subject"], mail["body"]), (subject, body))

    # --- contacts ------------------------------------------------------------------------

    def test_contacts_and_alias_as_recipient(self) -> None:
        self.addCleanup(self.app, "-c", self.ca, "contacts", "remove", "bob")
        self.assertEqual(self.ok("-c", self.ca, "contacts"), "No contacts.\n")
        self.assertEqual(self.ok("-c", self.ca, "contacts", "add", "bob", B_ID), f"Added bob = {B_ID}.\n")
        self.assertEqual(self.ok("-c", self.ca, "contacts", "list").splitlines(),
                         ["ALIAS  ID", f"bob    {B_ID}"])
        self.assertEqual(self.ok_json("-c", self.ca, "contacts"), {"contacts": [{"alias": "bob", "id": B_ID,
                                                 "fingerprint": fingerprint(parse_id(B_ID)), "name": ""}]})
        uuid = self.send("by alias", to="bob")
        self.assertEqual(self.row(self.ok("-c", self.ca, "list", "--outbox"), uuid)[3], "bob")
        self.arrived(uuid)
        self.assertEqual(self.ok_json("-c", self.ca, "status", uuid)["alias"], "bob")
        self.assertIn("To:        bob\n", self.ok("-c", self.ca, "status", uuid))
        self.assertEqual(self.ok("-c", self.ca, "contacts", "remove", "bob"), "Removed bob.\n")
        nothing = self.app("-c", self.ca, "contacts", "remove", "bob")   # nothing removed: not a success
        self.assertEqual((nothing.code, nothing.out), (1, "No contact named bob.\n"))
        nothing = self.app("-c", self.ca, "--json", "contacts", "remove", "bob")
        self.assertEqual((nothing.code, json.loads(nothing.out)), (1, {"alias": "bob", "removed": False}))
        err = self.fails(1, "mail", "-c", self.ca, "-t", "bob", "-b", "x")
        self.assertTrue(err.startswith("error: not_found: no contact named 'bob'"), err)
        err = self.fails(1, "-c", self.ca, "contacts", "add", "FC_bob", B_ID)
        self.assertTrue(err.startswith("error: bad_argument: alias:"), err)
        err = self.fails(1, "-c", self.ca, "contacts", "add", "carol", "FC_notanid")
        self.assertTrue(err.startswith("error: invalid_id: id:"), err)

    def test_pasted_ids_and_uuids_may_carry_spaces(self) -> None:
        self.addCleanup(self.app, "-c", self.ca, "contacts", "remove", "spaced")
        self.assertEqual(self.ok("-c", self.ca, "contacts", "add", "spaced", f" {B_ID} \n"),
                         f"Added spaced = {B_ID}.\n")
        uuid = self.send("spaces", to=f"{B_ID} ")
        self.assertEqual(self.ok_json("-c", self.ca, "status", f"{uuid} ")["uuid"], uuid)

    def test_json_errors_are_json(self) -> None:
        run = self.app("-c", self.ca, "--json", "status", "123e4567-e89b-12d3-a456-426614174000")
        self.assertEqual(run.code, 1)
        self.assertEqual(json.loads(run.out)["error"]["code"], "not_found")
        run = self.app("-c", str(self.tmp / "nope.json"), "--json", "info")
        self.assertEqual(run.code, 2)
        self.assertEqual(json.loads(run.out)["error"]["code"], "config")

    def test_status_history_collapses_retries(self) -> None:
        rows = cli_show.history_rows([{"at": 100, "state": "queued", "detail": ""},
                                     {"at": 101, "state": "waiting_for_key", "detail": "no key"},
                                     {"at": 161, "state": "waiting_for_key", "detail": "no key"},
                                     {"at": 281, "state": "waiting_for_key", "detail": "no key"},
                                     {"at": 290, "state": "stored", "detail": "on 3"}])
        self.assertEqual([row[1] for row in rows], ["queued", "waiting_for_key", "stored"])
        self.assertRegex(rows[1][2], r"^no key \(x3, last \d\d:\d\d:\d\d\)$")
        self.assertRegex(rows[0][0], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")

    def test_list_footer_offers_more_only_when_there_is_more(self) -> None:
        args = {"folder": "inbox", "new_only": False, "offset": 0}
        items = [{"uuid": str(n), "new": False} for n in range(2)]
        first = cli_show.show_list({"folder": "inbox", "total": 4, "items": items}, args)
        self.assertTrue(first.endswith("Showing 1-2 of 4; --offset 2 shows the next ones."), first)
        last = cli_show.show_list({"folder": "inbox", "total": 4, "items": items}, dict(args, offset=2))
        self.assertTrue(last.endswith("Showing 3-4 of 4."), last)

    # --- errors --------------------------------------------------------------------------

    def test_body_over_the_limit_is_too_large(self) -> None:
        for body in ("x" * (MAX_BODY + 1), "é" * (MAX_BODY // 2 + 1)):  # UTF-8 bytes count
            err = self.fails(1, "mail", "-c", self.ca, "-t", B_ID, "-b", "-", stdin=body.encode())
            self.assertTrue(err.startswith("error: too_large: body has"), err)
            self.assertIn(f"{len(body.encode())} bytes", err)
            self.assertIn(str(MAX_BODY), err)
        uuid = self.send("at the limit", "x" * MAX_BODY)
        self.arrived(uuid)

    def test_bad_uuid_and_id(self) -> None:
        cases: list[tuple[tuple[str, ...], int, str]] = [
            (("-c", self.cb, "read", "-u", "not-a-uuid"), 1, "error: bad_argument: uuid: expected a uuid"),
            (("-c", self.cb, "delete", "12345"), 1, "error: bad_argument: uuid: expected a uuid"),
            (("-c", self.ca, "status", "-u", str(uuidlib.uuid4())), 1, "error: not_found: no mail"),
            (("-c", self.ca, "read"), 2, "usage:"),
            (("mail", "-c", self.ca, "-t", "FC_1111", "-b", "x"), 1, "error: invalid_id: "),
            (("mail", "-c", self.ca, "-t", "FC_" + "0OIl" * 11, "-b", "x"), 1, "error: invalid_id: "),
            (("mail", "-c", self.ca, "-t", "no such!", "-b", "x"), 1, "error: invalid_id: to: expected a node ID"),
            (("mail", "-c", self.ca, "-t", "nobody", "-b", "x"), 1, "error: not_found: no contact named 'nobody'"),
        ]
        for (argv, code, start), run in zip(cases, self.apps(*(argv for argv, _, _ in cases)), strict=True):
            self.assertEqual((run.code, run.out), (code, ""), argv)
            self.assertTrue(run.err.startswith(start), (argv, run.err))
            if code == 1:  # an error reply is one clear line
                self.assertEqual(run.err.count("\n"), 1, run.err)

    def test_usage_errors_and_help(self) -> None:
        runs = self.apps(("-c", self.ca), ("-c", self.ca, "fly"), ("-c", self.ca, "list", "--limit", "0"),
                         ("--help",), ("mail", "--help"))
        for run in runs[:2]:
            self.assertEqual((run.code, run.out), (2, ""))
            self.assertIn("usage:", run.err)
        self.assertEqual(runs[2].code, 1)
        self.assertTrue(runs[2].err.startswith("error: bad_argument: limit:"), runs[2].err)
        for run in runs[3:]:
            self.assertEqual((run.code, run.err), (0, ""))
            self.assertIn("usage:", run.out)
        self.assertIn("exit codes", runs[3].out)
        self.assertIn("--to", runs[4].out)

    def test_token_file_missing_is_exit_3(self) -> None:
        settings = json.loads(Path(self.ca).read_text())
        empty = self.tmp / "no-token"
        empty.mkdir(exist_ok=True)
        path = self.tmp / "no-token.json"
        path.write_text(json.dumps({**settings, "data_dir": str(empty)}))
        err = self.fails(3, "-c", str(path), "info")
        self.assertIn(str(empty / "ipc.token"), err)
        self.assertIn(f"src/server_app.py -c {path}", err)

    # --- the other commands ------------------------------------------------------------

    def test_info_fingerprint_matches_openssl(self) -> None:
        info = self.ok_json("-c", self.ca, "info")
        self.assertEqual(info["id"], A_ID)
        self.assertEqual(info["fingerprint"], ":".join(f"{b:02x}" for b in identity(0).node_id))
        der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(self.a.data_dir / "public_key.pem"),
                              "-outform", "DER"], capture_output=True, check=True, timeout=DEADLINE).stdout
        digest = subprocess.run(["openssl", "dgst", "-sha256", "-c"], input=der, capture_output=True,
                                check=True, timeout=DEADLINE).stdout.decode()
        self.assertEqual(info["fingerprint"], digest.split("= ", 1)[1].strip())
        out = self.ok("-c", self.ca, "info")
        self.assertIn(f"ID:          {A_ID}\n", out)
        self.assertIn(f"Fingerprint: {info['fingerprint']}\n", out)
        self.assertIn(f"Listen:      127.0.0.1:{self.a.runtime['port']}\n", out)
        self.assertIn(f"IPC:         127.0.0.1:{self.a.runtime['ipc_port']}\n", out)

    def test_peers(self) -> None:
        # B closed the links its join made; the fetches every 5 s link the two again.
        poll(lambda: any(link["id"] == A_ID for link in self.b.call("peers")["links"]),
             "A linked to B")
        out = self.ok("-c", self.cb, "peers")
        self.assertEqual(self.row(out, A_ID)[0], A_ID)
        self.assertIn(self.row(out, A_ID)[1], ("in", "out"))
        self.assertRegex(out, r"\nRouting table: [1-9]\d* nodes\n$")
        peers = self.ok_json("-c", self.ca, "peers")
        self.assertIn(B_ID, [link["id"] for link in peers["links"]])

    def test_save(self) -> None:
        self.assertEqual(self.ok("-c", self.ca, "save"), "Saved.\n")
        self.assertEqual(self.ok_json("save", "-c", self.ca), {"saved": True})

    def test_json_shapes(self) -> None:
        sent = json.loads(self.ok("--json", "-c", self.ca, "mail", "-t", B_ID, "-s", "json", "-b", "j"))
        self.assertEqual(set(sent), {"uuid", "state", "sent"})
        self.assertEqual(sent["state"], "queued")
        uuid = sent["uuid"]
        self.arrived(uuid)
        inbox = self.ok_json("-c", self.cb, "list", "--limit", "1000")
        self.assertEqual((set(inbox), inbox["folder"]), ({"folder", "total", "offset", "items"}, "inbox"))
        item = next(m for m in inbox["items"] if m["uuid"] == uuid)
        self.assert_shape(item, {"uuid": str, "from": str, "alias": type(None), "subject": str,
                                 "created_at": int, "received_at": int, "new": bool, "name": str,
                                 "to": str, "folder": str, "at": int, "ref": type(None), "peer": str,
                                 "direction": str})
        self.assertEqual((item["from"], item["new"]), (A_ID, True))
        outbox = self.ok_json("list", "--outbox", "-c", self.ca)
        self.assertEqual(outbox["folder"], "outbox")
        self.assertIsInstance(outbox["total"], int)
        self.assert_shape(next(m for m in outbox["items"] if m["uuid"] == uuid),
                          {"uuid": str, "to": str, "alias": type(None), "subject": str,
                           "created_at": int, "state": str, "updated_at": int, "folder": str, "at": int,
                           "ref": type(None), "peer": str, "direction": str, "reason": (str, type(None))})
        mail = self.ok_json("-c", self.cb, "read", "-u", uuid)
        self.assert_shape(mail, {"uuid": str, "from": str, "alias": type(None), "to": str, "subject": str,
                                 "body": str, "created_at": int, "received_at": int, "verified": bool,
                                 "new": bool, "name": str, "folder": str, "at": int, "ref": type(None),
                                 "peer": str, "direction": str, "protection": str})
        self.assertEqual(mail["protection"], "forward-secret-pq")
        self.assertEqual((mail["to"], mail["body"], mail["verified"], mail["new"]), (B_ID, "j", True, True))
        self.assertFalse(self.ok_json("-c", self.cb, "read", "-u", uuid)["new"])
        self.delivered(uuid)
        status = self.ok_json("-c", self.ca, "status", "-u", uuid)
        self.assert_shape(status, {"uuid": str, "to": str, "alias": type(None), "state": str,
                                   "reason": type(None), "stored_on": int, "created_at": int,
                                   "expires_at": int, "history": list, "protection": str})
        self.assertEqual(status["protection"], "forward-secret-pq")
        self.assertEqual(status["state"], "delivered")
        for entry in status["history"]:
            self.assert_shape(entry, {"at": int, "state": str, "detail": (str, type(None))})
        peers = self.ok_json("-c", self.cb, "peers")
        self.assert_shape(peers, {"links": list, "routing_table_size": int})
        for link in peers["links"]:
            self.assert_shape(link, {"id": str, "address": str, "direction": str, "age": (int, float)})
            self.assertIn(link["direction"], ("in", "out"))
        info = self.ok_json("-c", self.cb, "info")
        self.assert_shape(info, {"id": str, "fingerprint": str, "version": str, "uptime": (int, float),
                                 "listen": list, "ipc": str, "counts": dict, "name": str, "watchers": int,
                                 "reachability": dict, "datagrams": dict})
        self.assertEqual(set(info["datagrams"]), {"answered", "refused", "dropped", "asked",
                                                  "answers", "fell_back"})
        self.assertEqual(set(info["reachability"]), {"status", "address", "checked_at",
                                                     "dial_backs", "succeeded", "contact",
                                                     "relays", "punch"})
        self.assertEqual(set(info["counts"]), {"inbox", "new", "outbox", "held", "links", "routing"})
        self.assertTrue(all(isinstance(v, int) for v in info["counts"].values()))
        self.assertTrue(all(isinstance(a, str) for a in info["listen"]))

    def assert_shape(self, obj: dict[str, Any], shape: dict[str, Any]) -> None:
        self.assertEqual(set(obj), set(shape), obj)
        for key, kind in shape.items():
            self.assertIsInstance(obj[key], kind, key)
            if kind is int:  # JSON true is not a number, though bool subclasses int
                self.assertNotIsInstance(obj[key], bool, key)

    # --- raw sockets ---------------------------------------------------------------------

    def connect(self, node: ProcessNode) -> tuple[socket.socket, Any]:
        sock = socket.create_connection(("127.0.0.1", node.runtime["ipc_port"]), timeout=DEADLINE)
        self.addCleanup(sock.close)
        reader = sock.makefile("rb")
        self.addCleanup(reader.close)
        return sock, reader

    def ask(self, sock: socket.socket, reader: Any, data: bytes) -> dict[str, Any]:
        sock.sendall(data)
        return json.loads(reader.readline())

    def token(self, node: ProcessNode) -> str:
        return (node.data_dir / "ipc.token").read_text().strip()

    def test_raw_socket_wrong_token_closes(self) -> None:
        for request in (make_request(7, "list", {}, "0" * 64), b'{"id":8,"cmd":"list"}\n'):
            sock, reader = self.connect(self.a)
            reply = self.ask(sock, reader, request + make_request(9, "info", {}, self.token(self.a)))
            self.assertEqual((reply["ok"], reply["error"]["code"]), (False, "bad_token"))
            self.assertIn(reply["id"], (7, 8))
            self.assertEqual(reader.read(), b"")  # closed; the good request after it was ignored
        self.assertIn(A_ID, self.ok("-c", self.ca, "info"))  # the node serves others on

    def test_raw_socket_malformed_then_good_on_same_connection(self) -> None:
        token = self.token(self.a)
        sock, reader = self.connect(self.a)
        cases = (
            (b"hello?\n", None, "bad_json"),
            (b"\xff\xfe\n", None, "bad_json"),
            (b'{"id":1,"cmd":"info","token":"t","x":1}\n', 1, "bad_request"),
            (b'["info"]\n', None, "bad_request"),
            (make_request(2, "fly", {}, token), 2, "unknown_command"),
            (make_request(3, "read", {}, token), 3, "bad_argument"),
            (make_request(4, "list", {"limit": 0}, token), 4, "bad_argument"),
            (make_request(5, "list", {"colour": "red"}, token), 5, "bad_argument"),
            (make_request(6, "mail", {"to": "FC_0", "body": "x"}, token), 6, "invalid_id"),
            (make_request(7, "read", {"uuid": str(uuidlib.uuid4())}, token), 7, "not_found"),
            (b"x" * (MAX_LINE + 100) + b"\n", None, "too_long"),
        )
        for data, rid, code in cases:
            reply = self.ask(sock, reader, data)
            self.assertEqual((reply["id"], reply["ok"], reply["error"]["code"]), (rid, False, code), data[:60])
            self.assertIsInstance(reply["error"]["message"], str)
        reply = self.ask(sock, reader, b"\n" + make_request("last", "info", None, token))
        self.assertEqual((reply["id"], reply["ok"], reply["result"]["id"]), ("last", True, A_ID))

    # --- stop, and a node that is not running --------------------------------------------

    def test_stop_then_not_running(self) -> None:
        c = start_node(self.tmp, 2, [])
        self.addCleanup(stop_node, c)
        config = str(cli_config(c))
        assert c.proc is not None
        self.assertTrue((c.data_dir / "server.pid").exists())
        self.assertEqual(self.ok("-c", config, "stop"), "The node is stopping.\n")
        self.assertEqual(c.proc.wait(DEADLINE), 0)
        self.assertFalse((c.data_dir / "server.pid").exists())
        err = self.fails(3, "-c", config, "info")
        self.assertIn(f"127.0.0.1:{c.runtime['ipc_port']}", err)
        self.assertIn(f"src/server_app.py -c {config}", err)


if __name__ == "__main__":
    unittest.main()
