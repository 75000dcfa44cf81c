"""Shared helpers for the benchmarks: arguments, statistics, tables, JSON results, and lab
nodes (in-process or subprocess) built from the key pool (bench/keypool.py) or any key dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import shutil
import statistics
import sys
import time
import uuid as uuidlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
for _p in (str(ROOT / "src"), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from bench import keypool  # noqa: E402
from fluxchat.config import load_config  # noqa: E402
from fluxchat.identity import Identity  # noqa: E402
from fluxchat.node import Node  # noqa: E402
from fluxchat.store import InboxMail, OutboxMail, Store  # noqa: E402
from tests.lab import LAB_SETTINGS, ProcessNode, _merge  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LAB_DIR = ROOT / "tmp" / "benchlab"
IN_PROCESS: dict[str, Any] = {"ipc": {"enabled": False}, "log": {"level": "warning"}}


# ----- command line, statistics, output ------------------------------------------------


def parse_args(description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
               ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def quiet_logs(level: int = logging.ERROR) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger().setLevel(level)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """median / p95 / mean / max of durations, in milliseconds."""
    if not seconds:
        return {"n": 0}
    ms = [s * 1000 for s in seconds]
    return {"n": len(ms), "median": statistics.median(ms), "p95": percentile(ms, 95),
            "mean": statistics.fmean(ms), "min": min(ms), "max": max(ms)}


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(row, widths, strict=False))))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    return str(value)


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    meta = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "machine": platform.machine(), "argv": sys.argv[1:]}
    path.write_text(json.dumps({"meta": meta, **data}, indent=1, default=str) + "\n")
    print(f"\nresults written to {path.relative_to(ROOT)}")
    return path


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll `check` every `interval` seconds; False if it did not hold within `timeout`."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def fresh_dir(name: str) -> Path:
    """tmp/benchlab/NAME, emptied: each run starts from clean data directories."""
    path = LAB_DIR / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


MAILBOX_PEERS = 100


def fill_mailbox(store: Store, me: bytes, received: int, sent: int) -> None:
    """The mailbox as a long-used node has it: `received` mails from 100 peers (every 7th
    unread) and `sent` delivered answers, written straight into `store`."""
    now = int(time.time()) - received - sent
    peers = [bytes([n]) * 32 for n in range(1, MAILBOX_PEERS + 1)]
    for n in range(received):
        store.add_inbox(InboxMail(uuidlib.uuid4().bytes, peers[n % MAILBOX_PEERS], me, f"subject {n}",
                                  f"body {n} " * 20, now + n, now + n, is_new=n % 7 == 0))
    for n in range(sent):
        at = now + received + n
        store.add_outbox(OutboxMail(uuidlib.uuid4().bytes, peers[n % MAILBOX_PEERS], f"re {n}",
                                    f"answer {n} " * 20, at, at + 10**6, state="delivered"), at)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ----- lab nodes -------------------------------------------------------------------------


def write_node_config(directory: Path, name: str, key_dir: Path, identity: Identity,
                      bootstrap: list[str], overrides: dict[str, Any] | None = None) -> Path:
    """A data dir holding the identity from `key_dir` and a config file (as tests/lab.py)."""
    data_dir = directory / name
    if not (data_dir / "private_key.pem").exists():
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for file in ("private_key.pem", "public_key.pem", "certificate.pem"):
            shutil.copyfile(key_dir / file, data_dir / file)
            (data_dir / file).chmod(0o600)
    settings = _merge(LAB_SETTINGS, overrides or {})
    settings.update(data_dir=str(data_dir), bootstrap=bootstrap, id=identity.id_text)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(settings, indent=1))
    return path


class BenchNode:
    """One node in this process's event loop, with any identity (pool index or key dir).
    Its mailbox is encrypted with a fresh storage key as a real node's is (SQLCipher), unless
    `storage_key` is None: plain SQLite, for comparisons (bench/storage.py)."""

    def __init__(self, directory: Path, key: int | Path, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None,
                 storage_key: bytes | None | Literal["fresh"] = "fresh") -> None:
        self.storage_key = os.urandom(32) if storage_key == "fresh" else storage_key
        self.key_dir = keypool.key_dir(key) if isinstance(key, int) else key
        self.name = self.key_dir.name
        self.identity = keypool.load(self.key_dir)
        self.config_path = write_node_config(directory, self.name, self.key_dir, self.identity,
                                             bootstrap, _merge(IN_PROCESS, overrides or {}))
        self.node: Node | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> bytes:
        return self.identity.node_id

    @property
    def address(self) -> str:
        assert self.node is not None
        return f"127.0.0.1:{self.node.port}"

    @property
    def running(self) -> bool:
        return self.node is not None

    async def start(self, timeout: float = 30.0) -> Node:
        self.node = Node(load_config(self.config_path), self.identity, storage_key=self.storage_key)
        self._task = asyncio.ensure_future(self.node.run())
        ready = asyncio.ensure_future(self.node.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()
        if ready not in done:
            ready.cancel()
            raise TimeoutError(f"{self.name} did not start within {timeout} s")
        return self.node

    async def stop(self) -> None:
        if self.node is not None and self._task is not None:
            self.node.request_stop()
            try:
                await asyncio.wait_for(self._task, 10)
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                logging.getLogger("bench").warning("%s stopped with %r", self.name, exc)
        self.node, self._task = None, None


async def stop_all(nodes: Sequence[BenchNode]) -> None:
    await asyncio.gather(*(n.stop() for n in nodes), return_exceptions=True)


class _Stamps:
    """uuid -> time.perf_counter() of an event, with waiters woken when it happens."""

    def __init__(self) -> None:
        self.stamps: dict[bytes, float] = {}
        self._waiters: dict[bytes, asyncio.Future[float]] = {}

    def record(self, uuid: bytes) -> None:
        if uuid in self.stamps:
            return
        self.stamps[uuid] = at = time.perf_counter()
        waiter = self._waiters.pop(uuid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    async def wait(self, uuid: bytes, timeout: float) -> float | None:
        if uuid in self.stamps:
            return self.stamps[uuid]
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[uuid] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(uuid, None)


class InboxWatch(_Stamps):
    """Hooks a node's store so each committed inbox mail records its arrival time
    (time.perf_counter, right after the commit) and wakes whoever waits for it."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        assert node.store is not None
        self.arrived = self.stamps
        # Observers are told about each new inbox mail right after its commit.
        node.store.observers.append(lambda topic, uuid: topic == "inbox" and self.record(uuid))

    async def wait_count(self, count: int, timeout: float, interval: float = 0.005) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(interval)
        return True


