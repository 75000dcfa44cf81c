"""A contact probe: does host:port answer TLS with the certificate of the node we expect?

The TLS 1.3 handshake proves the acceptor holds the private key of the certificate, and the
certificate key must be the link key its identity certified (a link key record of the
expected ID), so a success cannot be faked by a third party. No link is made (no proof of
work): the connection closes right after.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import time

from .errors import IdentityError
from .linkkeys import RecordCheck
from .tls import client_context, verified_peer_id

_CONTEXT = client_context()
_RECORDS = RecordCheck(256)


async def probe(host: str, port: int, expected_id: bytes, timeout: float) -> bool:
    """True when host:port completed TLS as expected_id within timeout seconds."""
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=_CONTEXT, server_hostname=None if _is_ip(host) else host,
                ssl_handshake_timeout=timeout)
        return verified_peer_id(writer.get_extra_info("ssl_object"), _RECORDS,
                                int(time.time())) == expected_id
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
