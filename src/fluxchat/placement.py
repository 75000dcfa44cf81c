"""Where a stored mail goes (pure): the replica set for a recipient out of a lookup result.

Kept apart from the mailer so the simulator under `bench/` places mail exactly as nodes do.
"""

from __future__ import annotations

from .routing import Peer


def replica_targets(closest: list[Peer], skip: set[bytes], replicas: int) -> list[Peer]:
    """The first `replicas` peers of `closest` (closest first) that are not in `skip`
    (the storing node itself and the recipient, who fetches rather than holds)."""
    return [p for p in closest if p.node_id not in skip][:replicas]
