"""The local API's wire format: JSON lines, validated here without any I/O.

A request is one line `{"id", "cmd", "args", "token"}`; a response is one line
`{"id", "ok": true, "result"}` or `{"id", "ok": false, "error": {"code", "message"}}`.
The COMMANDS table describes every command's arguments, so adding a command is one entry
and the node's handlers only ever see well-typed arguments with defaults filled in.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeGuard

from .errors import IpcError
from .ids import ID_PREFIX, IdError, parse_id
from .mail_rules import MAX_SUBJECT_CHARS, body_problem

# A 1 MiB body, JSON-escaped (quotes, newlines), plus the envelope fits in one line.
MAX_LINE = 2 * 1024 * 1024
TOKEN_FILE = "ipc.token"
MAX_SUBJECT = MAX_SUBJECT_CHARS
MAX_REQUEST_ID = 128

ERROR_CODES = frozenset({
    "bad_json", "bad_request", "too_long", "unknown_command", "bad_argument", "bad_token",
    "not_found", "invalid_id", "too_large", "internal", "unavailable", "ambiguous", "exists",
})
MIN_UUID_PREFIX = 6      # hex digits: short handles for people typing uuids
MAX_RECIPIENTS = 32

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_RE = re.compile(rf"[0-9a-f]{{{MIN_UUID_PREFIX},32}}")
_ALIAS_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_ID_CHARS = 64  # FC_ + at most 44 base58 digits


class RequestError(IpcError):
    """An IpcError that also knows the request id (None when the id could not be read)."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


@dataclass(frozen=True)
class Arg:
    """One argument: `kind` is text, int, bool, choice, uuid (or a prefix of at least 6 hex digits),
    peer (ID or alias), peers (one peer or a list of them), node_id or alias.

    For int, low/high bound the value; for text, high bounds the length in characters.
    """

    name: str
    kind: str
    required: bool = False
    default: Any = None
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[Arg, ...] = ()
    # Cross-argument rules (e.g. `contacts add` needs alias and id); raises IpcError.
    check: Callable[[dict[str, Any]], None] | None = None


@dataclass(frozen=True)
class Request:
    id: int | str
    cmd: str
    args: dict[str, Any]
    token: str


@dataclass(frozen=True)
class Response:
    id: int | str | None
    ok: bool
    result: Any = None
    code: str = ""
    message: str = ""


def _contacts_check(args: dict[str, Any]) -> None:
    action = args["action"]
    if action == "add" and (args["id"] is None) == (args["from"] is None):
        raise IpcError("bad_argument", "contacts add needs either id or from (the uuid of a mail they sent)")
    needed = {"list": (), "add": ("alias", "id" if args["id"] else "from"), "remove": ("alias",)}[action]
    if args["force"] and action != "add":
        raise IpcError("bad_argument", f"force: not used by contacts {action}")
    for name in ("alias", "id", "from"):
        if name in needed and args[name] is None:
            raise IpcError("bad_argument", f"{name}: required by contacts {args['action']}")
        if name not in needed and args[name] is not None:
            raise IpcError("bad_argument", f"{name}: not used by contacts {args['action']}")


def _uuid_arg() -> Arg:
    return Arg("uuid", "uuid", required=True)


_TABLE = (
    Command("mail", (Arg("to", "peers", required=True), Arg("subject", "text", default="", high=MAX_SUBJECT),
                     Arg("body", "text", required=True))),
    Command("reply", (_uuid_arg(), Arg("body", "text", required=True),
                      Arg("subject", "text", high=MAX_SUBJECT), Arg("quote", "bool", default=False))),
    Command("list", (Arg("folder", "choice", default="inbox", choices=("inbox", "outbox", "sent")),
                     Arg("new_only", "bool", default=False),
                     Arg("limit", "int", default=50, low=1, high=1000),
                     Arg("offset", "int", default=0, low=0, high=2**53))),
    Command("read", (_uuid_arg(), Arg("mark", "bool", default=True))),
    Command("mark", (_uuid_arg(), Arg("read", "bool", default=True))),
    Command("conversations", (Arg("limit", "int", default=50, low=1, high=1000),)),
    Command("conversation", (Arg("peer", "peer", required=True),
                             Arg("limit", "int", default=50, low=1, high=1000),
                             Arg("mark_read", "bool", default=True))),
    Command("watch"),
    Command("web_link"),
    Command("delete", (_uuid_arg(),)),
    Command("status", (_uuid_arg(),)),
    Command("resend", (_uuid_arg(),)),
    Command("contacts", (Arg("action", "choice", default="list", choices=("list", "add", "remove")),
                         Arg("alias", "alias"), Arg("id", "node_id"), Arg("from", "uuid"),
                         Arg("force", "bool", default=False)), check=_contacts_check),
    Command("peers"),
    Command("info"),
    Command("save"),
    Command("stop"),
    Command("backup", (Arg("file", "text", required=True, high=4096),)),
)
COMMANDS: dict[str, Command] = {command.name: command for command in _TABLE}


# --- argument checks -------------------------------------------------------------------

def _bad(arg: Arg, expected: str, value: Any) -> IpcError:
    shown = json.dumps(value, ensure_ascii=True)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return IpcError("bad_argument", f"{arg.name}: expected {expected}, got {shown}")


