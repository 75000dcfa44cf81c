"""A peer link's connection: TLS over asyncio's plain TCP transport, in one protocol object.

asyncio's own TLS streams stack five objects per connection (a StreamReader and its protocol,
asyncio's SSL protocol and its transport, a StreamWriter), with two deques, a future and an
attribute dict of some forty entries. Here one object with slots does their work: OpenSSL
runs over two memory BIOs (`ssl.SSLObject`), the TCP transport's bytes go in, its records go
out. Python objects per accepted link end 15.5 -> 10.6 KiB, anonymous memory 45.5 -> 41.0 KiB
(bench/linkmem.py; bench/README.md, "A lean link transport").

Reading: the socket is read into one buffer per thread (a selector loop hands it over and
takes it back before anything else runs), whatever whole records arrived are decrypted at
once and wait for the link loop's `read`. Past `MAX_UNREAD` bytes not read yet the socket is
not read (a peer that is not being served stops being read, and TCP holds it back). Before
TLS starts (an accepted connection waits for its handshake slot) bytes wait in the incoming
BIO, bounded the same way.

Writing: each write is encrypted a TLS record's payload at a time and handed to the transport
at once, so OpenSSL's outgoing BIO, which keeps its largest size, stays at one record (a
1 MiB mail written at once left 1 MiB on its link). The transport's high-water mark pauses
`drain` as asyncio's streams do; the link's output limits (link.py) decide what follows.

A peer's EOF ends the stream (we never half-close a link); its close_notify too. `close`
sends our close_notify and closes the socket once the transport's buffer is out, without
waiting for the peer's (link.shut aborts a connection whose output is stuck).
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import ssl
import threading
from collections.abc import Callable, Coroutine
from typing import Any

READ_BUFFER = 16 * 1024     # socket reads; a TLS record is at most 16 KiB and a bit
RECORD = 16 * 1024          # plaintext per record, read or written
MAX_UNREAD = 128 * 1024     # decrypted or early bytes not read yet: past it the socket waits

Accept = Callable[["TlsStream"], Coroutine[Any, Any, None]]

_buffers = threading.local()   # one read buffer per thread (per event loop)


def _thread_buffer() -> memoryview:
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(READ_BUFFER))
    return view


class TlsStream(asyncio.BufferedProtocol):
    """One TCP connection and the TLS session over it (see the module's docstring)."""

    __slots__ = ("_accept", "_transport", "_buffer", "_incoming", "_outgoing", "_ssl",
                 "_open", "_unread", "_unread_size", "_eof", "_lost", "_error", "_closing",
                 "_reading_paused", "_writing_paused", "_waiter", "_drained", "_deadline")

    def __init__(self, accept: Accept | None = None) -> None:
        self._accept = accept
        self._transport: asyncio.Transport | None = None
        self._buffer: memoryview | None = None   # own read buffer, off a selector loop
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl: ssl.SSLObject | None = None
        self._open = False   # TLS handshake done
        self._unread: list[bytes] = []
        self._unread_size = 0
        self._eof = False    # the peer's EOF or close_notify
        self._lost = False   # the transport is gone
        self._error: BaseException | None = None
        self._closing = False
        self._reading_paused = self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None    # a read or the handshake
        self._drained: asyncio.Future[None] | None = None   # writers waiting for the peer
        self._deadline: asyncio.TimerHandle | None = None   # the abort after a close

    # ----- asyncio's protocol callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            # A proactor loop reads into the buffer in the background: not to be shared.
            self._buffer = memoryview(bytearray(READ_BUFFER))
        if self._accept is not None:
            loop.create_task(self._accept(self))

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer if self._buffer is not None else _thread_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._incoming.write(self.get_buffer(0)[:nbytes])
        self._pump()

    def eof_received(self) -> bool:
        self._eof = True
        self._pump()
        return False   # close the transport: a link is never half-closed

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()
        self._wake_writers()
        if self._deadline is not None:
            # A closed connection is let go at once, not when the deadline would have come:
            # the timer held the stream and OpenSSL's state for that long.
            self._deadline.cancel()
            self._deadline = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    # ----- TLS ------------------------------------------------------------------------------

    async def start_tls(self, context: ssl.SSLContext, server_side: bool = True,
                        server_hostname: str | None = None) -> None:
        """Run the TLS handshake over the connection (bytes already received included)."""
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._pump()
        while not self._open:
            if self._error is not None:
                raise self._error
            if self._eof or self._closing:
                raise ConnectionResetError("connection closed during the TLS handshake")
            await self._wait()

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return self._ssl if self._open else None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.ssl_object
        return default if self._transport is None else self._transport.get_extra_info(
            name, default)

    def _pump(self) -> None:
        """Run OpenSSL on what arrived: the handshake, then records to plaintext."""
        sslobj = self._ssl
        if sslobj is not None and self._error is None:
            try:
                if not self._open:
                    sslobj.do_handshake()
                    self._open = True
                while True:
                    chunk = sslobj.read(RECORD)
                    if not chunk:   # the peer's close_notify
                        self._eof = True
                        break
                    self._unread.append(chunk)
                    self._unread_size += len(chunk)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLZeroReturnError:
                self._eof = True   # the same, as OpenSSL may also report it
            except ssl.SSLError as exc:
                self._fail(exc)
            self._send_pending()   # handshake messages, tickets, alerts
        self._pace_reading()
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._send_pending()   # the alert, if OpenSSL wrote one
        if self._transport is not None:
            self._transport.close()

    def _send_pending(self) -> None:
        if self._outgoing.pending:
            data = self._outgoing.read()
            if self._transport is not None and not self._lost:
                self._transport.write(data)

    # ----- reading --------------------------------------------------------------------------

    async def read(self, limit: int) -> bytes:
        """Up to `limit` bytes of plaintext; b"" at the end of the stream."""
        while not self._unread:
            if self._error is not None:
                raise self._error
            if self._eof or self._closing:
                return b""
            await self._wait()
        data = self._unread[0] if len(self._unread) == 1 else b"".join(self._unread)
        self._unread = [data[limit:]] if len(data) > limit else []
        self._unread_size = len(data) - limit if len(data) > limit else 0
        self._pace_reading()
        return data[:limit] if len(data) > limit else data

    def _pace_reading(self) -> None:
        transport = self._transport
        if transport is None or self._lost:
            return
        waiting = self._unread_size + (self._incoming.pending if self._ssl is None else 0)
        if waiting > MAX_UNREAD and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif waiting <= MAX_UNREAD // 2 and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    async def _wait(self) -> None:
        assert self._waiter is None, "one reader at a time"
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # ----- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send, a record at a time; dropped once the stream is closing."""
        if self._ssl is None or not self._open or self.is_closing():
            return
        view = memoryview(data)
        try:
            for start in range(0, len(view), RECORD):
                self._ssl.write(view[start:start + RECORD])
                self._send_pending()
        except ssl.SSLError as exc:
            self._fail(exc)

    def queued(self) -> int:
        """Bytes handed to the transport that the peer has not taken yet."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    async def drain(self) -> None:
        """Wait until the transport is below its high-water mark; ConnectionResetError once
        the connection is lost."""
        while self._writing_paused and not self._lost:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)   # one writer's timeout is not the others'
        if self._lost:
            raise ConnectionResetError("connection lost")

    def _wake_writers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # ----- closing --------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._lost or self._error is not None

    def close(self) -> None:
        """Send our close_notify and close the socket once its buffer is out."""
        if self._closing:
            return
        self._closing = True
        if self._ssl is not None and self._open and not self._lost and self._error is None:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass   # it would wait for the peer's close_notify; we do not
            self._send_pending()
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def abort_after(self, grace: float) -> None:
        """Abort the connection `grace` seconds from now unless it has closed by then."""
        if not self._lost and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(grace, self.abort)

    def abort(self) -> None:
        """Drop the connection and whatever it still had to send."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()
        self._wake()


def accepting(accept: Accept) -> Callable[[], TlsStream]:
    """A protocol factory that runs `accept(stream)` for each connection (TLS not started)."""
    return lambda: TlsStream(accept)


async def listen(accept: Accept, host: str, port: int) -> asyncio.Server:
    return await asyncio.get_running_loop().create_server(accepting(accept), host, port)


async def connect(host: str, port: int, sock: Any = None) -> TlsStream:
    """A TCP connection to host:port (or over the connected `sock`), TLS not started."""
    loop = asyncio.get_running_loop()
    if sock is not None:
        _, stream = await loop.create_connection(TlsStream, sock=sock)
    else:
        _, stream = await loop.create_connection(TlsStream, host, port)
    return stream
