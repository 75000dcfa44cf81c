"""The NAT lab itself: homes reach out, nothing reaches in; real nodes run inside it.

Needs root, `ip netns` and `nft` (CI has them); elsewhere every test here skips and says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.natlab import BRIDGE_MAC, INTERNET_PUBLIC, Lab, LabNode, start_world

REASON = Lab.unavailable()

ECHO_SERVER = ("import socket\ns = socket.create_server(('0.0.0.0', 7000))\nwhile True:\n"
               "    c, a = s.accept(); c.sendall(repr(a).encode()); c.close()\n")


def dial(host: str, timeout: float) -> str:
    return ("import socket\n"
            f"c = socket.create_connection(('{host}', 7000), {timeout})\n"
            "print(c.recv(100).decode())\n")


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


@unittest.skipIf(REASON is not None, REASON or "")
class LabTestCase(unittest.TestCase):
    def setUp(self) -> None:
        self.lab = Lab()
        self.addCleanup(self.lab.close)
        keep = os.environ.get("FLUXCHAT_LAB_KEEP")   # a directory: node logs stay there
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=f"{self.id().rsplit('.', 1)[-1]}-", dir=keep))
            return
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = Path(tmp.name)


class NatLabTest(LabTestCase):
    def test_homes_reach_out_but_nothing_reaches_in(self) -> None:
        public = self.lab.public_host()
        cone, symmetric = self.lab.home("cone"), self.lab.home("symmetric")
        public.popen([sys.executable, "-c", ECHO_SERVER])
        for home in (cone, symmetric):
            seen = wait_for(lambda h=home: h.host.run(  # type: ignore[misc]
                [sys.executable, "-c", dial(public.address, 2)]).stdout, 5, "outbound dial")
            # The public side sees the gateway's address, never the home's own.
            self.assertIn(f"'{home.wan_address}'", seen)
        cone.host.popen([sys.executable, "-c", ECHO_SERVER])
        time.sleep(0.3)
        inbound = public.run([sys.executable, "-c", dial(cone.wan_address, 1)])
        self.assertNotEqual(inbound.returncode, 0)
        self.assertIn("timed out", inbound.stderr)   # dropped silently, not refused

    def test_every_namespace_is_gone_after_close(self) -> None:
        lab = Lab()
        lab.home("cone").host.popen(["sleep", "60"])
        names = list(lab.namespaces)
        lab.close()
        listed = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout
        for name in names:
            self.assertNotIn(name, listed)

    def test_a_new_lab_sweeps_what_a_killed_run_left(self) -> None:
        gone = subprocess.Popen(["true"])
        gone.wait()   # a pid that no longer runs: the "killed earlier run"
        stale, live = f"fc{gone.pid}x0net", f"fc{os.getpid()}x999net"
        for name in (stale, live):
            subprocess.run(["ip", "netns", "add", name], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", live], check=False, capture_output=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", stale], check=False, capture_output=True)
        left = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"])
        self.addCleanup(left.wait)
        wait_for(lambda: subprocess.run(["ip", "netns", "pids", stale], check=False,
                                        capture_output=True, text=True).stdout, 5, "sleeper")
        Lab().close()
        listed = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True,
                                text=True).stdout.split()
        self.assertNotIn(stale, listed)
        self.assertIn(live, listed)   # a lab of a live process is not ours to touch
        self.assertEqual(left.wait(5), -9)

    def test_plugging_in_a_host_keeps_the_internet_bridge_address(self) -> None:
        # A bridge takes the lowest address of its ports unless it has its own: a new home
        # could then change it, and every host that cached the old one lost its packets
        # until its ARP entry was renewed (a home's first links stalled for 10 s or more).
        def bridge_address() -> str:
            return subprocess.run(["ip", "-n", self.lab.internet, "-j", "link", "show", "br0"],
                                  check=True, capture_output=True, text=True).stdout
        self.lab.public_host()
        for kind in ("cone", "symmetric", "cone"):
            self.lab.home(kind)
            self.assertIn(f'"address":"{BRIDGE_MAC}"', bridge_address())

    def test_symmetric_gateway_changes_the_outside_port(self) -> None:
        public = self.lab.public_host()
        home = self.lab.home("symmetric")
        public.popen([sys.executable, "-c", ECHO_SERVER])
        script = ("import socket\nfor _ in range(2):\n"
                  "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                  "    s.bind(('0.0.0.0', 40000)); s.settimeout(2)\n"
                  f"    s.connect(('{public.address}', 7000)); print(s.recv(100).decode()); s.close()\n")
        wait_for(lambda: home.host.run([sys.executable, "-c", dial(public.address, 2)]).stdout,
                 5, "public echo server")
        lines = home.host.run([sys.executable, "-c", script]).stdout.split()
        self.assertTrue(all("40000" not in line for line in lines), lines)


class NodesInLabTest(LabTestCase):
    def test_home_nodes_join_through_their_gateways(self) -> None:
        public = LabNode(self.lab.public_host(), self.dir, 0, [])
        public.start()
        self.addCleanup(public.stop)
        homes = []
        for index in (1, 2):
            node = LabNode(self.lab.home().host, self.dir, index, [public.address])
            node.start()
            self.addCleanup(node.stop)
            homes.append(node)
        for node in homes:
            wait_for(lambda n=node: any(link["id"] == public.id_text  # type: ignore[misc]
                                        for link in n.cli("peers")["links"]), 20, "join")
        self.assertTrue(public.address.startswith(INTERNET_PUBLIC))


if __name__ == "__main__":
    unittest.main()


class ReachabilityInLabTest(LabTestCase):
    def test_home_learns_it_is_unreachable_and_is_kept_out_of_routing_tables(self) -> None:
        publics = []
        for index in (0, 1):
            node = LabNode(self.lab.public_host(), self.dir, index,
                           [publics[0].address] if publics else [])
            node.start()
            self.addCleanup(node.stop)
            publics.append(node)
        gateway = self.lab.home()
        home = LabNode(gateway.host, self.dir, 2, [p.address for p in publics])
        home.start()
        self.addCleanup(home.stop)
        verdict = wait_for(lambda: (home.cli("info")["reachability"]
                                    if home.cli("info")["reachability"]["status"] != "unknown"
                                    else None), 40, "home reachability verdict")
        self.assertEqual(verdict["status"], "unreachable")
        self.assertEqual(verdict["address"], f"{gateway.wan_address}:25001")
        self.assertEqual(verdict["contact"], "private")
        for node in publics:
            seen = wait_for(lambda n=node: n.cli("info")["reachability"]  # type: ignore[misc]
                            if n.cli("info")["reachability"]["status"] != "unknown" else None,
                            40, "public reachability verdict")
            self.assertEqual(seen["status"], "reachable")
        # The home linked to both publics, yet neither keeps its contact.
        for node in publics:
            links = node.cli("peers")["links"]
            self.assertIn(home.id_text, [link["id"] for link in links])
            table = node.cli("peers")
            self.assertEqual(table["routing_table_size"], 1, table)


def settled(node: LabNode, relays: int = 0) -> dict[str, Any] | None:
    """The node's reachability once known (and, for a home, once it has `relays` relays)."""
    reach = node.cli("info")["reachability"]
    if reach["status"] == "unknown" or len(reach["relays"]) < relays:
        return None
    return dict(reach)


