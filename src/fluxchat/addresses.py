"""Which peer addresses may enter the routing table or be dialed from a lookup (pure).

Routing data is never taken on anyone's word: an address comes from what we observed (the
address we dialed, the source address of an inbound link) or from the node's own contact,
read against what we observed. Hosts are IP literals only: a name would bypass the
per-subnet limits and send our dials wherever its owner points it, so names are resolved
once, where the user wrote them (bootstrap), and never taken from peers.

A host in a `Nodes` reply must be at least as public as the node that reported it: a node
we reach at a global address may not point us at loopback or private addresses.
"""

from __future__ import annotations

import functools
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK, LOCAL, GLOBAL = 0, 1, 2


def ip_of(host: str) -> IPAddress | None:
    """The IP address a host string names, if it is a usable unicast literal."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return address
    # reserved covers 240.0.0.0/4, broadcast included
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return None
    return address


def scope(address: IPAddress) -> int:
    """LOOPBACK < LOCAL (private, link-local, documentation ranges) < GLOBAL."""
    if address.is_loopback:
        return LOOPBACK
    return GLOBAL if address.is_global else LOCAL


def routable(host: str) -> bool:
    return ip_of(host) is not None


def reported_ok(host: str, reporter_host: str) -> bool:
    """Whether a host named by the node at `reporter_host` may be used."""
    address, reporter = ip_of(host), ip_of(reporter_host)
    if address is None or reporter is None:
        return False
    return scope(address) >= scope(reporter)


# Asked for every mail to a linked peer (Overlay.find_contact), with the same arguments for
# as long as the link lasts: parsing its address again each time cost about 12 µs of the way
# from a sealed mail to its frame on the socket. Pure, so the answers are kept (a bounded
# number of them).
@functools.lru_cache(maxsize=1024)
def observed_address(direction: str, contact: str, link_address: tuple[str, int]
                     ) -> tuple[str, int] | None:
    """Where others may dial a linked peer, from what we saw of it; None when we cannot tell.

    Outbound: the address we dialed (and reached). Inbound: the source address we see, with
    the port the peer's contact names (`public:PORT`, or `HOST:PORT` only when HOST is the
    address it came from); `private` or a contact elsewhere is not dialable on its word."""
    host, port = link_address
    if contact == "private" or ip_of(host) is None:
        return None
    if direction == "out":
        return host, port
    named, sep, port_text = contact.rpartition(":")
    if not sep or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        return None
    named = named.removeprefix("[").removesuffix("]")
    if named != "public" and ip_of(named) != ip_of(host):
        return None
    return host, int(port_text)
