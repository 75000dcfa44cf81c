"""The node's established links, one per peer ID: who keeps which link when two meet, and
who makes room at the link caps; and the dials in flight, shared by the callers who wait
for the same one.

Only an established (authenticated) newcomer may push out an idle link at a cap. At the node's
cap the one it pushes out comes from the source prefix holding the most links, so a crowd of
identities from one place displaces its own links first. Inbound links are also capped per
source prefix (/24, /64): a newcomer from a full prefix can only replace an idle link of that
prefix. Links we dialed do not count against a prefix: we chose those peers.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from .admission import prefix_of
from .ids import short_id
from .link import Link
from .wire_fields import ErrorCode

log = logging.getLogger("fluxchat.peer")
E = ErrorCode
LinkCallback = Callable[[Link], None]
DialKey = tuple[str, int, bytes | None]   # host, port, expected ID


class DialsInFlight:
    """One dial per (host, port, expected ID) at a time; callers of the same one share its
    outcome. Once settled a dial is not shared any more: later callers go through the
    registry (or dial afresh), never through an old address match."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, None]], object]) -> None:
        self._spawn = spawn
        self._dials: dict[DialKey, asyncio.Future[Link]] = {}

    def join(self, key: DialKey,
             start: Callable[[asyncio.Future[Link]], Coroutine[Any, Any, None]]
             ) -> asyncio.Future[Link]:
        """The dial for `key`; `start(future)` runs it (settling `future`) if none runs."""
        future = self._dials.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # Every waiter may be gone (cancelled lookups); the outcome is still consumed.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            future.add_done_callback(lambda done: self._forget(key, done))
            self._dials[key] = future
            self._spawn(start(future))
        return future

    def _forget(self, key: DialKey, done: asyncio.Future[Link]) -> None:
        if self._dials.get(key) is done:
            del self._dials[key]


class LinkRegistry:
    def __init__(self, own_id: bytes, max_links: int, per_prefix: int, on_link: LinkCallback,
                 on_unlink: LinkCallback) -> None:
        self.own_id, self.max_links, self.per_prefix = own_id, max_links, per_prefix
        self._on_link, self._on_unlink = on_link, on_unlink
        self.links: dict[bytes, Link] = {}
        # Links that must stay open (relay.py: links carrying a relay reservation, at either
        # end): never closed to make room, whether idle or not.
        self.keep: Callable[[bytes], bool] = lambda peer_id: False

    def register(self, link: Link) -> Link:
        """Make `link` the link to its peer, or close it; returns the link to use."""
        existing = self.links.get(link.peer_id)
        if existing is not None and not existing.closed:
            # Both ends keep the link dialed by the smaller ID, so a simultaneous dial
            # in both directions ends with the same single link on both sides. A second
            # link from the same dialer replaces the first: a dialer does not dial a peer it
            # has a link to (see PeerNet._dial_link), so the old connection must have died
            # on its side, perhaps without our knowing.
            if self._dialer_of(existing) < self._dialer_of(link):
                link.close(E.DUPLICATE, "a link between us already exists")
                return existing
            existing.close(E.DUPLICATE, "replaced by a newer link")
        elif link.direction == "in" and not self._prefix_room(prefix_of(link.address[0])):
            link.close(E.BUSY, "too many links from your network")
            return link
        elif len(self.links) >= self.max_links and not self._evict_idle_link():
            link.close(E.BUSY, "link cap reached")
            return link
        self.links[link.peer_id] = link
        log.info("link %s up (%s, %s:%d)", short_id(link.peer_id), link.direction, *link.address)
        # Outside the link loop: a failing callback is our bug, not the peer's, and must
        # not leave a registered link whose loop has died.
        asyncio.get_running_loop().call_soon(self._announce, link)
        return link

    def room_for(self, peer_id: bytes, host: str) -> str | None:
        """Whether a dialer at `host` that proved `peer_id` can have a link (see register)."""
        if peer_id in self.links:
            return None
        prefix = prefix_of(host)
        if len(self._inbound_from(prefix)) >= self.per_prefix and not any(
                self._evictable(link) for link in self._inbound_from(prefix)):
            return "too many links from your network and every one is busy"
        if len(self.links) < self.max_links:
            return None
        if any(self._evictable(link) for link in self.links.values()):
            return None
        return "link cap reached and every link is busy"

    def forget(self, link: Link) -> None:
        if self.links.get(link.peer_id) is link:
            del self.links[link.peer_id]
            self._on_unlink(link)

    def _announce(self, link: Link) -> None:
        if link.closed or self.links.get(link.peer_id) is not link:
            return
        try:
            self._on_link(link)
        except Exception:
            log.exception("setting up the link to %s failed", short_id(link.peer_id))

    def _evict_idle_link(self) -> bool:
        """At the link cap, make room for an authenticated newcomer: close the idle link
        (no request in flight) unused the longest, from the source prefix that holds the
        most links. False if every link is busy."""
        per_prefix = collections.Counter(prefix_of(link.address[0])
                                         for link in self.links.values())
        idle = [link for link in self.links.values() if self._evictable(link)]
        if not idle:
            return False
        victim = min(idle, key=lambda link: (-per_prefix[prefix_of(link.address[0])],
                                             link.idle_since() or 0.0))
        log.info("link cap reached: closing the idle link to %s", short_id(victim.peer_id))
        victim.close(E.SHUTDOWN, "making room for another link")
        self.forget(victim)
        return True

    def _inbound_from(self, prefix: str) -> list[Link]:
        return [link for link in self.links.values()
                if link.direction == "in" and prefix_of(link.address[0]) == prefix]

    def _prefix_room(self, prefix: str) -> bool:
        """Room for one more inbound link from `prefix`, closing its idle link unused the
        longest if it is full. False if it is full and all its links are busy."""
        inbound = self._inbound_from(prefix)
        if len(inbound) < self.per_prefix:
            return True
        idle = [link for link in inbound if self._evictable(link)]
        if not idle:
            return False
        victim = min(idle, key=lambda link: link.idle_since() or 0.0)
        log.info("links from %s at their cap: closing the idle link to %s", prefix,
                 short_id(victim.peer_id))
        victim.close(E.SHUTDOWN, "making room for another link from your network")
        self.forget(victim)
        return True

    def release_dialed(self) -> int:
        """Close the links we dialed that nothing uses now (no request in flight either
        way) and nobody keeps (relays): what a burst of one-shot requests (the join's
        publications and first fetch) leaves behind would otherwise idle until
        `client.idle_timeout`. The number closed."""
        done = [link for link in self.links.values()
                if link.direction == "out" and self._evictable(link)]
        for link in done:
            link.close(E.SHUTDOWN, "done")
            self.forget(link)
        return len(done)

    def _evictable(self, link: Link) -> bool:
        return link.idle_since() is not None and not self.keep(link.peer_id)

    def _dialer_of(self, link: Link) -> bytes:
        return self.own_id if link.direction == "out" else link.peer_id
