"""The listening side of peer links: streams accepted as plain TCP and upgraded to TLS.

peer_net accepts plain TCP so that it can turn a connection away (rate, handshake slots)
before any TLS work, then upgrades the stream with `start_tls`. asyncio's StreamReaderProtocol
answers a peer's EOF with True ("keep the half-closed socket") until `start_tls` has returned
and told it that the transport is TLS. A peer that closes right after its handshake (a
dial-back check, a dialer that gave up, a scanner) sends its last handshake message and its
close_notify in one segment, so that EOF arrives first and asyncio's SSL layer logs "returning
true from eof_received() has no effect when using ssl" for every such connection.

We never half-close a peer link, so the protocol here always answers False: over TLS it is
what the SSL layer does anyway, and before TLS an EOF means the peer has left.

asyncio's SSL layer also gives every TLS connection a 256 KiB read buffer, zero-filled and so
resident from the start: measured 296 KiB of RSS per link end, 15 MiB for a node with 50
links (bench/procnet.py). `limit_read_buffers` makes it 16 KiB: a TLS record carries at most
16 KiB of data, and OpenSSL gathers a record that takes two reads. The size counts twice: the
memory BIO that the SSL layer copies each read into keeps its largest size. An accepted link
end measured 100 KiB of private memory with 32 KiB, 83 KiB with 16 KiB (and 76 KiB with 8 KiB,
which left two-node mail throughput within the noise of this shared machine but not clearly so).

The read buffer need not be the connection's own: on a selector event loop the transport reads
the socket into it and hands it straight to the SSL layer, which copies the bytes into the
connection's memory BIO before anything else runs. So every connection of a thread shares one
buffer (`SharedReadBuffer`), which saves 16 KiB of every link end: a node holds dozens of
links, and twenty at once while it joins. A proactor loop (Windows) reads into the buffer in
the background, so there each connection keeps its own.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import asyncio.sslproto
import threading
from collections.abc import Awaitable, Callable
from typing import Any

SSL_READ_BUFFER = 16 * 1024

Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TlsServerStream(asyncio.StreamReaderProtocol):
    """A server-side stream protocol for connections that will be upgraded to TLS."""

    def eof_received(self) -> bool:
        super().eof_received()   # the reader sees the end of the stream
        return False


def stream_protocol(accept: Accept) -> Callable[[], TlsServerStream]:
    """A protocol factory that runs `accept(reader, writer)` for each connection."""
    return lambda: TlsServerStream(asyncio.StreamReader(), accept)


async def listen(accept: Accept, host: str, port: int) -> asyncio.Server:
    """Like asyncio.start_server(accept, host, port), with TlsServerStream."""
    return await asyncio.get_running_loop().create_server(stream_protocol(accept), host, port)


_ASYNCIO_SSL_PROTOCOL = asyncio.sslproto.SSLProtocol
_buffers = threading.local()   # one read buffer per thread (per event loop)


def _thread_buffer(size: int) -> memoryview:
    views: dict[int, memoryview] = getattr(_buffers, "views", None) or {}
    _buffers.views = views
    if size not in views:
        views[size] = memoryview(bytearray(size))
    return views[size]


class SharedReadBuffer(_ASYNCIO_SSL_PROTOCOL):
    """asyncio's SSL protocol reading into its thread's shared buffer (see the module's
    docstring). Its own buffer, made by asyncio, is dropped at once."""

    max_size = SSL_READ_BUFFER

    def __init__(self, loop: asyncio.AbstractEventLoop, *args: Any, **kwargs: Any) -> None:
        super().__init__(loop, *args, **kwargs)
        if isinstance(loop, asyncio.selector_events.BaseSelectorEventLoop):
            self._ssl_buffer_view = _thread_buffer(self.max_size)
            self._ssl_buffer = self._ssl_buffer_view.obj


def limit_read_buffers() -> None:
    """Every TLS connection made after this reads into a shared SSL_READ_BUFFER buffer. The
    size is a class attribute of asyncio's SSL protocol, which offers no per-connection
    setting; asyncio makes its SSL protocol by the module's name, so the subclass goes there."""
    SharedReadBuffer.max_size = SSL_READ_BUFFER
    asyncio.sslproto.SSLProtocol = SharedReadBuffer   # type: ignore[misc]
