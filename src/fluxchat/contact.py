"""Contact strings: how a node says it can be reached, and how we turn that into an address.

`public` (dial the address we observe it at, on its listening port), `public:PORT` (the
observed address, that port), `HOST:PORT` (exactly that), `private` (dial-out only: never
handed out to others).
"""

from __future__ import annotations

import ipaddress

MAX_HOST_CHARS = 253


def _valid_port(text: str) -> int | None:
    if not text.isdigit() or len(text) > 5:
        return None
    port = int(text)
    return port if 1 <= port <= 65535 else None


def valid_host(host: str) -> bool:
    """An IP literal or a plausible DNS name; never empty, never with spaces or controls."""
    if not host or len(host) > MAX_HOST_CHARS:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        labels = host.rstrip(".").split(".")
        return all(label and len(label) <= 63 and label.replace("-", "").isalnum()
                   and label.isascii() for label in labels)
    return not (address.is_unspecified or address.is_multicast)


def advertise(contact: str, listen_port: int) -> str:
    """What we send in the handshake: `public` carries our actual listening port."""
    return f"public:{listen_port}" if contact == "public" else contact


def resolve(contact: str, observed_host: str) -> tuple[str, int] | None:
    """The address others may dial for a peer with this contact, or None when unusable."""
    if contact == "private" or not contact:
        return None
    host, sep, port_text = contact.rpartition(":")
    port = _valid_port(port_text)
    if not sep or port is None:
        return None
    if host == "public":
        host = observed_host
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return (host, port) if valid_host(host) else None
