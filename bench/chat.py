#!/usr/bin/env python3
"""Conversations and the web app with a full mailbox.

With 10,000 mails in the node's database (8,000 received from 100 peers, 2,000 sent):
- `list`, `conversations` and `conversation` over the local API (one JSON line each way on a
  kept connection), the conversations page and a conversation page over HTTP, and the whole
  `ipc_app.py list` command (a new Python process each time);
- an arriving mail on an open page: from the commit in the recipient's store to the event on
  the web app's SSE stream, and to the rendered mail fragment the page fetches next;
- RSS of a node process without the web app, with it enabled and idle, and after pages were
  served.
Targets (issue 14): pages and `list` <= 100 ms; mail on an open page <= 200 ms after commit;
the web app adds <= 5 MiB RSS while nobody uses it.

Usage: python3 bench/chat.py [--quick]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import aiohttp  # noqa: E402

from bench.lablib import (  # noqa: E402
    fill_mailbox,
    fresh_dir,
    parse_args,
    print_table,
    quiet_logs,
    rss_kib,
    summary_ms,
    write_results,
)
from fluxchat.ipc_protocol import TOKEN_FILE, make_request  # noqa: E402
from fluxchat.node import DB_FILE  # noqa: E402
from fluxchat.store import Store  # noqa: E402
from tests.keys import identity  # noqa: E402
from tests.lab import LabNode, ProcessNode, write_config  # noqa: E402

WEB = {"web": {"enabled": True, "port": 0}}


def fill(data_dir: Path, me: bytes, received: int, sent: int) -> None:
    """The mailbox as a long-used node has it; written straight to the database before start."""
    store = Store.open(data_dir / DB_FILE)
    fill_mailbox(store, me, received, sent)
    store.close()


def prefill(directory: Path, index: int, received: int, sent: int, overrides: dict[str, Any]) -> None:
    write_config(directory, index, [], overrides)
    fill(directory / f"node{index:02d}", identity(index).node_id, received, sent)


async def timed(call: Any, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return times


class Ipc:
    def __init__(self, node: Any) -> None:
        self.node, self.n = node, 0

    async def open(self) -> None:
        self.token = (self.node.config.data_dir / TOKEN_FILE).read_text().strip()
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.node.ipc_port,
                                                                 limit=16 * 1024 * 1024)

    async def call(self, cmd: str, args: dict[str, Any]) -> Any:
        self.n += 1
        self.writer.write(make_request(self.n, cmd, args, self.token))
        reply = json.loads(await self.reader.readline())
        assert reply["ok"], reply
        return reply["result"]


async def web_session(http: aiohttp.ClientSession, node: Any) -> None:
    async with http.get(node.api.web_login(), allow_redirects=True) as response:
        assert response.status == 200, response.status


async def in_process(quick: bool) -> dict[str, Any]:
    directory = fresh_dir("chat")
    received, sent = (1600, 400) if quick else (8000, 2000)
    runs = 10 if quick else 30
    started = time.perf_counter()
    prefill(directory, 0, received, sent, WEB)
    fill_s = time.perf_counter() - started
    a = LabNode(directory, 0, [], WEB)
    node = await a.start()
    b = LabNode(directory, 1, [a.address], WEB)
    sender = await b.start()
    results: dict[str, Any] = {"mails": received + sent, "fill_s": round(fill_s, 1)}
    try:
        ipc = Ipc(node)
        await ipc.open()
        top = (await ipc.call("conversations", {"limit": 1}))["conversations"][0]["peer"]
        calls = {
            "ipc list (50 rows)": lambda: ipc.call("list", {"limit": 50}),
            "ipc list --unread": lambda: ipc.call("list", {"limit": 50, "new_only": True}),
            "ipc list --sent": lambda: ipc.call("list", {"folder": "sent", "limit": 50}),
            "ipc conversations (50)": lambda: ipc.call("conversations", {"limit": 50}),
            "ipc conversation (50)": lambda: ipc.call("conversation", {"peer": top, "mark_read": False}),
        }
        base = f"http://127.0.0.1:{node.web_port}"
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            await web_session(http, node)

            async def page(path: str) -> None:
                async with http.get(base + path) as response:
                    assert response.status == 200, (path, response.status)
                    await response.read()

            calls["web conversations page (200)"] = lambda: page("/")
            calls["web conversation page (100)"] = lambda: page(f"/c/{top}")
            calls["web sent page (200)"] = lambda: page("/sent")
            rows = []
            for name, call in calls.items():
                await call()   # warm: first-use imports and caches
                stats = summary_ms(await timed(call, runs))
                results[name] = stats
                rows.append([name, stats["median"], stats["p95"], stats["max"]])
            print_table(f"{received + sent} mails in the mailbox: answer times (ms)",
                        ["request", "median", "p95", "max"], rows)
            results["live"] = await live(http, base, node, sender, runs)
    finally:
        await b.stop()
        await a.stop()
    return results


async def live(http: aiohttp.ClientSession, base: str, node: Any, sender: Any, runs: int) -> dict[str, Any]:
    """Commit in the recipient's store → SSE event at a client → the fragment the page fetches."""
    committed: dict[bytes, float] = {}
    assert node.store is not None
    node.store.observers.append(lambda topic, uuid: committed.setdefault(uuid, time.perf_counter())
                                if topic == "inbox" else None)
    to_event, to_fragment = [], []
    async with http.get(base + "/events") as stream:
        await stream.content.readline()   # ": subscribed"
        for n in range(runs):
            sent = await sender.api.call("mail", {"to": node.identity.id_text, "body": f"live {n}"})
            raw = uuidlib.UUID(sent["uuid"]).bytes
            while True:
                line = (await asyncio.wait_for(stream.content.readline(), 30)).decode()
                if line.startswith("data:") and json.loads(line[5:])["uuid"] == sent["uuid"] \
                        and json.loads(line[5:])["type"] == "mail":
                    break
            seen = time.perf_counter()
            async with http.get(f"{base}/m/{sent['uuid']}") as response:
                assert f"live {n}" in await response.text()
            done = time.perf_counter()
            to_event.append(seen - committed[raw])
            to_fragment.append(done - committed[raw])
    event, fragment = summary_ms(to_event), summary_ms(to_fragment)
    print_table("An arriving mail on an open page, from the commit (ms)", ["step", "median", "p95", "max"],
                [["event on the SSE stream", event["median"], event["p95"], event["max"]],
                 ["+ rendered mail fetched", fragment["median"], fragment["p95"], fragment["max"]]])
    return {"commit_to_event": event, "commit_to_fragment": fragment}


