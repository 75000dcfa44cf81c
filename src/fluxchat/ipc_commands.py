"""The local API's commands: the COMMANDS table and the check of a request's arguments.

Each command lists its arguments (ipc_args.Arg), so adding a command is one entry and the
node's handlers only ever see well-typed arguments with defaults filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import IpcError
from .ipc_args import CHECKS, Arg
from .mail_rules import MAX_SUBJECT_CHARS, body_problem
from .records import record

MAX_SUBJECT = MAX_SUBJECT_CHARS


@record
class Command:
    name: str
    args: tuple[Arg, ...] = ()
    # Cross-argument rules (e.g. `contacts add` needs alias and id); raises IpcError.
    check: Callable[[dict[str, Any]], None] | None = None


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
            args[arg.name] = CHECKS[arg.kind](arg, raw[arg.name])
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


