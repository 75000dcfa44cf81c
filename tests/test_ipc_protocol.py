"""The local API's pure wire format: request checks, defaults, error codes, framing."""

from __future__ import annotations

import json
import unittest
from typing import Any

from fluxchat.errors import IpcError
from fluxchat.ids import format_id
from fluxchat.ipc_commands import COMMANDS, check_body_size
from fluxchat.ipc_protocol import (
    MAX_LINE,
    LineSplitter,
    check_bind_address,
    check_token,
    error_response,
    make_request,
    ok_response,
    parse_request,
    parse_response,
)

ID = format_id(bytes(range(32)))
UUID = "123e4567-e89b-12d3-a456-426614174000"
TOKEN = "ab" * 32

# One good call per command, with the arguments the handler then sees (defaults filled in).
GOOD: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mail": ({"to": ID, "body": "hi"}, {"to": [ID], "subject": "", "body": "hi"}),
    "reply": ({"uuid": "123E45", "body": "hi"}, {"uuid": "123e45", "body": "hi", "subject": None, "quote": False}),
    "list": ({}, {"folder": "inbox", "new_only": False, "limit": 50, "offset": 0}),
    "read": ({"uuid": UUID.upper()}, {"uuid": UUID, "mark": True}),
    "mark": ({"uuid": UUID.replace("-", "")}, {"uuid": UUID, "read": True}),
    "conversations": ({}, {"limit": 50}),
    "conversation": ({"peer": "bob"}, {"peer": "bob", "limit": 50, "mark_read": True}),
    "watch": ({}, {}),
    "web_link": ({}, {}),
    "delete": ({"uuid": UUID}, {"uuid": UUID}),
    "status": ({"uuid": UUID}, {"uuid": UUID}),
    "resend": ({"uuid": UUID}, {"uuid": UUID}),
    "contacts": ({}, {"action": "list", "alias": None, "id": None, "from": None, "force": False}),
    "peers": ({}, {}),
    "info": ({}, {}),
    "save": ({}, {}),
    "stop": ({}, {}),
    "backup": ({"file": "/tmp/x.fcbackup"}, {"file": "/tmp/x.fcbackup"}),
}


def line(cmd: str, args: Any = None, token: str = TOKEN, rid: Any = 7) -> bytes:
    return json.dumps({"id": rid, "cmd": cmd, "args": args if args is not None else {}, "token": token}).encode()


