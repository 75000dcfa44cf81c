"""tls_stream: a link's TLS over a plain TCP transport, over real loopback sockets and real
TLS. The listening end is a TlsStream; the other end is asyncio's own TLS streams or a raw
socket (a peer that does not play by the rules)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import unittest

from fluxchat import tls_stream
from fluxchat.tls import client_context, server_context
from fluxchat.tls_stream import MAX_UNREAD, RECORD, TlsStream
from tests.keys import link_credentials

CONNECTIONS = 20
WAIT = 30.0


class TlsStreamTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.server_ssl = server_context(link_credentials(0))
        self.accepted: asyncio.Queue[TlsStream] = asyncio.Queue()
        self.server = await tls_stream.listen(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def asyncTearDown(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _accept(self, stream: TlsStream) -> None:
        self.accepted.put_nowait(stream)

    async def _upgraded(self) -> TlsStream:
        """The next accepted connection, its TLS handshake done."""
        async with asyncio.timeout(WAIT):
            stream = await self.accepted.get()
            await stream.start_tls(self.server_ssl)
        return stream

    async def _client(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, TlsStream]:
        """A TLS client (asyncio's streams) and the server's end of its connection."""
        connecting = asyncio.ensure_future(
            asyncio.open_connection("127.0.0.1", self.port, ssl=client_context()))
        stream = await self._upgraded()
        async with asyncio.timeout(WAIT):
            reader, writer = await connecting
        return reader, writer, stream

    async def _read_until_end(self, stream: TlsStream) -> bytes:
        got = bytearray()
        async with asyncio.timeout(WAIT):
            while chunk := await stream.read(65536):
                got += chunk
        return bytes(got)

    async def test_bytes_cross_intact_both_ways_and_close_ends_the_peer_cleanly(self) -> None:
        reader, writer, stream = await self._client()
        up, down = os.urandom(700_000), os.urandom(900_000)
        writer.write(up)
        stream.write(down)
        got_down = asyncio.ensure_future(reader.readexactly(len(down)))
        got = bytearray()
        async with asyncio.timeout(WAIT):
            while len(got) < len(up):
                got += await stream.read(65536)
            self.assertEqual(await got_down, down)
        self.assertEqual(bytes(got), up)
        self.assertIsNotNone(stream.ssl_object)
        self.assertEqual(stream.get_extra_info("peername"), writer.get_extra_info("sockname"))
        stream.close()   # our close_notify, then the socket closes: a clean end for the peer
        async with asyncio.timeout(WAIT):
            self.assertEqual(await reader.read(), b"")
        writer.close()

    async def test_a_peer_closing_after_its_handshake_ends_the_stream_without_warnings(self) -> None:
        with self.assertNoLogs("asyncio", "WARNING"):
            for _ in range(CONNECTIONS):
                _, writer, stream = await self._client()
                writer.close()   # its close_notify
                self.assertEqual(await self._read_until_end(stream), b"")
                stream.close()   # ours, which the peer waits for
                await writer.wait_closed()

    async def test_a_peer_leaving_before_tls_fails_the_upgrade(self) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(WAIT):   # not left to a handshake deadline
            stream = await self.accepted.get()
            with self.assertRaises(ConnectionResetError):
                await stream.start_tls(self.server_ssl)

    async def test_a_peer_speaking_no_tls_fails_the_handshake_and_loses_the_connection(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(WAIT):
            stream = await self.accepted.get()
            with self.assertRaises(ssl.SSLError):
                await stream.start_tls(self.server_ssl)
            await reader.read()   # the server closed the connection (after its alert)
        self.assertTrue(stream.is_closing())
        writer.close()

    async def test_a_client_refusing_the_servers_certificate_fails_both_handshakes(self) -> None:
        strict = client_context()
        strict.verify_mode = ssl.CERT_REQUIRED   # the link certificate has no CA behind it
        connecting = asyncio.ensure_future(
            asyncio.open_connection("127.0.0.1", self.port, ssl=strict))
        async with asyncio.timeout(WAIT):
            stream = await self.accepted.get()
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                await stream.start_tls(self.server_ssl)
            with self.assertRaises(ssl.SSLError):
                await connecting

    async def test_the_dialing_side_over_its_own_connection(self) -> None:
        dialed = await tls_stream.connect("127.0.0.1", self.port)
        handshake = asyncio.ensure_future(dialed.start_tls(client_context(), server_side=False))
        accepted = await self._upgraded()
        await handshake
        dialed.write(b"hello")
        async with asyncio.timeout(WAIT):
            self.assertEqual(await accepted.read(100), b"hello")
        accepted.close()
        self.assertEqual(await self._read_until_end(dialed), b"")

    async def test_a_peer_closing_mid_record_ends_the_stream_after_the_whole_records(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port))
        raw.setblocking(False)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_context().wrap_bio(incoming, outgoing)
        stream = await self.accepted.get()
        handshake = asyncio.ensure_future(stream.start_tls(self.server_ssl))
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(WAIT):
            while True:   # the client's handshake by hand, over the raw socket
                try:
                    client.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await loop.sock_sendall(raw, outgoing.read())
                    incoming.write(await loop.sock_recv(raw, 65536))
            await loop.sock_sendall(raw, outgoing.read())
            await handshake
            client.write(b"whole record")
            client.write(b"x" * 5000)
            records = outgoing.read()
            whole = len(records) - (5000 + 22)
            await loop.sock_sendall(raw, records[:-100])   # the second record cut short
            raw.close()
            self.assertEqual(await self._read_until_end(stream), b"whole record")
        self.assertGreater(whole, 0)

    async def test_a_record_over_the_tls_limit_is_an_error_that_ends_the_stream(self) -> None:
        connecting = asyncio.ensure_future(self._raw_tls_client())
        stream = await self._upgraded()
        raw = await connecting
        loop = asyncio.get_running_loop()
        # An application-data record claiming 20 KiB: TLS 1.3 allows 16 KiB and 256 bytes.
        await loop.sock_sendall(raw, b"\x17\x03\x03" + (20 * 1024).to_bytes(2, "big")
                                + os.urandom(20 * 1024))
        async with asyncio.timeout(WAIT):
            with self.assertRaises(ssl.SSLError):
                await self._read_until_end(stream)
        self.assertTrue(stream.is_closing())
        raw.close()

    async def _raw_tls_client(self) -> socket.socket:
        """A client socket whose TLS handshake is done (by a blocking client in a thread,
        while the server's end is upgraded); what it sends next is raw bytes."""
        def handshake() -> socket.socket:
            raw = socket.create_connection(("127.0.0.1", self.port))
            wrapped = client_context().wrap_socket(raw)
            plain = socket.socket(fileno=wrapped.detach())   # TLS state dropped, socket kept
            plain.setblocking(False)
            return plain

        return await asyncio.to_thread(handshake)

    async def test_an_unread_stream_stops_reading_the_socket_and_the_writer_waits(self) -> None:
        reader, writer, stream = await self._client()
        chunk = os.urandom(RECORD)
        sent = 0
        async with asyncio.timeout(WAIT):
            # The server reads nothing: the client's writes back up into its own buffers.
            while True:
                writer.write(chunk)
                sent += len(chunk)
                try:
                    async with asyncio.timeout(0.5):
                        await writer.drain()
                except TimeoutError:
                    break
        self.assertLessEqual(stream._unread_size, MAX_UNREAD + RECORD)   # type: ignore[attr-defined]
        self.assertTrue(stream._reading_paused)   # type: ignore[attr-defined]
        # And the other way: the server's writes wait once the client's buffers and the
        # kernel's are full (kept small: loopback's would take megabytes).
        for end, option in ((stream, socket.SO_SNDBUF), (writer, socket.SO_RCVBUF)):
            end.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, option, 65536)
        written = 0
        while not stream._writing_paused and written < 256 * 1024 * 1024:   # type: ignore[attr-defined]
            stream.write(chunk)
            written += len(chunk)
        for _ in range(64):   # and well past the transport's high-water mark
            stream.write(chunk)
            written += len(chunk)
        waiting = asyncio.ensure_future(stream.drain())
        await asyncio.sleep(0.2)
        self.assertFalse(waiting.done())
        self.assertGreater(stream.queued(), 0)
        async with asyncio.timeout(WAIT):
            got = await reader.readexactly(written)
            await waiting
            self.assertGreater(len(await stream.read(2 * sent)), 0)
        self.assertEqual(got, chunk * (written // len(chunk)))
        writer.close()
        stream.abort()

    async def test_bytes_before_tls_are_bounded(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        stream = await self.accepted.get()   # TLS not started: bytes wait in its BIO
        for _ in range(64):
            writer.write(bytes(RECORD))
        await asyncio.sleep(0.3)
        self.assertTrue(stream._reading_paused)   # type: ignore[attr-defined]
        self.assertLessEqual(stream._incoming.pending,   # type: ignore[attr-defined]
                             MAX_UNREAD + tls_stream.READ_BUFFER)
        writer.transport.abort()
        stream.abort()

    async def test_a_lost_connection_fails_drain_and_ends_reads(self) -> None:
        _, writer, stream = await self._client()
        writer.transport.abort()
        self.assertEqual(await self._read_until_end(stream), b"")
        await asyncio.sleep(0.1)   # the transport closes on the peer's EOF, a loop turn later
        with self.assertRaises(ConnectionResetError):
            await stream.drain()
        stream.write(b"dropped")   # writes after the end are dropped, not errors
        self.assertTrue(stream.is_closing())

    async def test_a_closed_stream_is_let_go_before_its_abort_deadline(self) -> None:
        reader, writer, stream = await self._client()
        stream.close()
        stream.abort_after(600)   # as link.shut does: the peer may not take our last bytes
        deadline = stream._deadline   # type: ignore[attr-defined]
        assert deadline is not None
        async with asyncio.timeout(WAIT):
            self.assertEqual(await reader.read(), b"")
            while not stream._lost:   # type: ignore[attr-defined]
                await asyncio.sleep(0.01)
        self.assertTrue(deadline.cancelled())   # the handle no longer holds the stream
        self.assertIsNone(stream._deadline)   # type: ignore[attr-defined]
        writer.close()


if __name__ == "__main__":
    unittest.main()
