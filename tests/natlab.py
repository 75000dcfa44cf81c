"""A NAT lab in network namespaces: an "internet", public hosts, and homes behind gateways.

Topology (documentation addresses only, every namespace name unique to this run):

    public hosts 198.51.100.10+ ─┐                 ┌─ gateway WAN 203.0.113.N ── home LAN 192.0.2.0/24
                                 ├── internet ns ──┤    (nft masquerade + stateful firewall)
                                 │   (bridge, routes 198.51.100.0/24 <-> 203.0.113.0/24)

Gateways drop every unsolicited inbound packet silently (no RST, no ICMP), as home routers
do. Kinds: "cone" keeps the inside source port when it can (a port-restricted cone, the
usual Linux masquerade), "symmetric" picks a random outside port per connection.
Every namespace is deleted (and every process in it killed) by `close()`, also after a
failure; `Lab.unavailable()` says why the lab cannot run here (not root, no tools).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from tests.keys import TEST_PASSWORD, identity, install_identity

INTERNET_PUBLIC = "198.51.100"   # public hosts
INTERNET_WAN = "203.0.113"       # gateways' outside addresses
HOME_LAN = "192.0.2"             # every home's inside network (as real homes share 192.168.1.x)
NAT_KINDS = ("cone", "symmetric")
BRIDGE_MAC = "02:fc:00:00:00:01"   # locally administered
_runs = itertools.count()
_OURS = re.compile(r"fc(\d+)(?:x|probe)")   # every namespace name a lab makes starts so


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _in(ns: str, *args: str, stdin: str | None = None) -> None:
    result = subprocess.run(["ip", "netns", "exec", ns, *args], check=False, input=stdin,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{ns}: {' '.join(args)}: {result.stderr.strip()}")


def _ruleset(kind: str) -> str:
    """The gateway's firewall: masquerade out of wan0; drop anything unsolicited inbound."""
    mapping = "masquerade random" if kind == "symmetric" else "masquerade"
    return f"""
table ip fcnat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; oifname "wan0" {mapping}; }}
}}
table inet fcfilter {{
  chain input {{ type filter hook input priority filter; policy drop;
    ct state established,related accept; iifname {{ "lo", "lan0" }} accept; }}
  chain forward {{ type filter hook forward priority filter; policy drop;
    ct state established,related accept; iifname "lan0" oifname "wan0" accept; }}
}}
"""


@dataclass
class Host:
    """A namespace with one address; processes started here run inside it."""

    ns: str
    address: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *args]

    def popen(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.command(args), **kwargs)  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def run(self, args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(args), check=False, capture_output=True, text=True,
                              timeout=timeout)


@dataclass
class Home:
    kind: str
    gateway_ns: str
    wan_address: str
    host: Host