class RequestTest(unittest.TestCase):
    def code_of(self, raw: bytes) -> str:
        with self.assertRaises(IpcError) as ctx:
            parse_request(raw)
        return ctx.exception.code

    def bad(self, cmd: str, args: dict[str, Any], code: str = "bad_argument") -> str:
        with self.assertRaises(IpcError) as ctx:
            parse_request(line(cmd, args))
        self.assertEqual(ctx.exception.code, code, ctx.exception.message)
        self.assertEqual(getattr(ctx.exception, "request_id", None), 7)
        return ctx.exception.message

    def test_every_command_has_a_good_case(self) -> None:
        self.assertEqual(set(GOOD), set(COMMANDS))
        for cmd, (args, expected) in GOOD.items():
            request = parse_request(line(cmd, args))
            self.assertEqual((request.id, request.cmd, request.args, request.token), (7, cmd, expected, TOKEN))

    def test_round_trip_through_make_request(self) -> None:
        request = parse_request(make_request("x1", "list", {"folder": "outbox", "limit": 1000}, TOKEN))
        self.assertEqual(request.args, {"folder": "outbox", "new_only": False, "limit": 1000, "offset": 0})
        self.assertEqual(request.id, "x1")

    def test_missing_args_and_null_args_mean_empty(self) -> None:
        self.assertEqual(parse_request(b'{"id":1,"cmd":"info","token":"t"}').args, {})
        self.assertEqual(parse_request(b'{"id":1,"cmd":"info","args":null,"token":"t"}').args, {})

    def test_bad_json(self) -> None:
        for raw in (b"garbage", b"{", b'{"id":1,}', b"\xff\xfe", b'{"id":NaN}', b"[" * 100000):
            self.assertEqual(self.code_of(raw), "bad_json", raw[:20])

    def test_bad_request_shape(self) -> None:
        for raw in (b"[]", b"42", b'"x"', b'{"cmd":"info","token":"t"}', b'{"id":true,"cmd":"info","token":"t"}',
                    b'{"id":1.5,"cmd":"info","token":"t"}', b'{"id":1,"token":"t"}', b'{"id":1,"cmd":3,"token":"t"}',
                    b'{"id":1,"cmd":"info","args":[],"token":"t"}', b'{"id":1,"cmd":"info","token":"t","x":1}',
                    json.dumps({"id": "x" * 200, "cmd": "info", "token": "t"}).encode()):
            self.assertEqual(self.code_of(raw), "bad_request", raw[:40])

    def test_missing_token_is_bad_token(self) -> None:
        self.assertEqual(self.code_of(b'{"id":1,"cmd":"info"}'), "bad_token")
        self.assertEqual(self.code_of(b'{"id":1,"cmd":"info","token":5}'), "bad_token")

    def test_too_long(self) -> None:
        self.assertEqual(self.code_of(b" " * (MAX_LINE + 1)), "too_long")
        with self.assertRaises(IpcError) as ctx:
            parse_request(line("info"), max_line=10)
        self.assertEqual(ctx.exception.code, "too_long")

    def test_unknown_command(self) -> None:
        self.bad("fly", {}, "unknown_command")

    def test_unknown_argument(self) -> None:
        self.assertIn("colour", self.bad("list", {"colour": "red"}))
        self.bad("info", {"x": 1})

    def test_mail_arguments(self) -> None:
        self.assertIn("body", self.bad("mail", {"to": ID}))
        self.assertIn("to", self.bad("mail", {"body": "x"}))
        self.assertIn("255", self.bad("mail", {"to": ID, "body": "x", "subject": "s" * 256}))
        self.assertEqual(parse_request(line("mail", {"to": ID, "body": "", "subject": "s" * 255})).args["subject"],
                         "s" * 255)
        self.bad("mail", {"to": ID, "body": 5})
        self.bad("mail", {"to": ID, "body": "\ud800"})
        self.bad("mail", {"to": "FC_nope", "body": "x"}, "invalid_id")
        self.bad("mail", {"to": "FC_" + "1" * 100000, "body": "x"}, "invalid_id")
        self.bad("mail", {"to": "bad alias!", "body": "x"}, "invalid_id")
        self.assertEqual(parse_request(line("mail", {"to": "bob.s-1", "body": "x"})).args["to"], ["bob.s-1"])
        # Several recipients: a list, duplicates dropped, at most 32.
        self.assertEqual(parse_request(line("mail", {"to": ["a", ID, "a"], "body": "x"})).args["to"], ["a", ID])
        self.bad("mail", {"to": [], "body": "x"})
        self.bad("mail", {"to": [f"p{n}" for n in range(33)], "body": "x"})
        self.bad("mail", {"to": ["a", 5], "body": "x"}, "invalid_id")

    def test_list_arguments(self) -> None:
        self.assertIn("inbox or outbox or sent", self.bad("list", {"folder": "trash"}))
        self.assertIn("1..1000", self.bad("list", {"limit": 0}))
        self.bad("list", {"limit": 1001})
        self.bad("list", {"limit": "5"})
        self.bad("list", {"limit": True})
        self.bad("list", {"offset": -1})
        self.bad("list", {"new_only": 1})
        args = parse_request(line("list", {"new_only": True, "limit": 1, "offset": 3})).args
        self.assertEqual(args, {"folder": "inbox", "new_only": True, "limit": 1, "offset": 3})

    def test_uuid_arguments(self) -> None:
        for cmd in ("read", "delete", "status", "resend"):
            self.assertIn("uuid", self.bad(cmd, {}))
            for value in ("nope", UUID + "0", "12345", "123e4-", "zzzzzz", "-" * 40, 12):
                self.bad(cmd, {"uuid": value})

    def test_contacts_arguments(self) -> None:
        args = parse_request(line("contacts", {"action": "add", "alias": "bob", "id": ID})).args
        self.assertEqual(args, {"action": "add", "alias": "bob", "id": ID, "from": None, "force": False})
        args = parse_request(line("contacts", {"action": "remove", "alias": "bob"})).args
        self.assertEqual(args, {"action": "remove", "alias": "bob", "id": None, "from": None, "force": False})
        args = parse_request(line("contacts", {"action": "add", "alias": "bob", "from": "abcdef", "force": True})).args
        self.assertEqual(args["from"], "abcdef")
        self.bad("contacts", {"action": "add", "alias": "bob", "id": ID, "from": "abcdef"})
        self.bad("contacts", {"action": "remove", "alias": "bob", "force": True})
        self.bad("contacts", {"action": "add", "alias": "bob"})
        self.bad("contacts", {"action": "add", "id": ID})
        self.bad("contacts", {"action": "remove"})
        self.bad("contacts", {"action": "list", "alias": "bob"})
        self.bad("contacts", {"action": "zap"})
        for alias in ("", "FC_bob", "a" * 65, "with space", "é"):
            self.bad("contacts", {"action": "remove", "alias": alias})
        self.bad("contacts", {"action": "add", "alias": "bob", "id": "bob"}, "invalid_id")

    def test_body_size(self) -> None:
        check_body_size("é" * 5, 10)
        with self.assertRaises(IpcError) as ctx:
            check_body_size("é" * 6, 10)
        self.assertEqual(ctx.exception.code, "too_large")


