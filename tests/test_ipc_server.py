"""The IPC server on a real loopback socket, the blocking client, and ipc_app.py as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

from fluxchat.errors import IpcError
from fluxchat.ids import IdError, format_id
from fluxchat.ipc_client import IpcClient, NodeUnreachable, read_token_file
from fluxchat.ipc_protocol import make_request
from fluxchat.ipc_server import IpcServer, write_token_file
from tests.lab import WAIT

APP = Path(__file__).resolve().parent.parent / "src" / "ipc_app.py"
PEER = format_id(bytes(range(32)))
UUID = "123e4567-e89b-12d3-a456-426614174000"
MAX_LINE = 4096


class FakeNode:
    """A tiny real dispatch target: one inbox mail, and commands that fail on purpose."""

    def __init__(self) -> None:
        self.server: IpcServer | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.inbox = [{"uuid": UUID, "from": PEER, "alias": None, "subject": "Hi\x1b[31m there",
                       "created_at": 1700000000, "received_at": 1700000060, "new": True}]

    async def dispatch(self, cmd: str, args: dict[str, Any]) -> object:
        self.calls.append((cmd, args))
        if cmd == "save":
            raise RuntimeError("handler bug")
        if cmd == "stop":  # as the node must do it: reply first, shut down afterwards
            asyncio.get_running_loop().call_soon(lambda: asyncio.create_task(self.server.close()))
            return {"stopping": True}
        if cmd == "status":
            raise IdError("not a node ID")
        if cmd == "info":
            return {"id": PEER, "counts": {"inbox": len(self.inbox)}}
        if cmd == "mail":
            return {"uuid": UUID, "state": "queued"}
        if cmd == "list":
            items = self.inbox if args["folder"] == "inbox" else []
            return {"folder": args["folder"], "total": len(items), "items": items}
        if cmd == "read" and args["uuid"] == UUID:
            return {**self.inbox[0], "to": PEER, "body": "line 1\nline 2\x07", "verified": True}
        raise IpcError("not_found", f"no mail {args.get('uuid')}")


class ServerTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        self.token = write_token_file(self.dir)
        self.node = FakeNode()
        self.server = IpcServer("127.0.0.1", 0, self.token, self.node.dispatch, max_line=MAX_LINE)
        await self.server.start()
        self.node.server = self.server
        self.config = self.write_config(self.server.port)

    async def asyncTearDown(self) -> None:
        await self.server.close()
        self.tmp.cleanup()

    def write_config(self, port: int, data_dir: Path | None = None) -> Path:
        path = self.dir / f"config{port}.json"
        path.write_text(json.dumps({"data_dir": str(data_dir or self.dir), "ipc": {"port": port}}))
        return path

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        self.addAsyncCleanup(self.close_writer, writer)
        return reader, writer

    @staticmethod
    async def close_writer(writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def ask(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> dict[str, Any]:
        writer.write(data)
        await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), WAIT))

    def good(self, rid: int = 1, cmd: str = "info", args: dict[str, Any] | None = None) -> bytes:
        return make_request(rid, cmd, args, self.token)

    # --- raw sockets ------------------------------------------------------------------------

    async def test_garbage_then_good_request_on_same_connection(self) -> None:
        reader, writer = await self.connect()
        for junk, code in ((b"garbage\n", "bad_json"), (b"\xff\x00\n", "bad_json"), (b"[1]\n", "bad_request"),
                           (self.good(cmd="fly"), "unknown_command"),
                           (self.good(cmd="list", args={"limit": 0}), "bad_argument")):
            reply = await self.ask(reader, writer, junk)
            self.assertEqual((reply["ok"], reply["error"]["code"]), (False, code))
        self.assertEqual(await self.ask(reader, writer, b"\n\n" + self.good(5)),
                         {"id": 5, "ok": True, "result": {"id": PEER, "counts": {"inbox": 1}}})

    async def test_oversize_line_then_good_request(self) -> None:
        reader, writer = await self.connect()
        reply = await self.ask(reader, writer, b"x" * (MAX_LINE * 3) + b"\n")
        self.assertEqual((reply["id"], reply["error"]["code"]), (None, "too_long"))
        self.assertTrue((await self.ask(reader, writer, self.good(2)))["ok"])
        # The overrun arrives in pieces; its tail must not be taken for a request.
        reply = await self.ask(reader, writer, b"{" * (MAX_LINE + 1))
        self.assertEqual(reply["error"]["code"], "too_long")
        writer.write(b'"id":1}' * 100)
        self.assertEqual(await self.ask(reader, writer, b"\n" + self.good(3)),
                         {"id": 3, "ok": True, "result": {"id": PEER, "counts": {"inbox": 1}}})

    async def test_wrong_token_closes_the_connection(self) -> None:
        for request in (make_request(1, "list", {}, "0" * 64), b'{"id":1,"cmd":"list"}\n'):
            reader, writer = await self.connect()
            with self.assertLogs("fluxchat.ipc_server", "WARNING") as logs:
                reply = await self.ask(reader, writer, request + self.good(2))
            self.assertNotIn(self.token, "\n".join(logs.output))
            self.assertEqual((reply["id"], reply["error"]["code"]), (1, "bad_token"))
            self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")
        self.assertEqual(self.node.calls, [])

    async def test_handler_errors_are_replies(self) -> None:
        reader, writer = await self.connect()
        with self.assertLogs("fluxchat.ipc_server", "ERROR") as logs:
            reply = await self.ask(reader, writer, self.good(1, "save"))
        self.assertEqual(reply["error"], {"code": "internal", "message": "internal error; see the node's log"})
        self.assertNotIn(self.token, "\n".join(logs.output))
        reply = await self.ask(reader, writer, self.good(2, "status", {"uuid": UUID}))
        self.assertEqual(reply["error"]["code"], "invalid_id")
        reply = await self.ask(reader, writer, self.good(3, "read", {"uuid": "0" * 8 + UUID[8:]}))
        self.assertEqual(reply["error"]["code"], "not_found")
        self.assertTrue((await self.ask(reader, writer, self.good(4)))["ok"])

    async def test_many_clients_at_once(self) -> None:
        async def client(n: int) -> dict[str, Any]:
            reader, writer = await self.connect()
            writer.write(b"junk\n" + self.good(n))
            await reader.readline()
            return json.loads(await reader.readline())
        replies = await asyncio.gather(*(client(n) for n in range(30)))
        self.assertEqual([r["id"] for r in replies], list(range(30)))
        self.assertTrue(all(r["ok"] for r in replies))

    async def test_close_drops_clients(self) -> None:
        reader, _ = await self.connect()
        await self.server.close()
        self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")
        with self.assertRaises(OSError):
            await asyncio.open_connection("127.0.0.1", self.server.port)

    async def test_stop_replies_then_closes(self) -> None:
        reader, writer = await self.connect()
        reply = await self.ask(reader, writer, self.good(9, "stop"))
        self.assertEqual(reply, {"id": 9, "ok": True, "result": {"stopping": True}})
        self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")

    # --- token file and client --------------------------------------------------------------

    async def test_token_file(self) -> None:
        path = self.dir / "ipc.token"
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        self.assertEqual(read_token_file(self.dir), self.token)
        os.chmod(path, 0o644)
        self.assertNotEqual(write_token_file(self.dir), self.token)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        path.unlink()
        with self.assertRaises(IpcError) as ctx:
            read_token_file(self.dir)
        self.assertEqual(ctx.exception.code, "unavailable")
        self.assertIn(str(path), ctx.exception.message)

    async def test_client(self) -> None:
        def use_client() -> None:
            with IpcClient("127.0.0.1", self.server.port, self.token, timeout=WAIT) as client:
                self.assertEqual(client.call("info")["id"], PEER)
                with self.assertRaises(IpcError) as ctx:
                    client.call("list", {"limit": 0})
                self.assertEqual(ctx.exception.code, "bad_argument")
                self.assertEqual(client.call("list")["total"], 1)  # same connection carries on
            with self.assertRaises(IpcError) as ctx:
                IpcClient("127.0.0.1", self.server.port, "bad").call("info")
            self.assertEqual(ctx.exception.code, "bad_token")
            with self.assertRaises(NodeUnreachable) as unreachable:
                IpcClient("127.0.0.1", free_port(), self.token).call("info")
            self.assertEqual(unreachable.exception.address, "127.0.0.1")
        # A client with the wrong token fails at the hello, before it sends the token.
        await asyncio.to_thread(use_client)

    # --- the command line -------------------------------------------------------------------

    async def app(self, *argv: str, config: Path | None = None, stdin: bytes = b"") -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if k != "FLUXCHAT_CONFIG"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(APP), *argv, env=env, cwd=self.dir, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def test_app_seed_forms_and_json(self) -> None:
        c = str(self.config)
        self.assertEqual(await self.app("mail", "-c", c, "-s", "Test", "-b", "Hello World", "-t", PEER),
                         (0, UUID + "\n", ""))
        self.assertEqual(self.node.calls[-1], ("mail", {"to": [PEER], "subject": "Test", "body": "Hello World"}))
        code, out, _ = await self.app("--json", "-c", c, "mail", "-t", "bob", "-b", "-", stdin=b"from stdin\n")
        self.assertEqual((code, json.loads(out)), (0, {"uuid": UUID, "state": "queued"}))
        self.assertEqual(self.node.calls[-1][1]["body"], "from stdin\n")
        code, out, _ = await self.app("-c", c, "list")
        self.assertEqual(code, 0)
        self.assertIn("FC_", out)
        self.assertIn("Hi\\x1b[31m there", out)
        self.assertNotIn("\x1b", out)
        self.assertEqual(out.splitlines()[1].split()[:3], ["1", "*", UUID])
        self.assertEqual(await self.app("list", "--outbox", "-c", c), (0, "No mail in outbox.\n", ""))
        code, out, _ = await self.app("-c", c, "read", "--uuid", UUID)
        self.assertEqual(code, 0)
        self.assertIn("Verified: yes", out)
        self.assertTrue(out.endswith("\n\nline 1\nline 2\\x07\n"))
        code, out, _ = await self.app("read", "-u", UUID, "-c", c, "--json")
        self.assertEqual(json.loads(out)["body"], "line 1\nline 2\x07")
        code, out, _ = await self.app("-c", c, "list", "-n", "--limit", "5")
        self.assertEqual(self.node.calls[-1], ("list", {"folder": "inbox", "new_only": True, "limit": 5, "offset": 0}))

    async def test_app_error_reply_is_exit_1(self) -> None:
        code, out, err = await self.app("-c", str(self.config), "delete", UUID)
        self.assertEqual((code, out), (1, ""))
        self.assertTrue(err.startswith("error: not_found: no mail"))
        code, _, err = await self.app("-c", str(self.config), "read", "-u", "nope")
        self.assertEqual((code, err.split(":")[:2]), (1, ["error", " bad_argument"]))

    async def test_app_unreachable_is_exit_3(self) -> None:
        port = free_port()
        code, _, err = await self.app("-c", str(self.write_config(port)), "list")
        self.assertEqual(code, 3)
        self.assertIn(f"127.0.0.1:{port}", err)
        self.assertIn("server_app.py", err)
        code, _, err = await self.app("-c", str(self.write_config(port, self.dir / "none")), "info")
        self.assertEqual(code, 3)
        self.assertIn("ipc.token", err)

    async def test_app_usage_is_exit_2(self) -> None:
        for argv in ((), ("fly",), ("mail", "-b", "x"), ("read",), ("list", "--limit", "x"),
                     ("contacts", "add", "bob")):
            code, out, err = await self.app("-c", str(self.config), *argv)
            self.assertEqual((code, out), (2, ""), argv)
            self.assertIn("usage:", err)
        self.assertEqual(self.node.calls, [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    unittest.main()
