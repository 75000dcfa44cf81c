"""Many identities, junk mail (a scenario of bench/attack.py).

Twelve test identities the victim has not seen, three on each attacker address, each on its
own authenticated link, send envelopes sealed to the victim that parse but do not open: per
round one `DeliverMany` of 16 and 16 single `Deliver`s, all in flight at once, round after
round. Each envelope the victim tries to open costs it an RSA private-key operation, so what
bounds the crowd is the node-wide key budget (fairshare.py), however many identities it
brings; each identity also meets its own budget. The summary shows both bounds beside what
the victim did, the victim's CPU per junk envelope, and the honest mail latency beside the
quiet figure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.attack_kit import Target, junk_envelopes, linked, scenario
from fluxchat import messages as m
from fluxchat.mail_limits import (
    NODE_PRIVATE_OPS_BURST,
    NODE_PRIVATE_OPS_RATE,
    PRIVATE_OPS_BURST,
    PRIVATE_OPS_RATE,
)
from tests.adversary import Attacker, junk_outcomes

CROWD_KEYS = range(12, 24)   # test identities no other scenario or honest peer uses but 20-23
BURST = 16                   # envelopes per DeliverMany
SINGLES = 16                 # single Delivers alongside it (below the link's in-flight limit)


def summary(row: dict[str, Any], quiet: dict[str, Any], seconds: float) -> list[str]:
    """The bounds and costs of one run, from the attacker's counts and the victim's CPU."""
    did = row["attacker"]
    sent, opened = did.get("sent", 0), did.get("opened", 0)
    period = seconds + 1   # the attacker may run a second past the period
    node_bound = NODE_PRIVATE_OPS_BURST + NODE_PRIVATE_OPS_RATE * period
    peer_bound = PRIVATE_OPS_BURST + PRIVATE_OPS_RATE * period
    most = max((n for what, n in did.items() if what.startswith("opened by ")), default=0)
    extra_cpu = max(0.0, row["cpu"] - quiet["cpu"]) * seconds   # CPU seconds the attack cost
    if not sent:
        return ["the crowd sent nothing within the period (its process starved?): no figures"]
    lines = [
        f"{len(CROWD_KEYS)} identities sent {sent} junk envelopes; the victim opened {opened}: "
        f"node budget {node_bound:.0f} in {period:g} s "
        f"{'held' if opened <= node_bound else 'EXCEEDED'}; the most from one identity {most}: "
        f"its own budget {peer_bound:.0f} {'held' if most <= peer_bound else 'EXCEEDED'}",
        f"refused: {did.get('node', 0)} by the node's budget, {did.get('peer', 0)} by the "
        f"sender's own, {did.get('burst', 0)} in DeliverMany answers (either); "
        f"other answers {did.get('other', 0)}",
        # Most envelopes are refused: this is mostly the price of a refusal.
        f"victim CPU per junk envelope {1e6 * extra_cpu / sent:.0f} µs "
        f"({extra_cpu:.1f} s over quiet for {sent} envelopes, {opened} opened)",
    ]
    if row["mail_median_ms"] is not None and quiet["mail_median_ms"] is not None:
        lines.append(f"honest mail median {row['mail_median_ms']:.1f} ms during the attack, "
                     f"{quiet['mail_median_ms']:.1f} ms quiet")
    return lines


@scenario("junk_crowd", "12 fresh identities on 4 addresses, junk in Deliver and DeliverMany "
          "(node-wide key budget)", summary)
async def junk_crowd(target: Target) -> None:
    # One set of junk for all: the victim fails to decrypt it before it could read the
    # sender inside, so whoever sends it costs the same (and the attacker seals 12x less).
    junk = junk_envelopes(CROWD_KEYS[0], BURST + SINGLES)

    async def member(index: int, key: int) -> None:
        source = target.sources[index % len(target.sources)]
        while target.running():
            attacker = await linked(target, source, key)
            if attacker is None:
                target.count("refused links")
                await asyncio.sleep(0.2)
                continue
            target.count("links")
            try:
                while target.running():
                    await _round(attacker, junk, key, target)
            except (OSError, ConnectionError, TimeoutError):
                pass
            attacker.close()

    await asyncio.gather(*(member(i, key) for i, key in enumerate(CROWD_KEYS)))


async def _round(attacker: Attacker, junk: list[bytes], key: int, target: Target) -> None:
    rids = [attacker.request(lambda rid: m.DeliverMany(rid, tuple(junk[:BURST])))]
    rids += [attacker.request(lambda rid, e=e: m.Deliver(rid, e)) for e in junk[BURST:]]
    for rid in rids:
        for word in junk_outcomes(await asyncio.wait_for(attacker.response(rid), 10)):
            target.count(word)
            if word == "opened":
                target.count(f"opened by {key}")
    target.count("sent", len(junk))
