"""The attack benchmark's kit (bench/attack.py): the target a scenario attacks, the registry
of scenarios, and the pieces several scenarios share. Runs in the attacker's process."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fluxchat.envelope import MailContent, seal
from tests.adversary import Attacker
from tests.keys import identity

ATTACK_SOURCES = ["127.0.2.1", "127.0.3.1", "127.0.4.1", "127.0.5.1"]
ATTACKER_KEYS = (20, 21, 22, 23)        # test identities, one per source address
VICTIM_KEY = 0


@dataclass
class Target:
    host: str
    port: int
    sources: list[str]
    until: float
    counts: dict[str, int] = field(default_factory=dict)   # what the attacker did

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def running(self) -> bool:
        return time.monotonic() < self.until

    async def each_source(self, work: Callable[[str, int], Awaitable[None]]) -> None:
        """Run `work(source, identity index)` for every attacker address at once."""
        await asyncio.gather(*(work(s, k) for s, k in zip(self.sources, ATTACKER_KEYS, strict=False)))


Scenario = Callable[[Target], Awaitable[None]]
SCENARIOS: dict[str, tuple[Scenario, str]] = {}
# Lines printed under the table for a scenario: summary(its row, the quiet row, seconds).
Summary = Callable[[dict[str, Any], dict[str, Any], float], list[str]]
SUMMARIES: dict[str, Summary] = {}


def scenario(name: str, about: str, summary: Summary | None = None
             ) -> Callable[[Scenario], Scenario]:
    def register(function: Scenario) -> Scenario:
        SCENARIOS[name] = (function, about)
        if summary is not None:
            SUMMARIES[name] = summary
        return function
    return register


async def linked(target: Target, source: str, key: int, **options: Any) -> Attacker | None:
    try:
        return await Attacker.connect(target.host, target.port, key, source=source, **options)
    except (OSError, ConnectionError):
        return None


def junk_envelopes(sender: int, count: int) -> list[bytes]:
    """Envelopes sealed to the victim with their GCM tag flipped: each parses, each costs
    the victim an RSA private-key operation to find out that it does not open."""
    victim, me, now = identity(VICTIM_KEY), identity(sender), int(time.time())
    out = []
    for _ in range(count):
        content = MailContent("mail", os.urandom(16), me.node_id, victim.node_id, now, "junk",
                              "x" * 200, b"")
        sealed = seal(content, me, victim.public_der, now + 3600, os.urandom(32), os.urandom(12))
        out.append(sealed[:-1] + bytes([sealed[-1] ^ 1]))
    return out

