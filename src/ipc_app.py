#!/usr/bin/env python3
"""Command line for a running FluxChat node: send, list and read mail, manage contacts.

Exit codes: 0 success, 1 the node answered with an error, 2 usage, 3 node not reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from fluxchat.runtime_env import use_project_venv

if __name__ == "__main__":   # started as a script, perhaps by a python3 without our dependencies
    use_project_venv()

from fluxchat.config import Config, load_config  # noqa: E402
from fluxchat.errors import ConfigError, IpcError  # noqa: E402
from fluxchat.ipc_client import IpcClient, NodeUnreachable, connect_address, read_token_file  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_CONFIG = "var/config1.json"
PROG = "ipc_app.py"

# Text from the network must not drive the terminal: escape C0/C1 controls and bidi overrides.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ONE_LINE = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _CONTROLS}
_MULTI_LINE = {c: e for c, e in _ONE_LINE.items() if chr(c) not in "\n\t"}


def clean(value: Any) -> str:
    """One line of untrusted text, safe to print."""
    return ("-" if value is None else str(value)).translate(_ONE_LINE)


def clean_body(value: Any) -> str:
    """Untrusted multi-line text: keeps newlines and tabs, escapes every other control."""
    return str(value or "").replace("\r\n", "\n").translate(_MULTI_LINE)


def when(ts: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if isinstance(ts, (int, float)) and not isinstance(ts, bool):
        return time.strftime(fmt, time.localtime(ts))
    return "-"


def history_rows(history: list[dict[str, Any]]) -> list[list[str]]:
    """One row per step, with seconds; a step repeated by retries is one row saying how often."""
    rows: list[list[str]] = []
    last: tuple[Any, Any] | None = None
    for step in history:
        key = (step.get("state"), step.get("detail"))
        if key == last:
            rows[-1][3] = str(int(rows[-1][3] or 1) + 1)
            rows[-1][1] = when(step.get("at"), "%H:%M:%S")
            continue
        last = key
        rows.append([when(step.get("at"), "%Y-%m-%d %H:%M:%S"), "", clean(step.get("state")), "",
                     clean(step.get("detail"))])
    return [[at, state, f"{detail} (x{times}, last {latest})" if times else detail]
            for at, latest, state, times, detail in rows]


def who(node_id: Any, alias: Any, name: Any = None) -> str:
    """The alias when known, else the ID shortened like FC_ab12cd…, with the display name the
    sender signed in quotes (a hint: anyone can sign any name)."""
    if alias:
        return clean(alias)
    text = clean(node_id)
    text = text[:9] + "…" if len(text) > 10 else text
    return f'{text} "{clean(name)}"' if name else text


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    return "\n".join(lines)


# --- argument parsing ---------------------------------------------------------------------

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
    return sub.add_parser(name, parents=[common], help=summary, description=summary,
                          epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_uuid(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-u", "--uuid", help="the mail's uuid (as shown by list)")
    parser.add_argument("uuid_arg", nargs="?", metavar="UUID", help="the uuid, instead of -u")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Talk to a running FluxChat node (start it with src/server_app.py -c CONFIG).",
        epilog="exit codes: 0 ok, 1 error from the node, 2 usage, 3 node not reachable\n"
               f"example:\n  {PROG} -c var/config2.json list")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subs: dict[str, argparse.ArgumentParser] = {}
    p = subs["mail"] = _sub(sub, common, "mail", "send a mail; prints its uuid",
                            f"{PROG} mail -c var/config1.json -s Test -b 'Hello World' -t FC_…")
    p.add_argument("-t", "--to", required=True, action="append",
                   help="recipient: a node ID (FC_…) or a contact alias; repeat for several (one envelope each)")
    p.add_argument("-s", "--subject", default="", help="subject line (default: empty)")
    p.add_argument("-b", "--body", help="the text; '-' reads standard input, as does leaving -b out "
                                        "when the text is piped in")
    p = subs["reply"] = _sub(sub, common, "reply", "answer a mail: to its sender, subject 'Re: …'",
                             f"{PROG} reply 3f2a9c -b 'Sounds good'")
    _add_uuid(p)
    p.add_argument("-b", "--body", help="the text; '-' or omitted reads standard input")
    p.add_argument("-s", "--subject", default=None, help="subject (default: 'Re: ' + the original's)")
    p.add_argument("-q", "--quote", action="store_true", help="quote the original below the answer")
    p = subs["list"] = _sub(sub, common, "list", "list the inbox (or sent mail)", f"{PROG} list --unread")
    p.add_argument("-n", "--new", "--unread", dest="new", action="store_true", help="only mail not read yet")
    p.add_argument("--outbox", "--sent", dest="outbox", action="store_true",
                   help="list sent mail and its delivery state")
    p.add_argument("--limit", type=int, default=50, help="at most this many rows (1..1000, default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many rows (default 0)")
    for name, summary in (("read", "show one mail (received or sent) and mark it read"),
                          ("delete", "delete one mail"), ("status", "delivery state and history of a sent mail"),
                          ("resend", "send a failed or expired mail again"),
                          ("mark", "mark a received mail read (or --unread)")):
        subs[name] = _sub(sub, common, name, summary, f"{PROG} {name} 123e45")
        _add_uuid(subs[name])
    subs["mark"].add_argument("--unread", action="store_true", help="mark it unread instead")
    p = subs["thread"] = _sub(sub, common, "thread", "the conversation with one contact, oldest first",
                              f"{PROG} thread bob")
    p.add_argument("peer", metavar="ALIAS|ID", help="a contact alias or a node ID (FC_…)")
    p.add_argument("--limit", type=int, default=50, help="the last this many mails (1..1000, default 50)")
    p = subs["conversations"] = _sub(sub, common, "conversations", "everyone you exchanged mail with, "
                                     "latest first, with unread counts", f"{PROG} conversations")
    p.add_argument("--limit", type=int, default=50, help="at most this many (1..1000, default 50)")
    p = subs["web"] = _sub(sub, common, "web", "a one-time sign-in link to the node's web app "
                           "(needs web.enabled)", f"{PROG} web --open")
    p.add_argument("--open", action="store_true", help="open the link in your web browser")
    subs["watch"] = _sub(sub, common, "watch", "print events as they happen (mail arrived, delivery "
                         "states, links) until interrupted", f"{PROG} watch --json")
    _contacts(sub, common, subs)
    for name, summary in (("peers", "show links to other nodes"), ("info", "show this node's ID and counts"),
                          ("save", "ask the node to save (storage is always durable)"),
                          ("stop", "stop the node gracefully")):
        subs[name] = _sub(sub, common, name, summary, f"{PROG} -c var/config1.json {name}")
    p = subs["backup"] = _sub(sub, common, "backup", "write an encrypted archive of the node: identity, "
                              "mail keys, mailbox, contacts (restore: server_app.py --restore FILE)",
                              f"{PROG} backup ~/fluxchat.fcbackup")
    p.add_argument("file", help="a new file on the node's machine (never overwritten)")
    return parser, subs


def _contacts(sub: Any, common: argparse.ArgumentParser, subs: dict[str, argparse.ArgumentParser]) -> None:
    p = subs["contacts"] = _sub(sub, common, "contacts", "list, add or remove contact aliases",
                                f"{PROG} contacts add bob FC_…")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    _sub(actions, common, "list", "list contacts (the default)", f"{PROG} contacts list")
    add = _sub(actions, common, "add", "add an alias for a node ID, or for the sender of a mail",
               f"{PROG} contacts add bob FC_…   or   {PROG} contacts add bob --from 3f2a9c")
    add.add_argument("alias", help="1..64 ASCII letters, digits, '.', '_' or '-', not starting with FC_")
    add.add_argument("id", nargs="?", help="the node ID (FC_…)")
    add.add_argument("--from", dest="from_uuid", metavar="UUID", help="save the sender of this received mail")
    add.add_argument("--force", action="store_true", help="repoint an alias that names another node")
    remove = _sub(actions, common, "remove", "remove an alias", f"{PROG} contacts remove bob")
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


# --- human output ------------------------------------------------------------------------

def show_mail(result: dict[str, Any], args: dict[str, Any]) -> str:
    sent = result.get("sent") or []
    if len(sent) <= 1:
        return clean(result.get("uuid"))
    return "\n".join(f"{clean(s.get('uuid'))}  {who(s.get('to'), s.get('alias'))}" for s in sent)


def show_list(result: dict[str, Any], args: dict[str, Any]) -> str:
    folder, items = clean(result.get("folder", args["folder"])), result.get("items") or []
    if not items:
        return f"No {'new ' if args['new_only'] else ''}mail in {folder}."
    offset = args["offset"]
    if folder in ("outbox", "sent"):
        rows = [["#", "UUID", "CREATED", "TO", "STATE", "SUBJECT"]] + [
            [str(offset + n), clean(m.get("uuid")), when(m.get("created_at")), who(m.get("to"), m.get("alias")),
             clean(m.get("state")), clean(m.get("subject"))] for n, m in enumerate(items, 1)]
    else:
        rows = [["#", "", "UUID", "RECEIVED", "FROM", "SUBJECT"]] + [
            [str(offset + n), "*" if m.get("new") else "", clean(m.get("uuid")), when(m.get("received_at")),
             who(m.get("from"), m.get("alias"), m.get("name")), clean(m.get("subject"))]
            for n, m in enumerate(items, 1)]
    text, total = table(rows), result.get("total", len(items))
    if isinstance(total, int) and (offset or offset + len(items) < total):
        more = offset + len(items) < total
        text += (f"\nShowing {offset + 1}-{offset + len(items)} of {total}"
                 + (f"; --offset {offset + len(items)} shows the next ones." if more else "."))
    return text


PROTECTION_TEXT = {
    "forward-secret-pq": "forward-secret, post-quantum hybrid (mail keys, envelope v2)",
    "rsa": "RSA only (envelope v1: the recipient published no mail key record)",
}


def protection(value: Any) -> str:
    if value is None:
        return "not sealed yet"
    return PROTECTION_TEXT.get(value, clean(value))


def show_read(result: dict[str, Any], args: dict[str, Any]) -> str:
    if result.get("folder") == "sent":
        to = clean(result.get("to"))
        headers = [("To", f"{clean(result['alias'])} <{to}>" if result.get("alias") else to),
                   ("Date", when(result.get("created_at"))), ("Subject", clean(result.get("subject"))),
                   ("State", clean(result.get("state"))), ("UUID", clean(result.get("uuid")))]
        if result.get("ref"):
            headers.append(("Replying", clean(result.get("ref"))))
        return "\n".join(f"{k + ':':<10}{v}" for k, v in headers) + "\n\n" + clean_body(result.get("body"))
    sender = clean(result.get("from"))
    if result.get("alias"):
        sender = f"{clean(result['alias'])} <{sender}>"
    elif result.get("name"):
        sender = f'{sender} (signs as "{clean(result["name"])}", unverified)'
    verified = "yes (signed by the sender's key)" if result.get("verified") else "NO - do not trust this mail"
    headers = [("From", sender), ("To", clean(result.get("to"))), ("Date", when(result.get("created_at"))),
               ("Received", when(result.get("received_at"))), ("Subject", clean(result.get("subject"))),
               ("Verified", verified), ("Security", protection(result.get("protection"))),
               ("UUID", clean(result.get("uuid")))]
    if result.get("ref"):
        headers.append(("Replying", clean(result.get("ref"))))
    return "\n".join(f"{k + ':':<10}{v}" for k, v in headers) + "\n\n" + clean_body(result.get("body"))


def show_status(result: dict[str, Any], args: dict[str, Any]) -> str:
    lines = [f"{k + ':':<11}{v}" for k, v in (
        ("UUID", clean(result.get("uuid"))), ("To", who(result.get("to"), result.get("alias"))),
        ("State", clean(result.get("state"))), ("Reason", clean(result.get("reason"))),
        ("Stored on", f"{result.get('stored_on', 0)} nodes"), ("Created", when(result.get("created_at"))),
        ("Expires", when(result.get("expires_at"))),
        ("Security", protection(result.get("protection"))))]
    history = result.get("history") or []
    if history:
        lines += ["", "History:", table(history_rows(history))]
    return "\n".join(lines)


def show_contacts(result: dict[str, Any], args: dict[str, Any]) -> str:
    if args["action"] == "add":
        was = f" (was {clean(result['replaced'])})" if result.get("replaced") else ""
        return f"Added {clean(result.get('alias'))} = {clean(result.get('id'))}{was}."
    if args["action"] == "remove":
        alias = clean(result.get("alias"))
        return f"Removed {alias}." if result.get("removed") else f"No contact named {alias}."
    contacts = result.get("contacts") or []
    if not contacts:
        return "No contacts."
    return table([["ALIAS", "ID"]] + [[clean(c.get("alias")), clean(c.get("id"))] for c in contacts])


def show_conversation(result: dict[str, Any], args: dict[str, Any]) -> str:
    peer = who(result.get("peer"), result.get("alias"), result.get("name"))
    items = result.get("items") or []
    lines = [f"Conversation with {peer} <{clean(result.get('peer'))}>" if result.get("alias")
             else f"Conversation with {peer}"]
    if not items:
        lines.append("No mail yet.")
    for m in items:
        mine = m.get("direction") == "out"
        mark = f"[{clean(m.get('state'))}]" if mine else ("*" if m.get("new") else "")
        head = f"{when(m.get('at'))}  {'you' if mine else peer}  {mark} {clean(m.get('subject'))}".rstrip()
        body = clean_body(m.get("body")).replace("\n", "\n    ")
        lines += ["", f"{head}  ({clean(m.get('uuid'))[:8]})", f"    {body}"]
    return "\n".join(lines)


def show_conversations(result: dict[str, Any], args: dict[str, Any]) -> str:
    rows = result.get("conversations") or []
    if not rows:
        return "No conversations yet."
    return table([["#", "WITH", "UNREAD", "MAILS", "LAST"]] + [
        [str(n), who(c.get("peer"), c.get("alias"), c.get("name")), str(c.get("unread", 0)),
         str(c.get("total", 0)), when(c.get("last_at"))] for n, c in enumerate(rows, 1)])


def show_event(event: dict[str, Any]) -> str:
    """One `watch` event as a line a person reads."""
    kind, stamp = event.get("type"), time.strftime("%H:%M:%S")
    if kind == "mail":
        return (f"{stamp}  mail from {who(event.get('from'), event.get('alias'), event.get('name'))}: "
                f"{clean(event.get('subject'))}  ({clean(event.get('uuid'))[:8]})")
    if kind == "state":
        return (f"{stamp}  mail {clean(event.get('uuid'))[:8]} to {who(event.get('peer'), None)}: "
                f"{clean(event.get('state'))}")
    if kind == "link":
        return f"{stamp}  link {'up' if event.get('up') else 'down'}: {clean(event.get('peer'))}"
    if kind == "reachability":
        return f"{stamp}  reachability: {clean(event.get('status'))} ({clean(event.get('address'))})"
    return f"{stamp}  {clean(kind)}: {clean(json.dumps(event))}"


def show_peers(result: dict[str, Any], args: dict[str, Any]) -> str:
    links = result.get("links") or []
    text = "No links." if not links else table([["ID", "DIR", "ADDRESS", "AGE"]] + [
        [clean(k.get("id")), clean(k.get("direction")), clean(k.get("address")), f"{k.get('age', 0):.0f} s"]
        for k in links])
    return text + f"\nRouting table: {result.get('routing_table_size', 0)} nodes"


def _reachability(reach: dict[str, Any]) -> str:
    """e.g. `unreachable at 203.0.113.1:25001 (checked 2026-11-30 20:31); relays: FC_…`"""
    text = clean(reach.get("status"))
    if reach.get("address"):
        text += f" at {clean(reach['address'])}"
    if reach.get("checked_at"):
        text += f" (checked {when(reach['checked_at'])})"
    relays = reach.get("relays") or []
    if relays:
        text += "; relays: " + ", ".join(clean(r) for r in relays)
    return text


def show_info(result: dict[str, Any], args: dict[str, Any]) -> str:
    counts = result.get("counts") or {}
    rows = [("ID", clean(result.get("id"))), ("Fingerprint", clean(result.get("fingerprint"))),
            ("Version", clean(result.get("version"))), ("Uptime", f"{result.get('uptime', 0):.0f} s"),
            ("Listen", ", ".join(clean(a) for a in result.get("listen") or []) or "-"),
            ("IPC", clean(result.get("ipc"))),
            ("Reachable", _reachability(result.get("reachability") or {})),
            ("Counts", ", ".join(f"{clean(k)} {clean(v)}" for k, v in counts.items()) or "-")]
    return "\n".join(f"{k + ':':<13}{v}" for k, v in rows)


SHOW: dict[str, Callable[[dict[str, Any], dict[str, Any]], str]] = {
    "mail": show_mail, "list": show_list, "read": show_read, "delete": lambda r, a: f"Deleted {clean(r.get('uuid'))}.",
    "status": show_status, "resend": lambda r, a: f"Queued {clean(r.get('uuid'))} again.",
    "contacts": show_contacts, "peers": show_peers, "info": show_info,
    "reply": lambda r, a: clean(r.get("uuid")), "conversation": show_conversation,
    "conversations": show_conversations, "web_link": lambda r, a: clean(r.get("url")),
    "mark": lambda r, a: f"Marked {clean(r.get('uuid'))} {'unread' if r.get('new') else 'read'}.",
    "save": lambda r, a: "Saved.", "stop": lambda r, a: "The node is stopping.",
    "backup": lambda r, a: f"Wrote {clean(r.get('bytes'))} bytes to {clean(r.get('file'))}.",
}


# --- main --------------------------------------------------------------------------------

def _fail(message: str, code: int, as_json: bool = False, kind: str = "error") -> int:
    """A failure for a person (stderr) or, with --json, for a script: one JSON object on stdout."""
    if as_json:
        print(json.dumps({"ok": False, "error": {"code": kind, "message": message}}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def ipc_port(config: Config) -> int:
    """The configured port, or with `ipc.port: 0` the one the running node picked."""
    if config.ipc.port:
        return config.ipc.port
    try:
        return int(json.loads((config.data_dir / "runtime.json").read_text())["ipc_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run(ns: argparse.Namespace, cmd: str, args: dict[str, Any]) -> int:
    config_path = getattr(ns, "config", None) or os.environ.get("FLUXCHAT_CONFIG") or DEFAULT_CONFIG
    as_json = bool(getattr(ns, "json", False))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE, as_json, "config")
    port = ipc_port(config)
    where = f"{connect_address(config.ipc.address)}:{port}"
    hint = f"start it with src/server_app.py -c {config_path}"
    if not config.ipc.enabled:
        return _fail(f"the local API is disabled in {config_path} (ipc.enabled)", EXIT_UNREACHABLE, as_json,
                     "unavailable")
    try:
        token = read_token_file(config.data_dir)
    except IpcError as exc:  # the node writes it at each start: most likely not running
        return _fail(f"cannot reach the node at {where}: {exc.message}; {hint}", EXIT_UNREACHABLE, as_json,
                     "unavailable")
    try:
        with IpcClient(config.ipc.address, port, token) as client:
            result = client.call(cmd, args)
            if cmd == "watch":
                return watch(client, bool(getattr(ns, "json", False)))
            if cmd == "web_link" and getattr(ns, "open", False) and isinstance(result, dict):
                import webbrowser
                webbrowser.open(str(result.get("url")))
    except NodeUnreachable:
        return _fail(f"cannot reach the node at {where}; {hint}", EXIT_UNREACHABLE, as_json, "unavailable")
    except IpcError as exc:
        if as_json:
            return _fail(exc.message, EXIT_ERROR, True, exc.code)
        return _fail(f"{exc.code}: {exc.message}", EXIT_ERROR)
    if getattr(ns, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(SHOW[cmd](result if isinstance(result, dict) else {}, args))
    if cmd == "contacts" and args.get("action") == "remove" and not (result or {}).get("removed"):
        return EXIT_ERROR   # nothing was removed: a script must not take it for done
    return EXIT_OK


def watch(client: IpcClient, as_json: bool) -> int:
    """Print events until the node closes the stream (it stops, or we read too slowly)."""
    for event in client.events():
        print(json.dumps(event) if as_json else show_event(event), flush=True)
    return _fail("the node ended the event stream", EXIT_UNREACHABLE)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    parser, subs = build_parser()
    ns = parser.parse_args(argv)
    cmd, args = request_for(ns, subs)
    return run(ns, cmd, args)


def _tool(name: str) -> Callable[[list[str]], int] | None:
    """The entry point behind `fluxchat NAME`, for the names that are not local API commands."""
    if name == "node":
        import server_app
        return server_app.main
    if name == "node-id":
        import gen_id
        return gen_id.main
    if name == "keygen":
        import gen_rsa
        return gen_rsa.main
    return None


def console() -> None:
    """The `fluxchat` command (pyproject.toml): `fluxchat node ...` runs a node (server_app.py), `fluxchat node-id
    ...` prints a key's ID (gen_id.py), `fluxchat keygen ...` makes an identity (gen_rsa.py); the rest is this CLI."""
    global PROG
    argv = sys.argv[1:]
    tool = _tool(argv[0]) if argv else None
    if tool is not None:
        sys.argv[0] = f"fluxchat {argv[0]}"   # argparse names the program after it
    PROG = "fluxchat"
    try:
        sys.exit(tool(argv[1:]) if tool else main(argv))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)


if __name__ == "__main__":
    console()
