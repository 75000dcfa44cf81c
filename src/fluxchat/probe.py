"""A contact probe: does host:port answer TLS with the certificate of the node we expect?

The TLS 1.3 handshake proves the acceptor holds the private key of the certificate, and the
certificate key must hash to the expected ID, so a success cannot be faked by a third party.
No link is made (no proof of work, no RSA signature): the connection closes right after.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

from .errors import IdentityError
from .ids import id_from_spki
from .tls import client_context, peer_certificate_key

_CONTEXT = client_context()


async def probe(host: str, port: int, expected_id: bytes, timeout: float) -> bool:
    """True when host:port completed TLS as expected_id within timeout seconds."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=_CONTEXT, server_hostname=None if _is_ip(host) else host,
                ssl_handshake_timeout=timeout)
        return id_from_spki(peer_certificate_key(writer.get_extra_info("ssl_object"))) \
            == expected_id
    except (OSError, ssl.SSLError, TimeoutError, IdentityError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
