"""Where a stored mail goes (pure): the replica set for a recipient out of a lookup result,
and which members of that set still need the mail we hold after the set changed.

Kept apart from the mailer so the simulator under `bench/` places and re-replicates mail
exactly as nodes do.
"""

from __future__ import annotations

from .routing import Peer


def replica_targets(closest: list[Peer], skip: set[bytes], replicas: int) -> list[Peer]:
    """The first `replicas` peers of `closest` (closest first) that are not in `skip`
    (the storing node itself and the recipient, who fetches rather than holds)."""
    return [p for p in closest if p.node_id not in skip][:replicas]


class ReplicaSets:
    """For each recipient whose mail we hold: the nodes we believe hold it too.

    Exact re-replication: when a recipient's replica set changes, only the nodes that newly
    entered it are given the mail; the members that stayed already have it. A holder is
    forgotten once it drops out of the recipient's k closest (in our view), so each entry
    stays within k node IDs. Entries live in memory: after a restart the first push goes to
    the whole replica set, as before (a duplicate costs the receiver one indexed lookup).
    """

    def __init__(self) -> None:
        self._holders: dict[bytes, set[bytes]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def known(self, recipient: bytes) -> bool:
        return recipient in self._holders

    def arrived(self, recipient: bytes, storer: bytes, targets: list[Peer]) -> None:
        """Mail for `recipient` was stored with us by `storer`. The first time, the storer
        has just given it to the replica set it found, which is (nearly) `targets` as our
        table sees it; later mail for the same recipient changes nothing we know."""
        if recipient not in self._holders:
            self._holders[recipient] = {storer, *(p.node_id for p in targets)}

    def newcomers(self, recipient: bytes, targets: list[Peer]) -> list[Peer]:
        """The members of the current replica set not known to hold the recipient's mail
        (all of them for a recipient we know nothing about)."""
        holders = self._holders.get(recipient, set())
        return [p for p in targets if p.node_id not in holders]

    def given(self, recipient: bytes, closest: list[Peer], took: list[Peer]) -> None:
        """After a push: `took` now hold the mail; holders that left the k closest are dropped."""
        near = {p.node_id for p in closest}
        holders = self._holders.get(recipient, set()) & near
        self._holders[recipient] = holders | {p.node_id for p in took}

    def keep_only(self, recipients: set[bytes]) -> None:
        """Forget recipients we no longer hold mail for (fetched or expired)."""
        for recipient in [r for r in self._holders if r not in recipients]:
            del self._holders[recipient]