class RelayInLabTest(LabTestCase):
    def test_mail_between_two_homes_goes_through_relays(self) -> None:
        publics, homes = start_world(self.lab, self.dir, 2, ["cone", "symmetric"])
        for node in publics + homes:
            self.addCleanup(node.stop)
        for home in homes:
            reach = wait_for(lambda h=home: settled(h, 1), 90, "home relays")  # type: ignore[misc]
            self.assertEqual(reach["status"], "unreachable")
            self.assertIn(len(reach["relays"]), (1, 2))   # of the two reachable nodes
        for node in publics:
            self.assertEqual(wait_for(lambda n=node: settled(n), 40, "public")["status"],  # type: ignore[misc]
                             "reachable")
        first, second = homes
        sender, receiver = first.bridge(), second.bridge()
        receiver.send("_wait_inbox", {"subject": "through the relays", "timeout": 30})
        sent = sender.call("mail", {"to": second.id_text, "subject": "through the relays",
                                    "body": "hello from home"})
        self.assertIsNotNone(receiver.receive()["seen_at"])
        def delivered() -> dict[str, Any] | None:
            status: dict[str, Any] = sender.call("status", {"uuid": sent["uuid"]})
            return status if status["state"] == "delivered" else None

        status = wait_for(delivered, 30, "receipt")
        details = " ".join(h["detail"] or "" for h in status["history"])
        self.assertIn("through relay", details)

    def test_relay_links_outlive_the_idle_timeout(self) -> None:
        publics, homes = start_world(self.lab, self.dir, 1, ["cone"],
                                     {"client": {"idle_timeout": 6}})
        public, home = publics[0], homes[0]
        wait_for(lambda: settled(home, 1), 90, "home relay")
        time.sleep(9)   # half again the idle timeout: an unused link would be gone
        links = [link["id"] for link in home.cli("peers")["links"]]
        self.assertIn(public.id_text, links)
        self.assertEqual(len(home.cli("info")["reachability"]["relays"]), 1)
        receiver = home.bridge()
        receiver.send("_wait_inbox", {"subject": "after idling", "timeout": 30})
        public.bridge().call("mail", {"to": home.id_text, "subject": "after idling",
                                      "body": "still there"})
        self.assertIsNotNone(receiver.receive()["seen_at"])


class PunchInLabTest(LabTestCase):
    def direct_after_relayed_mail(self, kinds: list[str]) -> tuple[bool, dict[str, Any]]:
        _, homes = start_world(self.lab, self.dir, 2, kinds)   # publics check each other
        for home in homes:
            wait_for(lambda h=home: settled(h, 1), 90, "home relay")  # type: ignore[misc]
        first, second = homes
        receiver = second.bridge()
        receiver.send("_wait_inbox", {"subject": "knock knock", "timeout": 30})
        first.bridge().call("mail", {"to": second.id_text, "subject": "knock knock",
                                     "body": "who is there"})
        self.assertIsNotNone(receiver.receive()["seen_at"])
        wait_for(lambda: first.cli("info")["reachability"]["punch"]["attempts"], 30,
                 "a punch attempt")
        time.sleep(4)   # the attempt's window (3 s) and the TLS handshake
        punch = first.cli("info")["reachability"]["punch"]
        linked = second.id_text in [link["id"] for link in first.cli("peers")["links"]]
        return linked, punch

    def test_two_cone_nats_get_a_direct_link(self) -> None:
        linked, punch = self.direct_after_relayed_mail(["cone", "cone"])
        self.assertTrue(linked)
        self.assertEqual(punch["direct"], 1)

    def test_a_symmetric_nat_defeats_it_and_mail_still_flows(self) -> None:
        linked, punch = self.direct_after_relayed_mail(["cone", "symmetric"])
        self.assertFalse(linked)
        self.assertEqual((punch["attempts"], punch["direct"]), (1, 0))