class Lab:
    """Build with `Lab()`, add hosts, always `close()` (or use it as a context manager)."""

    def __init__(self) -> None:
        self.tag = f"fc{os.getpid()}x{next(_runs)}"
        self.namespaces: list[str] = []
        self.hosts: list[Host] = []
        self.closers: list[Callable[[], None]] = []   # run first by close()
        self._public = itertools.count(10)
        self._wan = itertools.count(1)
        sweep_stale()
        try:
            self.internet = self._namespace("net")
            # A fixed address: a bridge without one takes the lowest address of its ports,
            # so plugging in a new host could change it and strand every neighbour that
            # cached the old one (its packets dropped until its ARP entry is renewed).
            _ip("-n", self.internet, "link", "add", "br0", "address", BRIDGE_MAC, "type",
                "bridge")
            _ip("-n", self.internet, "link", "set", "br0", "up")
            # The internet routes between its two networks: a public host and a gateway
            # are then in different /24s, as they would be out there.
            _ip("-n", self.internet, "addr", "add", f"{INTERNET_PUBLIC}.1/24", "dev", "br0")
            _ip("-n", self.internet, "addr", "add", f"{INTERNET_WAN}.254/24", "dev", "br0")
            _in(self.internet, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def unavailable() -> str | None:
        """Why the lab cannot run on this machine, or None when it can."""
        if os.geteuid() != 0:
            return "the NAT lab needs root (network namespaces and nft)"
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                return f"the NAT lab needs `{tool}` (Debian: iproute2, nftables)"
        probe = f"fc{os.getpid()}probe"
        made = _ip("netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        _ip("netns", "del", probe, check=False)
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _namespace(self, role: str) -> str:
        name = f"{self.tag}{role}"
        _ip("netns", "add", name)
        self.namespaces.append(name)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def _plug(self, ns: str, inside: str) -> None:
        """A veth from namespace `ns` (named `inside` there) to the internet's bridge."""
        outside = f"p{len(self.namespaces)}"
        _ip("-n", self.internet, "link", "add", outside, "type", "veth", "peer", "name", inside,
            "netns", ns)
        _ip("-n", self.internet, "link", "set", outside, "master", "br0", "up")
        _ip("-n", ns, "link", "set", inside, "up")

    def public_host(self) -> Host:
        """A host with a public address: anyone may dial it."""
        address = f"{INTERNET_PUBLIC}.{next(self._public)}"
        ns = self._namespace(f"pub{len(self.hosts)}")
        self._plug(ns, "eth0")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "route", "add", "default", "via", f"{INTERNET_PUBLIC}.1")
        host = Host(ns, address)
        self.hosts.append(host)
        return host

    def home(self, kind: str = "cone") -> Home:
        """A host behind its own NAT gateway that drops unsolicited inbound traffic."""
        if kind not in NAT_KINDS:
            raise ValueError(f"NAT kind {kind!r}: expected one of {NAT_KINDS}")
        index = len(self.hosts)
        wan = f"{INTERNET_WAN}.{next(self._wan)}"
        gateway = self._namespace(f"gw{index}")
        self._plug(gateway, "wan0")
        _ip("-n", gateway, "addr", "add", f"{wan}/24", "dev", "wan0")
        _ip("-n", gateway, "route", "add", "default", "via", f"{INTERNET_WAN}.254")
        inside = self._namespace(f"home{index}")
        _ip("-n", gateway, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", inside)
        _ip("-n", gateway, "addr", "add", f"{HOME_LAN}.1/24", "dev", "lan0")
        _ip("-n", gateway, "link", "set", "lan0", "up")
        _ip("-n", inside, "addr", "add", f"{HOME_LAN}.10/24", "dev", "eth0")
        _ip("-n", inside, "link", "set", "eth0", "up")
        _ip("-n", inside, "route", "add", "default", "via", f"{HOME_LAN}.1")
        _in(gateway, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        _in(gateway, "nft", "-f", "-", stdin=_ruleset(kind))
        host = Host(inside, f"{HOME_LAN}.10")
        self.hosts.append(host)
        return Home(kind, gateway, wan, host)

    def close(self) -> None:
        """Stop every process we started, then delete every namespace (and its veths)."""
        for closer in reversed(self.closers):
            closer()
        self.closers.clear()
        for host in self.hosts:
            for proc in host.procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in host.procs:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                for pipe in (proc.stdin, proc.stdout, proc.stderr):
                    if pipe is not None:
                        pipe.close()
        for ns in reversed(self.namespaces):
            _delete_namespace(ns)
        self.namespaces.clear()


def _delete_namespace(ns: str) -> None:
    """Kill everything still running in `ns` (a child of a child too), then delete it."""
    for pid in _ip("netns", "pids", ns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    deadline = time.monotonic() + 5
    while _ip("netns", "del", ns, check=False).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces (and kill the processes in them) of earlier labs whose process
    is gone: a run killed outright (SIGKILL, a lost terminal) could not clean up after itself.
    Labs of live processes (other test runs on this machine) are left alone. Returns the
    names deleted."""
    listed = _ip("netns", "list", check=False).stdout.split("\n")
    stale = [line.split()[0] for line in listed if line.strip()
             and (found := _OURS.match(line.split()[0])) and not _alive(int(found.group(1)))]
    for ns in stale:
        _delete_namespace(ns)
    return stale


# ----- FluxChat nodes in the lab --------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
PEER_PORT, IPC_PORT = 25001, 26001   # the README's defaults: every namespace has its own ports


class LabNode:
    """A real `server_app.py` in a lab host, configured with the README's defaults
    (listen on 0.0.0.0:25001, contact `public`) plus `overrides`."""

    def __init__(self, host: Host, directory: Path, index: int, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None) -> None:
        self.host, self.index = host, index
        self.data_dir = directory / f"node{index:02d}"
        install_identity(index, self.data_dir)
        settings: dict[str, Any] = {
            "id": identity(index).id_text, "address": "0.0.0.0", "port": PEER_PORT,
            "contact": "public", "data_dir": str(self.data_dir), "bootstrap": bootstrap,
            "ipc": {"port": IPC_PORT}, "log": {"level": os.environ.get("FLUXCHAT_LAB_LOG", "info"), "file": None}}
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(settings.get(key), dict):
                settings[key] = {**settings[key], **value}
            else:
                settings[key] = value
        self.config_path = directory / f"config{index:02d}.json"
        self.config_path.write_text(json.dumps(settings, indent=1))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def node_id(self) -> bytes:
        return identity(self.index).node_id

    @property
    def id_text(self) -> str:
        return identity(self.index).id_text

    @property
    def address(self) -> str:
        return f"{self.host.address}:{PEER_PORT}"

    def start(self, timeout: float = 20.0) -> None:
        runtime = self.data_dir / "runtime.json"
        runtime.unlink(missing_ok=True)
        env = dict(os.environ, FLUXCHAT_KEY_PASSWORD=TEST_PASSWORD, PYTHONPATH=str(ROOT / "src"))
        self.log = open(self.data_dir / "stderr.log", "ab")  # noqa: SIM115 (lives with the process)
        self.proc = self.host.popen([sys.executable, str(ROOT / "src" / "server_app.py"), "-c",
                                     str(self.config_path), "--dev"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + timeout
        while not runtime.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.index} exited: {self.log_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.index} did not start within {timeout} s")
            time.sleep(0.05)

    def log_text(self) -> str:
        return (self.data_dir / "stderr.log").read_text(errors="replace")

    def cli(self, *args: str) -> Any:
        """`ipc_app.py ARGS --json` inside the node's namespace; the parsed result."""
        result = self.host.run([sys.executable, str(ROOT / "src" / "ipc_app.py"), "-c",
                                str(self.config_path), *args, "--json"])
        if result.returncode != 0:
            raise RuntimeError(f"ipc_app {' '.join(args)}: {result.stderr.strip()}")
        return json.loads(result.stdout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None

    def bridge(self) -> Bridge:
        """A persistent local-API connection inside the namespace (see tests/ns_ipc.py)."""
        proc = self.host.popen([sys.executable, str(ROOT / "tests" / "ns_ipc.py"),
                                str(self.data_dir), str(IPC_PORT)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE)
        return Bridge(proc)


class Bridge:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def send(self, cmd: str, args: dict[str, Any] | None = None) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> Any:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("local-API bridge ended")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        self.send(cmd, args)
        return self.receive()


def start_world(lab: Lab, directory: Path, publics: int, homes: list[str],
                overrides: dict[str, Any] | None = None) -> tuple[list[LabNode], list[LabNode]]:
    """`publics` public nodes (each bootstrapping from the first) and one node per NAT kind
    in `homes`, each behind its own gateway, bootstrapping from every public node.
    Identities: publics 0.., homes after them. Nodes stop when the lab closes."""
    public_nodes: list[LabNode] = []
    for index in range(publics):
        node = LabNode(lab.public_host(), directory, index,
                       [public_nodes[0].address] if public_nodes else [], overrides)
        lab.closers.append(node.stop)
        node.start()
        public_nodes.append(node)
    home_nodes = []
    for offset, kind in enumerate(homes):
        node = LabNode(lab.home(kind).host, directory, publics + offset,
                       [p.address for p in public_nodes], overrides)
        lab.closers.append(node.stop)
        node.start()
        home_nodes.append(node)
    return public_nodes, home_nodes
