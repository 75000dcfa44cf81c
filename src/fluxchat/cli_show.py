"""What the command line prints for people: the node's answers as tables and headers.

Everything the node returns may come from other people (subjects, bodies, display names), so
every value is escaped before it reaches the terminal: no control character or bidi override
a sender chose can move the cursor, recolour the screen or reorder a line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

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