def _is_text(value: Any) -> TypeGuard[str]:
    """A str that is valid Unicode: JSON may smuggle in lone surrogates like "\\ud800"."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(arg: Arg, value: Any) -> str:
    if not _is_text(value):
        raise _bad(arg, "a string", value)
    if arg.high is not None and len(value) > arg.high:
        raise IpcError("bad_argument", f"{arg.name}: expected at most {arg.high} characters, got {len(value)}")
    return value


def _check_int(arg: Arg, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(arg, "an integer", value)
    low, high = arg.low, arg.high
    if (low is not None and value < low) or (high is not None and value > high):
        raise _bad(arg, f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}", value)
    return value


def _check_bool(arg: Arg, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad(arg, "true or false", value)
    return value


def _check_choice(arg: Arg, value: Any) -> str:
    if value not in arg.choices or not isinstance(value, str):
        raise _bad(arg, " or ".join(arg.choices), value)
    return value


def _check_uuid(arg: Arg, value: Any) -> str:
    """A whole uuid (returned in its usual dashed form) or a prefix of 6..31 hex digits
    (returned as bare hex); accepts upper case from users pasting, returns lower case."""
    text = value.lower() if isinstance(value, str) else ""
    if _UUID_RE.fullmatch(text):
        return text
    digits = text.replace("-", "")
    if len(text) <= 36 and _HEX_RE.fullmatch(digits):
        if len(digits) == 32:
            return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
        return digits
    raise _bad(arg, f"a uuid like 123e4567-e89b-12d3-a456-426614174000 or its first "
                    f"{MIN_UUID_PREFIX}+ hex digits", value)


def _check_node_id(arg: Arg, value: Any) -> str:
    # Length first: base58-decoding a megabyte-long string would take quadratic time.
    if isinstance(value, str) and len(value) > _MAX_ID_CHARS:
        raise IpcError("invalid_id", f"{arg.name}: not a node ID (too long)")
    try:
        parse_id(value)
    except IdError as exc:
        raise IpcError("invalid_id", f"{arg.name}: {exc}") from None
    text: str = value  # parse_id accepted it, so it is a str
    return text


def _check_alias(arg: Arg, value: Any) -> str:
    if not _is_text(value) or value.startswith(ID_PREFIX) or not _ALIAS_RE.fullmatch(value):
        raise _bad(arg, f"an alias of 1..64 ASCII letters, digits, '.', '_' or '-', not starting with {ID_PREFIX}",
                   value)
    return value


def _check_peer(arg: Arg, value: Any) -> str:
    """A node ID or a contact alias; the node resolves the alias."""
    if isinstance(value, str) and value.startswith(ID_PREFIX):
        return _check_node_id(arg, value)
    if not _is_text(value) or not _ALIAS_RE.fullmatch(value):
        raise IpcError("invalid_id", f"{arg.name}: expected a node ID ({ID_PREFIX}…) or a contact alias, "
                                     f"got {json.dumps(value, ensure_ascii=True)[:60]}")
    return value


def _check_peers(arg: Arg, value: Any) -> list[str]:
    """One peer, or a list of 1..MAX_RECIPIENTS distinct peers; always returned as a list."""
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= MAX_RECIPIENTS:
        raise _bad(arg, f"a peer or a list of 1..{MAX_RECIPIENTS} peers", value)
    return list(dict.fromkeys(_check_peer(arg, v) for v in values))


_CHECKS: dict[str, Callable[[Arg, Any], Any]] = {
    "text": _check_text, "int": _check_int, "bool": _check_bool, "choice": _check_choice,
    "uuid": _check_uuid, "node_id": _check_node_id, "alias": _check_alias, "peer": _check_peer,
    "peers": _check_peers,
}


def validate_args(cmd: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Checked arguments with defaults filled in; every declared name is present (None if unset)."""
    command = COMMANDS.get(cmd)
    if command is None:
        raise IpcError("unknown_command", f"unknown command {cmd[:40]!r}; known: {', '.join(COMMANDS)}")
    known = {arg.name for arg in command.args}
    for name in raw:
        if name not in known:
            raise IpcError("bad_argument", f"{name[:40]}: unknown argument for {cmd}"
                                           f" (expected {', '.join(sorted(known)) or 'none'})")
    args: dict[str, Any] = {}
    for arg in command.args:
        if arg.name in raw and raw[arg.name] is not None:
            args[arg.name] = _CHECKS[arg.kind](arg, raw[arg.name])
        elif arg.required:
            raise IpcError("bad_argument", f"{arg.name}: required by {cmd}")
        else:
            args[arg.name] = arg.default
    if command.check is not None:
        command.check(args)
    return args


def check_body_size(body: str, limit: int) -> None:
    """The node calls this with `config.mail.max_body_bytes`; the limit is on UTF-8 bytes."""
    problem = body_problem(body, limit)
    if problem is not None:
        raise IpcError("too_large", problem)


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
    if not _is_text(cmd):
        raise RequestError("bad_request", "cmd: expected a string", rid)
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise RequestError("bad_request", "args: expected an object", rid)
    if not _is_text(token):
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
