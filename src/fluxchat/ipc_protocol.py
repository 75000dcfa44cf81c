"""The local API's wire format: JSON lines, validated here without any I/O.

A request is one line `{"id", "cmd", "args", "token"}`; a response is one line
`{"id", "ok": true, "result"}` or `{"id", "ok": false, "error": {"code", "message"}}`.
The arguments of each command are checked by ipc_commands.py (the COMMANDS table) with the
kinds of ipc_args.py; this module handles lines, requests, responses and tokens.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any

from .errors import IpcError
from .ipc_args import is_text
from .ipc_commands import validate_args
from .records import record

# A 1 MiB body, JSON-escaped (quotes, newlines), plus the envelope fits in one line.
MAX_LINE = 2 * 1024 * 1024
TOKEN_FILE = "ipc.token"
MAX_REQUEST_ID = 128

ERROR_CODES = frozenset({
    "bad_json", "bad_request", "too_long", "unknown_command", "bad_argument", "bad_token",
    "not_found", "invalid_id", "too_large", "internal", "unavailable", "ambiguous", "exists",
})


class RequestError(IpcError):
    """An IpcError that also knows the request id (None when the id could not be read)."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


@record
class Request:
    id: int | str
    cmd: str
    args: dict[str, Any]
    token: str


@record
class Response:
    id: int | str | None
    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""


# --- requests ----------------------------------------------------------------------------

def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def decode_line(line: bytes, max_line: int = MAX_LINE) -> Any:
    """One JSON value from a line; strict UTF-8, no NaN/Infinity."""
    if len(line) > max_line:
        raise RequestError("too_long", f"request line longer than {max_line} bytes")
    try:
        return json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise RequestError("bad_json", "the line is not valid UTF-8") from None
    except RecursionError:
        raise RequestError("bad_json", "JSON nested too deeply") from None
    except ValueError as exc:
        raise RequestError("bad_json", f"not valid JSON: {str(exc)[:100]}") from None


def _request_id(obj: dict[str, Any]) -> int | str:
    rid = obj.get("id")
    if isinstance(rid, bool) or not isinstance(rid, (int, str)):
        raise RequestError("bad_request", "id: expected an integer or a string")
    if isinstance(rid, str) and len(rid) > MAX_REQUEST_ID:
        raise RequestError("bad_request", f"id: expected at most {MAX_REQUEST_ID} characters")
    return rid


def parse_envelope(line: bytes, max_line: int = MAX_LINE) -> Request:
    """The request's shape only (args not yet checked), so the token is checked before anything else."""
    obj = decode_line(line, max_line)
    if not isinstance(obj, dict):
        raise RequestError("bad_request", "a request is a JSON object {id, cmd, args, token}")
    rid = _request_id(obj)
    extra = set(obj) - {"id", "cmd", "args", "token"}
    if extra:
        raise RequestError("bad_request", f"unknown request field {sorted(extra)[0][:40]!r}", rid)
    cmd, args, token = obj.get("cmd"), obj.get("args", {}), obj.get("token")
    if not is_text(cmd):
        raise RequestError("bad_request", "cmd: expected a string", rid)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RequestError("bad_request", "args: expected an object", rid)
    if not is_text(token):
        raise RequestError("bad_token", "missing token; read it from the node's data_dir/ipc.token", rid)
    return Request(rid, cmd, args, token)


def validate_request(envelope: Request) -> Request:
    try:
        args = validate_args(envelope.cmd, envelope.args)
    except IpcError as exc:
        raise RequestError(exc.code, exc.message, envelope.id) from None
    return Request(envelope.id, envelope.cmd, args, envelope.token)


def parse_request(line: bytes, max_line: int = MAX_LINE) -> Request:
    """A whole request, checked; raises RequestError (an IpcError) with the right code."""
    return validate_request(parse_envelope(line, max_line))


def check_token(given: object, expected: str) -> bool:
    """Constant-time comparison; an empty expected token never matches."""
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


# --- encoding ----------------------------------------------------------------------------

def _encode(obj: Any) -> bytes:
    """Compact JSON + newline. UTF-8 keeps a 1 MiB body near 1 MiB on the wire."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode("utf-8") + b"\n"
    except UnicodeEncodeError:  # a lone surrogate somewhere: \u-escape everything instead
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def ok_response(request_id: int | str | None, result: Any) -> bytes:
    return _encode({"id": request_id, "ok": True, "result": result})


def error_response(request_id: int | str | None, code: str, message: str) -> bytes:
    return _encode({"id": request_id, "ok": False, "error": {"code": code, "message": message}})


def event_line(event: dict[str, Any]) -> bytes:
    """One line of a `watch` stream."""
    return _encode({"event": event})


def make_request(request_id: int | str, cmd: str, args: dict[str, Any] | None, token: str) -> bytes:
    return _encode({"id": request_id, "cmd": cmd, "args": args or {}, "token": token})


def parse_response(line: bytes) -> Response:
    """The client's side; raises IpcError("bad_json") when the node's answer is malformed."""
    try:
        obj = decode_line(line, max_line=len(line))
    except RequestError as exc:
        raise IpcError("bad_json", f"malformed response from the node: {exc.message}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("ok"), bool):
        raise IpcError("bad_json", "malformed response from the node: no 'ok' field")
    if obj["ok"]:
        return Response(obj.get("id"), True, obj.get("result"))
    error = obj.get("error")
    if not isinstance(error, dict):
        raise IpcError("bad_json", "malformed response from the node: no 'error' object")
    return Response(obj.get("id"), False, None, str(error.get("code", "internal")), str(error.get("message", "")))


# --- framing -----------------------------------------------------------------------------

class LineSplitter:
    """Splits a byte stream into lines of at most max_line bytes (newline excluded).

    `feed` returns complete lines; None stands for a line that was too long. Once a line
    overruns, the rest of it is dropped up to the next newline, so the stream resyncs.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        events: list[bytes | None] = []
        scan_from = len(self._buf)  # the old buffer holds no newline
        self._buf += data
        start = 0
        while (nl := self._buf.find(b"\n", max(start, scan_from))) >= 0:
            if self._discarding:
                self._discarding = False
            elif nl - start > self.max_line:
                events.append(None)
            else:
                events.append(bytes(self._buf[start:nl]))
            start = nl + 1
        del self._buf[:start]
        if len(self._buf) > self.max_line or (self._discarding and self._buf):
            if not self._discarding:
                events.append(None)
                self._discarding = True
            self._buf.clear()
        return events


# --- binding -----------------------------------------------------------------------------

def check_bind_address(address: str, allow_remote: bool) -> None:
    """Refuse a non-loopback IPC address unless the config says `ipc.allow_remote: true`."""
    if allow_remote or address == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise IpcError("bad_argument", f"ipc.address: {address!r} is not a loopback address; other machines "
                                       "could reach the local API. Set ipc.allow_remote to true to allow it")
