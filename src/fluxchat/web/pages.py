"""Server-rendered pages of the web app: plain functions from API results to HTML strings.

Everything that came from the network or the user goes through `esc` (html.escape, quotes
included); mail bodies are text shown in <pre>-like blocks, never markup, and no page loads
anything from outside the app (the CSP forbids it anyway).
"""

from __future__ import annotations

import html
import time
from typing import Any

Item = dict[str, Any]

NAV = (("/", "Conversations"), ("/compose", "Compose"), ("/sent", "Sent"), ("/contacts", "Contacts"),
       ("/network", "Network"))


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def when(ts: Any) -> str:
    if isinstance(ts, int) and not isinstance(ts, bool):
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    return ""


def short(node_id: str) -> str:
    return node_id[:11] + "…" if len(node_id) > 12 else node_id


def who(peer: str, alias: Any, name: Any = "") -> str:
    """The alias when we gave one; else the short ID, with the name the peer signed marked as a hint."""
    if alias:
        return f'<span class="alias">{esc(alias)}</span>'
    hint = f' <span class="hint" title="signed by the sender; not verified">“{esc(name)}”</span>' if name else ""
    return f'<span class="id" title="{esc(peer)}">{esc(short(peer))}</span>{hint}'


def layout(title: str, body: str, csrf: str = "", active: str = "", peer: str = "") -> str:
    links = "".join(f'<a href="{href}"{" class=on" if href == active else ""}>{label}</a>'
                    for href, label in NAV) if csrf else ""
    logout = (f'<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" '
              f'value="{esc(csrf)}"><button>Sign out</button></form>') if csrf else ""
    script = '<script src="/static/app.js" defer></script>' if csrf else ""   # signed in: live updates
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<meta name="csrf" content="{esc(csrf)}"><title>{esc(title)} · FluxChat</title>'
            f'<link rel="stylesheet" href="/static/style.css">{script}</head><body data-peer="{esc(peer)}">'
            f'<header><b>FluxChat</b><nav>{links}</nav>{logout}</header>'
            f'<main><h1>{esc(title)}</h1>{body}</main></body></html>')


def login(error: str = "") -> str:
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    return layout("Sign in", f"""{message}
<p>Run <code>./src/ipc_app.py web</code> for a one-time sign-in link, or paste the node's token
(<code>DATA_DIR/ipc.token</code>).</p>
<form method="post" action="/login"><label>Token <input type="password" name="token" autocomplete="off"
required></label> <button>Sign in</button></form>""")


def conversations(result: Item, csrf: str) -> str:
    rows = "".join(
        f'<tr data-peer="{esc(c["peer"])}"><td><a href="/c/{esc(c["peer"])}">{who(c["peer"], c["alias"], c["name"])}'
        f'</a></td><td class="unread">{c["unread"] or ""}</td><td>{c["total"]}</td><td>{when(c["last_at"])}</td></tr>'
        for c in result["conversations"])
    table = (f'<table class="list" id="conversations"><thead><tr><th>With</th><th>Unread</th><th>Mails</th>'
             f'<th>Last</th></tr></thead><tbody>{rows}</tbody></table>') if rows else \
        '<p id="conversations">No conversations yet. <a href="/compose">Write a mail</a>.</p>'
    return layout("Conversations", table, csrf, "/")


def message(item: Item) -> str:
    """One mail in a conversation (also served alone, for live updates)."""
    mine = item["direction"] == "out"
    state = f'<span class="state" data-state-for="{esc(item["uuid"])}">{esc(item["state"])}</span>' if mine else ""
    subject = f'<div class="subject">{esc(item["subject"])}</div>' if item["subject"] else ""
    author = "You" if mine else who(item["peer"], item["alias"], item.get("name"))
    return (f'<article class="mail {"out" if mine else "in"}{" new" if item.get("new") else ""}" '
            f'data-uuid="{esc(item["uuid"])}"><div class="meta">{author} · {when(item["at"])} {state}</div>'
            f'{subject}<div class="body">{esc(item["body"])}</div></article>')


def conversation(result: Item, csrf: str) -> str:
    peer = result["peer"]
    items = "".join(message(item) for item in result["items"]) or '<p class="empty">No mail yet.</p>'
    last = result["items"][-1]["uuid"] if result["items"] else ""
    body = (f'<p class="peer">{who(peer, result["alias"], result["name"])} <code>{esc(peer)}</code></p>'
            f'<section id="thread">{items}</section>'
            f'<form method="post" action="/c/{esc(peer)}" class="reply" id="reply">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}"><input type="hidden" name="ref" value="{esc(last)}">'
            f'<textarea name="body" rows="3" required placeholder="Write a reply"></textarea>'
            f'<button>Send</button></form>')
    return layout(f"Conversation with {result['alias'] or short(peer)}", body, csrf, "", peer)


