"""Contact strings: how a node says it can be reached, and how we turn that into an address.

`public` (dial the address we observe it at, on its listening port), `public:PORT` (the
observed address, that port), `HOST:PORT` (exactly that), `private` (dial-out only: never
handed out to others).

`parse_contact` is the one reading of these strings: the config checks ours with it, and `resolve`
reads a peer's with it.
"""

from __future__ import annotations

import ipaddress

from .records import record

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


@record
class Contact:
    """`host` is None for `public` / `public:PORT` (the address we observe), `port` None for bare `public`."""

    private: bool
    host: str | None = None
    port: int | None = None


def parse_contact(text: str) -> Contact:
    """Read a contact string; ValueError when it is none of the four forms."""
    if text == "private":
        return Contact(private=True)
    if text == "public":
        return Contact(private=False)
    host, sep, port_text = text.rpartition(":")
    port = _valid_port(port_text)
    if not sep or port is None:
        raise ValueError(f"not a contact: {text!r}")
    if host == "public":
        return Contact(private=False, port=port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not valid_host(host):
        raise ValueError(f"not a contact: {text!r}")
    return Contact(private=False, host=host, port=port)


def advertise(contact: str, listen_port: int) -> str:
    """What we send in the handshake: `public` carries our actual listening port."""
    return f"public:{listen_port}" if contact == "public" else contact


def resolve(contact: str, observed_host: str) -> tuple[str, int] | None:
    """The address others may dial for a peer with this contact, or None when unusable."""
    try:
        parsed = parse_contact(contact)
    except ValueError:
        return None
    if parsed.private or parsed.port is None:   # bare `public` is only ever sent with its port
        return None
    host = observed_host if parsed.host is None else parsed.host
    return (host, parsed.port) if valid_host(host) else None
