"""LAN discovery: the announcement format, and two nodes finding each other on loopback."""

from __future__ import annotations

import socket
import unittest

from hypothesis import given, settings
from hypothesis import strategies as st

from fluxchat.discovery import SIZE, decode_announcement, encode_announcement
from tests.keys import identity
from tests.lab import NodeTestCase, eventually


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AnnouncementTest(unittest.TestCase):
    def test_round_trip_and_golden_bytes(self) -> None:
        data = encode_announcement(bytes(range(32)), 25001)
        self.assertEqual(len(data), SIZE)
        self.assertEqual(data.hex(), "46584344" + "01" + bytes(range(32)).hex() + "61a9")
        decoded = decode_announcement(data)
        assert decoded is not None
        self.assertEqual((decoded.node_id, decoded.port), (bytes(range(32)), 25001))

    def test_rejects_other_datagrams(self) -> None:
        good = encode_announcement(bytes(32), 1)
        for bad in (b"", good[:-1], good + b"x", b"XXXX" + good[4:], good[:4] + b"\x02" + good[5:],
                    good[:-2] + b"\0\0"):
            self.assertIsNone(decode_announcement(bad))

    @settings(max_examples=300)
    @given(st.binary(max_size=64))
    def test_arbitrary_datagrams_never_raise(self, data: bytes) -> None:
        decode_announcement(data)


class LanDiscoveryTest(NodeTestCase):
    async def test_two_nodes_find_each_other_without_bootstrap(self) -> None:
        port = free_udp_port()
        settings_ = {"discovery": {"enabled": True, "port": port, "interval": 0.2,
                                   "broadcast": "127.255.255.255"}}
        a = (await self.start(0, [], **settings_)).node
        b = (await self.start(1, [], **settings_)).node
        assert a is not None and b is not None
        await eventually(lambda: identity(1).node_id in a.net.links
                         and identity(0).node_id in b.net.links)

    async def test_forged_announcement_costs_one_failed_dial(self) -> None:
        port = free_udp_port()
        lab = await self.start(2, [], discovery={"enabled": True, "port": port,
                                                 "interval": 60, "broadcast": "127.255.255.255"})
        other = (await self.start(3, [])).node
        assert lab.node is not None and other is not None
        # Claims node 4's ID at node 3's port: the pinned dial must fail.
        forged = encode_announcement(identity(4).node_id, other.port)
        with self.assertLogs("fluxchat.node", "INFO") as logs:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.sendto(forged, ("127.255.255.255", port))
            await eventually(lambda: any("did not prove its ID" in line for line in logs.output))
        self.assertEqual(len(lab.node.net.links), 0)
        self.assertEqual(len(other.net.links), 0)


if __name__ == "__main__":
    unittest.main()
