"""Mail uuids: 16 random bytes (RFC 9562 version 4), shown as 8-4-4-4-12 hex digits.

What the node needs of the `uuid` module, which would bring `platform` and the C `_uuid` module
with libuuid into every node process (0.25 MiB RSS, bench/rss.py) for two lines. The text is
exactly `str(uuid.UUID(bytes=raw))` (tests/test_uuids.py compares them).
"""

from __future__ import annotations

import os


def new_uuid() -> bytes:
    """A random uuid: version 4 and the RFC variant in their bits, as `uuid.uuid4().bytes`."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return bytes(raw)


def uuid_text(raw: bytes) -> str:
    """`raw` (16 bytes) as 8-4-4-4-12 lowercase hex digits."""
    if len(raw) != 16:
        raise ValueError(f"a uuid is 16 bytes, not {len(raw)}")
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
