"""The local API server: an asyncio loop that feeds lines to ipc_protocol and writes its replies.

Every request must carry the token from `data_dir/ipc.token`; the first wrong token closes
the connection. A `hello` (see ipc_hello) is answered before any token, so a client can make
the node prove it knows the token first. Anything else that goes wrong in one request gets an
error reply, and the connection and the node carry on. Connections without the token are
bounded in time, line length and number (see IpcServer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .errors import IpcError
from .events import Subscription
from .ids import IdError
from .ipc_hello import hello_nonce, hello_proof
from .ipc_protocol import (
    MAX_LINE,
    TOKEN_FILE,
    LineSplitter,
    RequestError,
    check_bind_address,
    check_token,
    decode_line,
    error_response,
    event_line,
    ok_response,
    parse_envelope,
    validate_request,
)
from .logsetup import about_peer
from .records import mutable_record

__all__ = ["IpcServer", "Dispatch", "write_token_file", "check_bind_address"]

log = logging.getLogger(__name__)

Dispatch = Callable[[str, dict[str, Any]], Awaitable[object]]

_READ_CHUNK = 64 * 1024
_MAX_HELLO = 512
PENDING_MAX_LINE = 64 * 1024   # bytes per line before the token was accepted


@mutable_record
class _Client:
    writer: asyncio.StreamWriter
    authenticated: bool = False


class IpcServer:
    """Serves `dispatch(cmd, args)` to many local clients at once.

    Bounds (so that local users without the token cannot lock the owner out or grow our
    memory): a connection must send a request with the right token within `auth_timeout`
    seconds, in lines of at most PENDING_MAX_LINE bytes until then; at most `max_pending`
    connections wait for that at once (a newcomer closes the oldest waiting one); an
    authenticated connection idle for `idle_timeout` seconds between requests is closed;
    at most `max_clients` are authenticated at once.
    """

    def __init__(self, address: str, port: int, token: str, dispatch: Dispatch,
                 max_line: int = MAX_LINE, max_clients: int = 64, max_pending: int = 64,
                 auth_timeout: float = 5.0, idle_timeout: float = 600.0) -> None:
        self.address = address
        self.token = token
        self.dispatch = dispatch
        self.max_line = max_line
        self.max_clients, self.max_pending = max_clients, max_pending
        self.auth_timeout, self.idle_timeout = auth_timeout, idle_timeout
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._clients: dict[asyncio.Task[Any], _Client] = {}

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self.address, self._requested_port, limit=self.max_line + 1)
        except OSError as exc:
            raise IpcError("unavailable", f"cannot listen on {self.address}:{self._requested_port} "
                                          f"for IPC: {exc.strerror or exc}") from None

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            return self._requested_port
        return int(self._server.sockets[0].getsockname()[1])

    def counts(self) -> tuple[int, int]:
        """(connections waiting to authenticate, authenticated connections)."""
        authenticated = sum(1 for c in self._clients.values() if c.authenticated)
        return len(self._clients) - authenticated, authenticated

    async def close(self) -> None:
        """Stops listening and drops every client. A handler calling this loses its own reply,
        so a `stop` handler should schedule the shutdown rather than await it."""
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [task for task in self._clients if task is not current]
        for task, client in list(self._clients.items()):
            client.writer.close()
            if task is not current:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._make_room()
        client = self._clients[task] = _Client(writer)
        try:
            await self._session(reader, client)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell anyone
        except asyncio.CancelledError:
            # Only close() and _make_room() cancel these tasks; ending quietly keeps asyncio's
            # client_connected_cb callback from reporting the cancellation as an error.
            pass
        finally:
            del self._clients[task]
            writer.close()

    def _make_room(self) -> None:
        """At the cap of connections waiting to authenticate, close the oldest of them: it
        has had the most time, and the owner's own client authenticates at once."""
        waiting = [task for task, c in self._clients.items() if not c.authenticated]
        if len(waiting) >= self.max_pending:
            log.warning("ipc: %d connections without a token; closing the oldest", len(waiting),
                        extra=about_peer("ipc pending"))
            self._clients[waiting[0]].writer.close()
            waiting[0].cancel()

    async def _session(self, reader: asyncio.StreamReader, client: _Client) -> None:
        # Our own splitter rather than readline(): after an overlong line it really resyncs
        # at the next newline instead of treating the line's tail as a new request.
        splitter = LineSplitter(min(PENDING_MAX_LINE, self.max_line))
        keep: bool | Subscription
        loop = asyncio.get_running_loop()
        auth_deadline = loop.time() + self.auth_timeout
        while True:
            authenticated = client.authenticated
            deadline = loop.time() + self.idle_timeout if authenticated else auth_deadline
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(_READ_CHUNK)
            except TimeoutError:
                why = "idle for too long" if authenticated else \
                    f"no request with the token within {self.auth_timeout:g} s"
                await _send(client.writer, error_response(None, "unavailable", f"{why}; closing"))
                return
            if not data:
                return
            for line in splitter.feed(data):
                if line is None:
                    reply, keep = error_response(None, "too_long",
                                                 f"request line longer than {splitter.max_line} bytes"), True
                elif not line.strip():
                    continue  # blank lines are harmless (e.g. typed by hand)
                else:
                    reply, keep = await self._answer(line, client)
                    if client.authenticated:
                        splitter.max_line = self.max_line
                if isinstance(keep, Subscription):   # `watch`: this connection becomes a stream
                    await _send(client.writer, reply)
                    await _stream(keep, reader, client.writer)
                    return
                await _send(client.writer, reply)
                if not keep:
                    return

    async def _answer(self, line: bytes, client: _Client) -> tuple[bytes, bool | Subscription]:
        """The reply to one line, and whether the connection stays open (or the event
        subscription it turns into)."""
        hello = _hello(line)
        if hello is not None and hello[2] is None:
            rid, nonce, _ = hello
            return ok_response(rid, {"proof": hello_proof(self.token, nonce, self.port)}), True
        peer = _peer_name(client.writer)
        try:
            envelope = parse_envelope(line, self.max_line)
        except RequestError as exc:
            if exc.code == "bad_token":
                log.warning("ipc: request without a token from %s; connection closed", peer,
                            extra=about_peer(f"ipc {peer.rpartition(':')[0]}"))
            return error_response(exc.request_id, exc.code, exc.message), exc.code != "bad_token"
        if not check_token(envelope.token, self.token):
            log.warning("ipc: wrong token from %s; connection closed", peer,
                        extra=about_peer(f"ipc {peer.rpartition(':')[0]}"))
            return error_response(envelope.id, "bad_token",
                                  "wrong token; read it from the node's data_dir/ipc.token"), False
        if not client.authenticated:
            if self.counts()[1] >= self.max_clients:
                log.warning("ipc: too many clients; refusing one", extra=about_peer("ipc full"))
                return error_response(envelope.id, "unavailable",
                                      "too many IPC clients; try again"), False
            client.authenticated = True
        if hello is not None:   # a hello with the token: authenticated, nothing to dispatch
            return ok_response(hello[0], {"proof": hello_proof(self.token, hello[1], self.port)}), True
        try:
            request = validate_request(envelope)
            result = await self.dispatch(request.cmd, request.args)
            if isinstance(result, Subscription):
                return ok_response(request.id, {"watching": True}), result
            return ok_response(request.id, result), True
        except IpcError as exc:
            return error_response(envelope.id, exc.code, exc.message), True
        except IdError as exc:
            return error_response(envelope.id, "invalid_id", str(exc)), True
        except Exception as exc:  # a bug in one handler must not take down the connection or node
            # Never log args or results: they hold mail text.
            log.error("ipc: command %r failed with %s", envelope.cmd[:40], type(exc).__name__, exc_info=True)
            return error_response(envelope.id, "internal", "internal error; see the node's log"), True


