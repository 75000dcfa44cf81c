"""The local API's argument kinds and their checks, without any I/O.

Each `Arg` names a kind (text, int, bool, choice, uuid, node_id, alias, peer, peers); `CHECKS`
maps the kind to a function that returns the value in its normal form or raises IpcError
naming the argument. The command table (ipc_commands.py) is built from these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeGuard

from .errors import IpcError
from .ids import ID_PREFIX, IdError, parse_id
from .records import record

MIN_UUID_PREFIX = 6      # hex digits: short handles for people typing uuids
MAX_RECIPIENTS = 32

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_RE = re.compile(rf"[0-9a-f]{{{MIN_UUID_PREFIX},32}}")
_ALIAS_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAX_ID_CHARS = 64  # FC_ + at most 44 base58 digits


@record
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


def _bad(arg: Arg, expected: str, value: Any) -> IpcError:
    shown = json.dumps(value, ensure_ascii=True)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return IpcError("bad_argument", f"{arg.name}: expected {expected}, got {shown}")


def is_text(value: Any) -> TypeGuard[str]:
    """A str that is valid Unicode: JSON may smuggle in lone surrogates like "\\ud800"."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(arg: Arg, value: Any) -> str:
    if not is_text(value):
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
    if not is_text(value) or value.startswith(ID_PREFIX) or not _ALIAS_RE.fullmatch(value):
        raise _bad(arg, f"an alias of 1..64 ASCII letters, digits, '.', '_' or '-', not starting with {ID_PREFIX}",
                   value)
    return value


def _check_peer(arg: Arg, value: Any) -> str:
    """A node ID or a contact alias; the node resolves the alias."""
    if isinstance(value, str) and value.startswith(ID_PREFIX):
        return _check_node_id(arg, value)
    if not is_text(value) or not _ALIAS_RE.fullmatch(value):
        raise IpcError("invalid_id", f"{arg.name}: expected a node ID ({ID_PREFIX}…) or a contact alias, "
                                     f"got {json.dumps(value, ensure_ascii=True)[:60]}")
    return value


def _check_peers(arg: Arg, value: Any) -> list[str]:
    """One peer, or a list of 1..MAX_RECIPIENTS distinct peers; always returned as a list."""
    values = value if isinstance(value, list) else [value]
    if not 1 <= len(values) <= MAX_RECIPIENTS:
        raise _bad(arg, f"a peer or a list of 1..{MAX_RECIPIENTS} peers", value)
    return list(dict.fromkeys(_check_peer(arg, v) for v in values))


CHECKS: dict[str, Callable[[Arg, Any], Any]] = {
    "text": _check_text, "int": _check_int, "bool": _check_bool, "choice": _check_choice,
    "uuid": _check_uuid, "node_id": _check_node_id, "alias": _check_alias, "peer": _check_peer,
    "peers": _check_peers,
}