class ReceiptWatch(_Stamps):
    """Hooks a node's store so each outbox mail turning `delivered` (its receipt verified)
    records the time, as InboxWatch does for the inbox."""

    def __init__(self, node: Node) -> None:
        super().__init__()
        assert node.store is not None
        self.delivered = self.stamps
        store = node.store
        original = store.set_outbox_state

        def set_outbox_state(uuid: bytes, state: str, *args: Any, **kwargs: Any) -> None:
            original(uuid, state, *args, **kwargs)
            if state == "delivered":
                self.record(uuid)

        store.set_outbox_state = set_outbox_state  # type: ignore[method-assign]
        # Receipts arrive through receive_all, which tells observers about each mail they
        # marked delivered (and about our own receipts it writes: never awaited here).
        receiving: list[bool] = []
        receive_all = store.receive_all

        def receive_all_watched(*args: Any) -> Any:
            receiving.append(True)
            try:
                return receive_all(*args)
            finally:
                receiving.pop()

        store.receive_all = receive_all_watched  # type: ignore[method-assign]
        store.observers.append(lambda topic, uuid: receiving and topic == "outbox"
                               and self.record(uuid))

    async def wait_all(self, uuids: list[bytes], timeout: float) -> float | None:
        """Time the last of `uuids` was delivered, or None on timeout."""
        times = [await self.wait(u, timeout) for u in uuids]
        return None if None in times else max(t for t in times if t is not None)


class PoolProcessNode(ProcessNode):
    """tests.lab.ProcessNode (its own server_app.py process) with a key-pool identity."""

    def __init__(self, directory: Path, key: int | Path, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None) -> None:
        key_dir = keypool.key_dir(key) if isinstance(key, int) else key
        identity = keypool.load(key_dir)
        self.index = key if isinstance(key, int) else -1
        self.node_id = identity.node_id
        self.config_path = write_node_config(directory, key_dir.name, key_dir, identity,
                                             bootstrap, overrides)
        self.data_dir = directory / key_dir.name
        self.proc = None
        self.runtime = {}
