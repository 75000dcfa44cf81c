"""A blocking client for the local API, for ipc_app.py and scripts (no event loop needed)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from .errors import FluxError, IpcError
from .ipc_hello import HELLO, NONCE_BYTES, proof_holds
from .ipc_protocol import TOKEN_FILE, make_request, parse_response

__all__ = ["IpcClient", "NodeUnreachable", "read_token_file", "connect_address"]


class NodeUnreachable(FluxError):
    """Nothing answers at the IPC address: the node is not running (or listens elsewhere)."""

    def __init__(self, address: str, port: int, reason: str) -> None:
        super().__init__(f"cannot reach the node at {address}:{port}: {reason}")
        self.address = address
        self.port = port
        self.reason = reason


def connect_address(address: str) -> str:
    """Where to connect for a node listening on `address`: a wildcard means this machine."""
    if address in ("", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    return address


def read_token_file(data_dir: Path) -> str:
    """The token the running node wrote; IpcError("unavailable") naming the path otherwise."""
    path = Path(data_dir) / TOKEN_FILE
    try:
        token = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise IpcError("unavailable", f"no IPC token file at {path}; is the node running?") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a token"
        raise IpcError("unavailable", f"cannot read the IPC token file {path}: {reason}") from None
    if not token:
        raise IpcError("unavailable", f"the IPC token file {path} is empty")
    return token


class IpcClient:
    """One connection, opened on the first call and reused; `call` returns the result object."""

    def __init__(self, address: str, port: int, token: str, timeout: float = 30.0) -> None:
        self.address = connect_address(address)
        self.port = port
        self.token = token
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None
        self._next_id = 0

    def __enter__(self) -> IpcClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock, self._file = None, None

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Sends one request; raises IpcError(code, message) for an error reply."""
        self._connect()
        assert self._sock is not None and self._file is not None
        self._next_id += 1
        request_id = self._next_id
        line = self._round_trip(make_request(request_id, cmd, args, self.token))
        return self._result(parse_response(line), request_id)

    def _round_trip(self, request: bytes) -> bytes:
        """Sends one request line and reads one answer line; IpcError (connection closed) when it fails."""
        assert self._sock is not None and self._file is not None
        try:
            self._sock.sendall(request)
            line = self._file.readline()
        except TimeoutError:
            self.close()
            raise IpcError("unavailable", f"the node did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            self.close()
            raise IpcError("unavailable", f"the connection to the node broke: {exc.strerror or exc}") from None
        if not line.endswith(b"\n"):
            self.close()
            raise IpcError("unavailable", "the node closed the connection without answering")
        return line

    def events(self) -> Iterator[dict[str, Any]]:
        """After a successful `call("watch")`: each event the node sends, until it closes the
        connection (as it does to a reader too slow to keep up) or the caller stops iterating."""
        assert self._sock is not None and self._file is not None
        self._sock.settimeout(None)  # events may be hours apart
        try:
            while line := self._file.readline():
                if not line.endswith(b"\n"):
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    raise IpcError("bad_json", "malformed event line from the node") from None
                if isinstance(message, dict) and isinstance(message.get("event"), dict):
                    yield message["event"]
        except OSError as exc:
            raise IpcError("unavailable", f"the connection to the node broke: {exc.strerror or exc}") from None
        finally:
            self.close()

    def _result(self, response: Any, request_id: int) -> Any:
        if response.ok and response.id != request_id:
            self.close()
            raise IpcError("bad_json", f"the node answered request {response.id!r}, expected {request_id}")
        if not response.ok:
            if response.code == "bad_token":
                self.close()  # the node has closed its side
            raise IpcError(response.code, response.message)
        return response.result

    def _connect(self) -> None:
        if self._sock is not None:
            return
        try:
            sock = socket.create_connection((self.address, self.port), timeout=self.timeout)
        except (ConnectionRefusedError, TimeoutError) as exc:
            raise NodeUnreachable(self.address, self.port, exc.strerror or "timed out") from None
        except OSError as exc:  # unknown host, no route, ...
            raise NodeUnreachable(self.address, self.port, exc.strerror or str(exc)) from None
        self._sock = sock
        self._file = sock.makefile("rb")
        self._hello()

    def _hello(self) -> None:
        """Make the node prove it knows the token before anything secret is sent (ipc_hello),
        then authenticate with a second hello that carries the token."""
        nonce = os.urandom(NONCE_BYTES)
        result = self._exchange({"id": 0, "cmd": HELLO, "args": {"nonce": nonce.hex()}})
        assert self._sock is not None
        if not proof_holds(result, self.token, nonce, int(self._sock.getpeername()[1])):
            self.close()
            raise IpcError("bad_token", f"what listens at {self.address}:{self.port} could not prove it "
                                        "knows the token of this data directory: it is not this node, "
                                        "or the token file is stale (nothing was sent)")
        again = os.urandom(NONCE_BYTES)
        self._exchange({"id": 0, "cmd": HELLO, "args": {"nonce": again.hex()}, "token": self.token})

    def _exchange(self, request: dict[str, Any]) -> Any:
        """One hello request and its result; IpcError (connection closed) when it fails."""
        answer = self._round_trip(json.dumps(request).encode() + b"\n")
        response = parse_response(answer)
        if not response.ok:
            self.close()
            raise IpcError(response.code, response.message)
        return response.result