def _hello(line: bytes) -> tuple[Any, bytes, str | None] | None:
    """(request id, nonce, token if any) when the line is a hello (small: checked early)."""
    if len(line) > _MAX_HELLO or b'"hello"' not in line:
        return None
    try:
        obj = decode_line(line, _MAX_HELLO)
    except RequestError:
        return None
    nonce = hello_nonce(obj)
    rid = obj.get("id") if isinstance(obj, dict) else None
    if nonce is None or not isinstance(rid, (int, str)) or isinstance(rid, bool):
        return None
    token = obj.get("token")
    return rid, nonce, token if isinstance(token, str) else None


async def _stream(subscription: Subscription, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    """Event lines until the node stops, the client sends anything or hangs up, or the
    client reads too slowly: then its queue overflows and the connection is dropped."""
    subscription.on_overflow = writer.transport.abort
    ended = asyncio.ensure_future(reader.read(1))
    ended.add_done_callback(lambda _: subscription.close())
    try:
        async for event in subscription:
            await _send(writer, event_line(event))
    finally:
        subscription.close()
        ended.cancel()


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def write_token_file(data_dir: Path) -> str:
    """Writes a fresh token to data_dir/ipc.token (0600) and returns it.

    Written to a private temporary file and renamed, so a client never reads half a token
    and the file is never readable by others, whatever mode an old file had."""
    token = secrets.token_hex(32)
    path = Path(data_dir) / TOKEN_FILE
    tmp = path.with_name(TOKEN_FILE + ".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(token + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise IpcError("unavailable", f"cannot write the IPC token file {path}: {exc.strerror or exc}") from None
    return token
