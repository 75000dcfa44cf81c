"""tls_stream: accepted streams upgraded to TLS, over real loopback sockets and real TLS."""

from __future__ import annotations

import asyncio
import ssl
import unittest
from collections.abc import Awaitable, Callable

from fluxchat import tls_stream
from fluxchat.tls import client_context, server_context
from tests.keys import link_credentials

CONNECTIONS = 20
Listen = Callable[[tls_stream.Accept, str, int], Awaitable[asyncio.Server]]


class TlsStreamTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.server_ssl = server_context(link_credentials(0))
        self.ended: asyncio.Queue[str] = asyncio.Queue()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """As peer_net does: upgrade, then read until the peer leaves."""
        try:
            await writer.start_tls(self.server_ssl)
            await reader.read()
            self.ended.put_nowait("eof")
        except (OSError, ssl.SSLError) as exc:
            self.ended.put_nowait(type(exc).__name__)
        finally:
            writer.close()

    async def _close_after_handshakes(self, listen: Listen) -> list[str]:
        """Clients that close at once after their TLS handshake; how each server side ended."""
        server = await listen(self._accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for _ in range(CONNECTIONS):
                _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context())
                writer.close()
                await writer.wait_closed()
            async with asyncio.timeout(30):
                return [await self.ended.get() for _ in range(CONNECTIONS)]
        finally:
            server.close()
            await server.wait_closed()

    async def test_a_peer_closing_after_its_handshake_is_no_warning(self) -> None:
        with self.assertNoLogs("asyncio", "WARNING"):
            ended = await self._close_after_handshakes(tls_stream.listen)
        self.assertEqual(ended, ["eof"] * CONNECTIONS)

    async def test_the_plain_stream_protocol_warns(self) -> None:
        """The cause, shown: if a Python release stops warning here, tls_stream can go."""
        async def plain(accept: tls_stream.Accept, host: str, port: int) -> asyncio.Server:
            return await asyncio.start_server(accept, host, port)

        with self.assertLogs("asyncio", "WARNING") as logs:
            await self._close_after_handshakes(plain)
        self.assertIn("returning true from eof_received() has no effect when using ssl", logs.output[0])

    async def test_a_peer_leaving_before_tls_fails_the_upgrade(self) -> None:
        reached_tls = asyncio.Event()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()   # the peer's EOF arrives before we start TLS
            reached_tls.set()
            await self._accept(reader, writer)

        server = await tls_stream.listen(accept, "127.0.0.1", 0)
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
            writer.close()
            await writer.wait_closed()
            async with asyncio.timeout(30):   # not left to the handshake deadline
                await reached_tls.wait()
                self.assertNotEqual(await self.ended.get(), "eof")
        finally:
            server.close()
            await server.wait_closed()


if __name__ == "__main__":
    unittest.main()
