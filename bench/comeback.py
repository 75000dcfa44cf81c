#!/usr/bin/env python3
"""Mail to a friend who is not online: how long after they come online it is delivered.

Two cases, each on two fresh in-process nodes on 127.0.0.1 (RSA-2048 test identities):
- new friend: B has never run, so A finds no key and the mail waits (`waiting_for_key`,
  retried with backoff); then B starts and bootstraps from A;
- friend back: A and B were linked, B stopped, A's mail found no path and backs off; then B
  starts again.
Measured: seconds from B's start to A's outbox showing `delivered` (the signed
receipt verified), after A's backoff has grown to `--wait` seconds. Before retries were tied to
links and keys, A waited out its backoff (up to 10 minutes; 47 s were seen with two nodes).

Usage: python3 bench/comeback.py [--quick] [--runs N] [--wait S]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from fluxchat.node import Node  # noqa: E402
from tests.keys import identity  # noqa: E402
from tests.lab import LabNode, eventually  # noqa: E402


def state(node: Node, uuid: bytes) -> str:
    assert node.store is not None
    mail = node.store.get_outbox(uuid)
    return mail.state if mail else "missing"


async def one(kind: str, wait: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        a_lab = LabNode(Path(tmp), 0, [])
        a = await a_lab.start()
        b_lab = LabNode(Path(tmp), 1, [a_lab.address])
        try:
            if kind == "friend back":
                await b_lab.start()
                await b_lab.stop()
            sent = a.mailer.submit(identity(1).node_id, "hello", "are you there?")
            store = a.store
            assert store is not None
            await eventually(lambda: (store.get_outbox(sent.uuid) or sent).attempts > 0, timeout=60)
            await asyncio.sleep(wait)   # let A's backoff grow as it would over a day
            backoff = (store.get_outbox(sent.uuid) or sent).next_attempt_at - time.time()
            started = time.monotonic()
            await b_lab.start()
            joined = time.monotonic() - started
            await eventually(lambda: state(a, sent.uuid) == "delivered", timeout=120, interval=0.01)
            took = time.monotonic() - started
            print(f"  {kind}: delivered {took:.2f} s after B started (B joined in {joined:.2f} s; "
                  f"A's next retry was {backoff:.0f} s away)", flush=True)
            return took
        finally:
            await b_lab.stop()
            await a_lab.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run of each, shorter waits")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--wait", type=float, default=20.0, help="seconds A backs off before B comes")
    args = parser.parse_args()
    runs, wait = (1, 5.0) if args.quick else (args.runs, args.wait)
    print(f"comeback: {runs} run(s) per case, A backing off {wait:g} s before B starts")
    for kind in ("new friend", "friend back"):
        times = [await one(kind, wait) for _ in range(runs)]
        print(f"{kind}: delivered in median {statistics.median(times):.2f} s, max {max(times):.2f} s "
              f"after B came online (n={runs})")


if __name__ == "__main__":
    asyncio.run(main())