class FormatTest(unittest.TestCase):
    def test_responses_are_one_json_line(self) -> None:
        ok = ok_response(3, {"body": "a\nb", "s": "é"})
        self.assertTrue(ok.endswith(b"\n") and ok.count(b"\n") == 1)
        self.assertEqual(json.loads(ok), {"id": 3, "ok": True, "result": {"body": "a\nb", "s": "é"}})
        err = error_response(None, "bad_json", "nope")
        self.assertEqual(json.loads(err), {"id": None, "ok": False, "error": {"code": "bad_json", "message": "nope"}})
        self.assertEqual(json.loads(ok_response(1, "\ud800"))["result"], "\ud800")

    def test_parse_response(self) -> None:
        self.assertEqual(parse_response(ok_response(1, [1])).result, [1])
        response = parse_response(error_response("a", "not_found", "gone"))
        self.assertEqual((response.id, response.ok, response.code, response.message), ("a", False, "not_found", "gone"))
        for raw in (b"junk\n", b"{}\n", b'{"ok":false}\n'):
            with self.assertRaises(IpcError):
                parse_response(raw)

    def test_check_token(self) -> None:
        self.assertTrue(check_token(TOKEN, TOKEN))
        for given in (TOKEN[:-1], TOKEN + "0", "", None, 5, "é" * 64):
            self.assertFalse(check_token(given, TOKEN))
        self.assertFalse(check_token("", ""))

    def test_bind_address(self) -> None:
        for address in ("127.0.0.1", "127.1.2.3", "::1", "localhost"):
            check_bind_address(address, False)
        for address in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
            with self.assertRaises(IpcError):
                check_bind_address(address, False)
            check_bind_address(address, True)


class SplitterTest(unittest.TestCase):
    def test_whole_and_byte_by_byte(self) -> None:
        data = b"one\ntwo\r\n\nthree"
        self.assertEqual(LineSplitter(10).feed(data), [b"one", b"two\r", b""])
        splitter, events = LineSplitter(10), []
        for i in range(len(data)):
            events += splitter.feed(data[i:i + 1])
        self.assertEqual(events + splitter.feed(b"\n"), [b"one", b"two\r", b"", b"three"])

    def test_oversize_line_resyncs_at_next_newline(self) -> None:
        splitter = LineSplitter(5)
        self.assertEqual(splitter.feed(b"123456789\nok\n"), [None, b"ok"])
        self.assertEqual(splitter.feed(b"12345\n"), [b"12345"])
        # Overrun spread over many chunks: one None, the tail is dropped, then lines again.
        self.assertEqual(splitter.feed(b"abcdef"), [None])
        self.assertEqual(splitter.feed(b"ghijklmnop"), [])
        self.assertEqual(splitter.feed(b"qr\nnext\n"), [b"next"])


if __name__ == "__main__":
    unittest.main()
