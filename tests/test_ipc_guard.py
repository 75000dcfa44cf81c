"""The local API against other local users: a squatter or a relay on the port never gets
the token, and idle or token-less connections cannot lock the owner out (real sockets)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import unittest
from pathlib import Path
from typing import Any

from fluxchat.errors import IpcError
from fluxchat.ipc_client import IpcClient
from fluxchat.ipc_protocol import make_request
from fluxchat.ipc_server import PENDING_MAX_LINE, IpcServer, write_token_file
from tests.lab import WAIT


async def dispatch(cmd: str, args: dict[str, Any]) -> object:
    return {"cmd": cmd}


class GuardCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.token = write_token_file(Path(self.tmp.name))

    async def asyncTearDown(self) -> None:
        self.tmp.cleanup()

    async def serve(self, **limits: Any) -> IpcServer:
        server = IpcServer("127.0.0.1", 0, self.token, dispatch, **limits)
        await server.start()
        self.addAsyncCleanup(server.close)
        return server

    async def raw(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.addCleanup(writer.close)
        return reader, writer

    def call(self, port: int, cmd: str, args: dict[str, Any] | None = None) -> Any:
        with IpcClient("127.0.0.1", port, self.token, timeout=WAIT) as client:
            return client.call(cmd, args)


class SquatterTest(GuardCase):
    async def test_a_squatter_on_the_port_never_receives_the_token_or_mail(self) -> None:
        received = bytearray()

        async def squat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    received.extend(line)
                    writer.write(b'{"id": 0, "ok": true, "result": {"proof": "' + b"00" * 32 + b'"}}\n')
            finally:
                writer.close()
        fake = await asyncio.start_server(squat, "127.0.0.1", 0)
        self.addAsyncCleanup(fake.wait_closed)
        self.addCleanup(fake.close)
        port = fake.sockets[0].getsockname()[1]
        with self.assertRaises(IpcError) as ctx:
            await asyncio.to_thread(self.call, port, "mail", {"to": "x", "body": "secret words"})
        self.assertEqual(ctx.exception.code, "bad_token")
        self.assertIn(b"hello", received)
        self.assertNotIn(self.token.encode(), received)
        self.assertNotIn(b"secret words", received)

    async def test_a_relay_to_the_real_node_gets_a_proof_for_the_wrong_port(self) -> None:
        server = await self.serve()
        relayed = bytearray()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
            while data := await src.read(65536):
                if log:
                    relayed.extend(data)
                dst.write(data)
            dst.close()

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False),
                                     return_exceptions=True)
            finally:
                up_writer.close()
                writer.close()
        middle = await asyncio.start_server(relay, "127.0.0.1", 0)
        self.addAsyncCleanup(middle.wait_closed)
        self.addCleanup(middle.close)
        with self.assertRaises(IpcError):
            await asyncio.to_thread(self.call, middle.sockets[0].getsockname()[1], "info")
        self.assertNotIn(self.token.encode(), relayed)
        self.assertEqual(await asyncio.to_thread(self.call, server.port, "info"), {"cmd": "info"})


class LockoutTest(GuardCase):
    async def test_token_less_connections_are_capped_and_the_owner_gets_in(self) -> None:
        server = await self.serve(max_pending=8)
        for _ in range(40):   # silent connections from another local user
            await self.raw(server.port)
            await asyncio.sleep(0)
            self.assertLessEqual(server.counts()[0], 8)
        await asyncio.sleep(0.05)
        self.assertLessEqual(server.counts()[0], 8)
        self.assertEqual(await asyncio.to_thread(self.call, server.port, "info"), {"cmd": "info"})

    async def test_no_token_in_time_closes_the_connection(self) -> None:
        server = await self.serve(auth_timeout=0.3)
        reader, writer = await self.raw(server.port)
        writer.write(b'{"id": 1, "cmd": "info"')   # never a complete line
        reply = json.loads(await asyncio.wait_for(reader.readline(), WAIT))
        self.assertEqual(reply["error"]["code"], "unavailable")
        self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")
        self.assertEqual(server.counts(), (0, 0))

    async def test_idle_authenticated_connection_is_closed(self) -> None:
        server = await self.serve(idle_timeout=0.3)
        reader, writer = await self.raw(server.port)
        writer.write(make_request(1, "info", None, self.token))
        self.assertTrue(json.loads(await reader.readline())["ok"])
        self.assertEqual(server.counts(), (0, 1))
        self.assertEqual(json.loads(await asyncio.wait_for(reader.readline(), WAIT))["error"]["code"],
                         "unavailable")
        self.assertEqual(await asyncio.wait_for(reader.read(), WAIT), b"")

    async def test_lines_before_the_token_are_short(self) -> None:
        server = await self.serve()
        reader, writer = await self.raw(server.port)
        writer.write(b"x" * (4 * PENDING_MAX_LINE) + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), WAIT))
        self.assertEqual(reply["error"]["code"], "too_long")
        self.assertIn(str(PENDING_MAX_LINE), reply["error"]["message"])
        # After the token, lines up to the full limit are fine.
        writer.write(make_request(1, "info", None, self.token))
        self.assertTrue(json.loads(await reader.readline())["ok"])
        writer.write(make_request(2, "info", {"pad": "y" * (2 * PENDING_MAX_LINE)}, self.token))
        self.assertNotEqual(json.loads(await reader.readline())["error"]["code"], "too_long")


if __name__ == "__main__":
    unittest.main()
