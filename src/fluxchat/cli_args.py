"""The command line's grammar: argparse parsers for every command, and the (cmd, args) request
each parsed command line becomes. Usage errors exit with code 2 through argparse."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_CONFIG = "var/config1.json"


def _common() -> argparse.ArgumentParser:
    # SUPPRESS defaults: the options may come before or after the command, and a subparser
    # must not overwrite a value given before it with its own default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE", default=argparse.SUPPRESS,
                        help=f"node config (default: $FLUXCHAT_CONFIG, then {DEFAULT_CONFIG})")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the node's result as JSON, for scripts")
    return common


def _sub(sub: Any, common: argparse.ArgumentParser, name: str, summary: str, example: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], help=summary, description=summary, epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def _add_uuid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--uuid", help="the mail's uuid (as shown by list)")
    parser.add_argument("uuid_arg", nargs="?", metavar="UUID", help="the uuid, instead of -u")


def build_parser(prog: str) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=prog, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Talk to a running FluxChat node (start it with src/server_app.py -c CONFIG).",
        epilog="exit codes: 0 ok, 1 error from the node, 2 usage, 3 node not reachable\n"
               f"example:\n  {prog} -c var/config2.json list")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subs: dict[str, argparse.ArgumentParser] = {}
    p = subs["mail"] = _sub(sub, common, "mail", "send a mail; prints its uuid",
                            f"{prog} mail -c var/config1.json -s Test -b 'Hello World' -t FC_…")
    p.add_argument("-t", "--to", required=True, action="append",
                   help="recipient: a node ID (FC_…) or a contact alias; repeat for several (one envelope each)")
    p.add_argument("-s", "--subject", default="", help="subject line (default: empty)")
    p.add_argument("-b", "--body", help="the text; '-' reads standard input, as does leaving -b out "
                                        "when the text is piped in")
    p = subs["reply"] = _sub(sub, common, "reply", "answer a mail: to its sender, subject 'Re: …'",
                             f"{prog} reply 3f2a9c -b 'Sounds good'")
    _add_uuid(p)
    p.add_argument("-b", "--body", help="the text; '-' or omitted reads standard input")
    p.add_argument("-s", "--subject", default=None, help="subject (default: 'Re: ' + the original's)")
    p.add_argument("-q", "--quote", action="store_true", help="quote the original below the answer")
    p = subs["list"] = _sub(sub, common, "list", "list the inbox (or sent mail)", f"{prog} list --unread")
    p.add_argument("-n", "--new", "--unread", dest="new", action="store_true", help="only mail not read yet")
    p.add_argument("--outbox", "--sent", dest="outbox", action="store_true",
                   help="list sent mail and its delivery state")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (1..1000, default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many rows (default 0)")
    for name, summary in (("read", "show one mail (received or sent) and mark it read"),
                          ("delete", "delete one mail"), ("status", "delivery state and history of a sent mail"),
                          ("resend", "send a failed or expired mail again"),
                          ("mark", "mark a received mail read (or --unread)")):
        subs[name] = _sub(sub, common, name, summary, f"{prog} {name} 123e45")
        _add_uuid(subs[name])
    subs["mark"].add_argument("--unread", action="store_true", help="mark it unread instead")
    p = subs["thread"] = _sub(sub, common, "thread", "the conversation with one contact, oldest first",
                              f"{prog} thread bob")
    p.add_argument("peer", metavar="ALIAS|ID", help="a contact alias or a node ID (FC_…)")
    p.add_argument("--limit", type=int, default=50, help="the last this many mails (1..1000, default 50)")
    p = subs["conversations"] = _sub(sub, common, "conversations", "everyone you exchanged mail with, "
                                     "latest first, with unread counts", f"{prog} conversations")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
    p = subs["web"] = _sub(sub, common, "web", "a one-time sign-in link to the node's web app "
                           "(needs web.enabled)", f"{prog} web --open")
    p.add_argument("--open", action="store_true", help="open the link in your web browser")
    subs["watch"] = _sub(sub, common, "watch", "print events as they happen (mail arrived, delivery "
                         "states, links) until interrupted", f"{prog} watch --json")
    _contacts(sub, common, subs, prog)
    for name, summary in (("peers", "show links to other nodes"), ("info", "show this node's ID and counts"),
                          ("save", "ask the node to save (storage is always durable)"),
                          ("stop", "stop the node gracefully")):
        subs[name] = _sub(sub, common, name, summary, f"{prog} -c var/config1.json {name}")
    p = subs["backup"] = _sub(sub, common, "backup", "write an encrypted archive of the node: identity, "
                              "mail keys, mailbox, contacts (restore: server_app.py --restore FILE)",
                              f"{prog} backup ~/fluxchat.fcbackup")
    p.add_argument("file", help="a new file on the node's machine (never overwritten)")
    return parser, subs


def _contacts(sub: Any, common: argparse.ArgumentParser, subs: dict[str, argparse.ArgumentParser],
              prog: str) -> None:
    p = subs["contacts"] = _sub(sub, common, "contacts", "list, add or remove contact aliases",
                                f"{prog} contacts add bob FC_…")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    _sub(actions, common, "list", "list contacts (the default)", f"{prog} contacts list")
    add = _sub(actions, common, "add", "add an alias for a node ID, or for the sender of a mail",
               f"{prog} contacts add bob FC_…   or   {prog} contacts add bob --from 3f2a9c")
    add.add_argument("alias", help="1..64 ASCII letters, digits, '.', '_' or '-', not starting with FC_")
    add.add_argument("id", nargs="?", help="the node ID (FC_…)")
    add.add_argument("--from", dest="from_uuid", metavar="UUID", help="save the sender of this received mail")
    add.add_argument("--force", action="store_true", help="repoint an alias that names another node")
    remove = _sub(actions, common, "remove", "remove an alias", f"{prog} contacts remove bob")
    remove.add_argument("alias")


def _uuid(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if ns.uuid and ns.uuid_arg:
        parser.error("give the uuid once, with -u or as an argument")
    if not (ns.uuid or ns.uuid_arg):
        parser.error("the uuid is required (-u UUID; its first 6 or more digits are enough)")
    return str(ns.uuid or ns.uuid_arg).strip()   # pasted text often brings a space along


def _body(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if ns.body is not None and ns.body != "-":
        return str(ns.body)
    if ns.body is None and sys.stdin.isatty():
        parser.error("give the body with -b TEXT, or pipe it in (-b - reads standard input)")
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        parser.error("the body on standard input is not UTF-8 text")


def request_for(ns: argparse.Namespace, subs: dict[str, argparse.ArgumentParser]) -> tuple[str, dict[str, Any]]:
    """The (cmd, args) to send for the parsed command line; usage errors exit with 2."""
    cmd, parser = ns.command, subs[ns.command]
    if cmd == "mail":
        return cmd, {"to": [to.strip() for to in ns.to], "subject": ns.subject, "body": _body(ns, parser)}
    if cmd == "reply":
        return cmd, {"uuid": _uuid(ns, parser), "body": _body(ns, parser), "subject": ns.subject,
                     "quote": ns.quote}
    if cmd == "mark":
        return cmd, {"uuid": _uuid(ns, parser), "read": not ns.unread}
    if cmd == "thread":
        return "conversation", {"peer": ns.peer.strip(), "limit": ns.limit}
    if cmd == "conversations":
        return cmd, {"limit": ns.limit}
    if cmd == "web":
        return "web_link", {}
    if cmd == "list":
        return cmd, {"folder": "outbox" if ns.outbox else "inbox", "new_only": ns.new,
                     "limit": ns.limit, "offset": ns.offset}
    if cmd == "backup":   # the node writes it: send an absolute path
        return cmd, {"file": os.path.abspath(os.path.expanduser(ns.file))}
    if cmd in ("read", "delete", "status", "resend"):
        return cmd, {"uuid": _uuid(ns, parser)}
    if cmd == "contacts":
        action = ns.action or "list"
        if action == "add" and (ns.id is None) == (ns.from_uuid is None):
            parser.error("contacts add needs the node ID or --from UUID (one of them)")
        args = {"action": action, "alias": getattr(ns, "alias", None), "id": getattr(ns, "id", None),
                "from": getattr(ns, "from_uuid", None)}
        checked: dict[str, Any] = {k: v.strip() for k, v in args.items() if v is not None}
        if getattr(ns, "force", False):
            checked["force"] = True
        return cmd, checked
    return cmd, {}