def compose(csrf: str, contacts: list[Item], error: str = "") -> str:
    options = "".join(f'<option value="{esc(c["alias"])}">' for c in contacts)
    message_ = f'<p class="error">{esc(error)}</p>' if error else ""
    return layout("Compose", f"""{message_}<form method="post" action="/compose" class="compose">
<input type="hidden" name="csrf" value="{esc(csrf)}">
<label>To <input name="to" list="aliases" required placeholder="alias or FC_… (several: separate with spaces)"></label>
<datalist id="aliases">{options}</datalist>
<label>Subject <input name="subject" maxlength="255"></label>
<label>Message <textarea name="body" rows="8" required></textarea></label>
<button>Send</button></form>""", csrf, "/compose")


def sent(result: Item, csrf: str) -> str:
    rows = "".join(
        f'<tr><td>{when(m["created_at"])}</td><td><a href="/c/{esc(m["peer"])}">{who(m["peer"], m["alias"])}</a></td>'
        f'<td>{esc(m["subject"])}</td><td class="state" data-state-for="{esc(m["uuid"])}">{esc(m["state"])}</td></tr>'
        for m in result["items"])
    table = (f'<table class="list"><thead><tr><th>Written</th><th>To</th><th>Subject</th><th>State</th></tr>'
             f'</thead><tbody>{rows}</tbody></table>') if rows else "<p>Nothing sent yet.</p>"
    return layout("Sent mail", table, csrf, "/sent")


def contacts(result: Item, info: Item, csrf: str, error: str = "") -> str:
    rows = "".join(
        f'<tr><td><a href="/c/{esc(c["id"])}">{esc(c["alias"])}</a></td><td><code>{esc(c["id"])}</code></td>'
        f'<td class="fp"><code>{esc(c["fingerprint"])}</code></td></tr>' for c in result["contacts"])
    table = (f'<table class="list"><thead><tr><th>Alias</th><th>ID</th><th>Fingerprint</th></tr></thead>'
             f'<tbody>{rows}</tbody></table>') if rows else "<p>No contacts yet.</p>"
    message_ = f'<p class="error">{esc(error)}</p>' if error else ""
    return layout("Contacts", f"""{message_}{table}
<h2>Add a contact</h2><form method="post" action="/contacts" class="inline">
<input type="hidden" name="csrf" value="{esc(csrf)}"><input name="alias" required placeholder="alias">
<input name="id" required placeholder="FC_…" size="48"><label><input type="checkbox" name="force" value="1">
replace an existing alias</label> <button>Add</button></form>
<h2>Your ID</h2><figure class="me"><img src="/qr.svg" alt="QR code of your node ID" width="200" height="200">
<figcaption><code id="my-id">{esc(info["id"])}</code><br><small>fingerprint <code>{esc(info["fingerprint"])}</code>
</small></figcaption></figure>""", csrf, "/contacts")


def network(peers: Item, info: Item, csrf: str) -> str:
    rows = "".join(
        f'<tr><td><code>{esc(k["id"])}</code></td><td>{esc(k["direction"])}</td><td>{esc(k["address"])}</td>'
        f'<td>{float(k["age"]):.0f} s</td></tr>' for k in peers["links"])
    counts = info["counts"]
    return layout("Network", f"""<dl class="stats"><dt>Links</dt><dd id="link-count">{len(peers["links"])}</dd>
<dt>Routing table</dt><dd>{peers["routing_table_size"]} nodes</dd><dt>Held for others</dt><dd>{counts["held"]}
mails</dd><dt>Listening</dt><dd>{esc(", ".join(info["listen"]))}</dd><dt>Uptime</dt><dd>{info["uptime"]:.0f} s
</dd></dl><table class="list"><thead><tr><th>Peer</th><th>Dir</th><th>Address</th><th>Age</th></tr></thead>
<tbody>{rows}</tbody></table>""", csrf, "/network")


def error_page(status: int, text: str) -> str:
    return layout(f"{status}", f'<p class="error">{esc(text)}</p><p><a href="/">Back</a></p>')