def cli_list(runs: int) -> dict[str, Any]:
    directory = fresh_dir("chat_cli")
    prefill(directory, 0, 800 if runs < 10 else 8000, 200 if runs < 10 else 2000, {})
    node = ProcessNode(directory, 0, [])
    node.start()
    try:
        settings = json.loads(node.config_path.read_text())
        settings["ipc"]["port"] = node.runtime["ipc_port"]
        config = directory / "cli.json"
        config.write_text(json.dumps(settings))
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, str(ROOT / "src" / "ipc_app.py"), "-c", str(config), "list"],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
        stats = summary_ms(times)
        print_table("ipc_app.py list, a new process each time (ms)", ["", "median", "p95"],
                    [["whole command", stats["median"], stats["p95"]]])
        return stats
    finally:
        node.stop()


def rss(quick: bool) -> dict[str, Any]:
    """The node process's RSS, settled, without and with the web app (same mailbox)."""
    figures: dict[str, Any] = {}
    for label, overrides in (("web off", {}), ("web on, idle", WEB)):
        directory = fresh_dir("chat_rss")
        prefill(directory, 0, 800 if quick else 8000, 200 if quick else 2000, overrides)
        node = ProcessNode(directory, 0, [], overrides)
        node.start()
        try:
            assert node.proc is not None
            time.sleep(2.0)
            figures[label] = rss_kib(node.proc.pid)
            if overrides:
                url = node.call("web_link")["url"]
                subprocess.run([sys.executable, "-c", _VISIT, url], check=True, capture_output=True)
                time.sleep(0.5)
                figures["web on, after pages"] = rss_kib(node.proc.pid)
        finally:
            node.stop()
    rows = [[label, kib / 1024] for label, kib in figures.items()]
    rows.append(["web app adds (idle)", (figures["web on, idle"] - figures["web off"]) / 1024])
    print_table("Node process RSS (MiB)", ["", "RSS"], rows)
    return figures


# A sign-in and a round of pages, from a separate process (standard library only).
_VISIT = r"""
import http.cookiejar, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
opener.open(sys.argv[1]).read()
base = sys.argv[1].split("/login")[0]
for path in ("/", "/sent", "/contacts", "/network", "/qr.svg", "/compose"):
    opener.open(base + path).read()
"""


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    quiet_logs()
    print(f"pid {os.getpid()}; figures taken on a shared machine under load from other work")
    results = asyncio.run(in_process(args.quick))
    results["cli_list"] = cli_list(3 if args.quick else 10)
    results["rss_kib"] = rss(args.quick)
    write_results("chat", results)


if __name__ == "__main__":
    main()
