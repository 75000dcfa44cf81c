"""A small lab for tests and benchmarks: FluxChat nodes on 127.0.0.1 with their own data
directories and ephemeral ports, in this process (many nodes, one event loop) or as
separate `server_app.py` processes. Identities come from tests/data/keys.
"""

from __future__ import annotations

import asyncio
import compileall
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

from fluxchat.config import load_config
from fluxchat.ipc_client import IpcClient, read_token_file
from fluxchat.node import DB_FILE, RUNTIME_FILE, Node
from fluxchat.store import Store
from fluxchat.vault import unlock
from tests.keys import TEST_PASSWORD, identity, install_identity

ROOT = Path(__file__).resolve().parent.parent
SERVER_APP = ROOT / "src" / "server_app.py"

# Fast settings for loopback labs: little proof of work, quick retries.
LAB_SETTINGS: dict[str, Any] = {
    "address": "127.0.0.1", "port": 0, "contact": "public",
    "challenge": {"min": 4, "max": 12},
    "client": {"auth_timeout": 5, "request_timeout": 3, "connections_per_second": 1000,
               "max_handshakes": 256},
    "mail": {"fetch_interval": 5},
    "ipc": {"port": 0},
    "log": {"level": "info", "file": None},
}


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged


def write_config(directory: Path, index: int, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None) -> Path:
    """A data dir holding test identity `index` and a config file; returns the config path."""
    data_dir = directory / f"node{index:02d}"
    if not (data_dir / "private_key.pem").exists():
        install_identity(index, data_dir)
    settings = _merge(LAB_SETTINGS, overrides or {})
    settings.update(data_dir=str(data_dir), bootstrap=bootstrap, id=identity(index).id_text)
    path = directory / f"config{index:02d}.json"
    path.write_text(json.dumps(settings, indent=1))
    return path


# Bounds for waits on a condition: generous, because the tests share two cores with other suites
# (a load of 40 slows everything tenfold), and a wait that succeeds returns at once anyway.
WAIT = 60.0


class LabNode:
    """One node run inside this process's event loop."""

    def __init__(self, directory: Path, index: int, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None) -> None:
        self.index = index
        self.config_path = write_config(directory, index, bootstrap, overrides)
        self.node: Node | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> bytes:
        return identity(self.index).node_id

    @property
    def address(self) -> str:
        assert self.node is not None
        return f"127.0.0.1:{self.node.port}"

    async def start(self, timeout: float = WAIT, wait_joined: bool = True) -> Node:
        self.node = Node(load_config(self.config_path), identity(self.index))
        self._task = asyncio.ensure_future(self.node.run())
        ready = asyncio.ensure_future(self.node.ready.wait())
        done, _ = await asyncio.wait({ready, self._task}, timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self._task in done:
            self._task.result()   # raises the start-up error
        if ready not in done:
            ready.cancel()
            raise TimeoutError(f"node {self.index} did not start within {timeout} s")
        if wait_joined:
            await asyncio.wait_for(self.node.joined.wait(), timeout)
        return self.node

    async def stop(self) -> None:
        if self.node is not None and self._task is not None:
            self.node.request_stop()
            await asyncio.wait_for(self._task, WAIT)
        self.node, self._task = None, None


async def start_chain(directory: Path, count: int, overrides: dict[str, Any] | None = None,
                      first: int = 0) -> list[LabNode]:
    """Nodes first..first+count-1, each bootstrapping only from the one before it."""
    nodes: list[LabNode] = []
    for index in range(first, first + count):
        bootstrap = [nodes[-1].address] if nodes else []
        lab = LabNode(directory, index, bootstrap, overrides)
        await lab.start()
        nodes.append(lab)
        await links_settled(nodes)
    return nodes


async def links_settled(labs: list[LabNode], timeout: float = WAIT) -> None:
    """Wait until every link is known at both ends: a node closes the links its join made
    once it has joined (node.py), and a test that dials right after a start would
    otherwise be handed the other end of a link that is closing."""
    nodes = [lab.node for lab in labs if lab.node is not None]

    def symmetric() -> bool:
        return all((p.identity.node_id in q.net.links) == (q.identity.node_id in p.net.links)
                   for p in nodes for q in nodes if p is not q)
    await eventually(symmetric, timeout)


async def eventually(check: Any, timeout: float = WAIT, interval: float = 0.05) -> Any:
    """Poll `check()` (sync or async) until it returns something truthy; fail on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@functools.cache
def compile_for_node_processes() -> None:
    """server_app.py runs under -OO (fluxchat/process_env.py) and reads our modules from the
    *.opt-2.pyc files bin/setup.sh writes. A checkout changes after setup, and under
    PYTHONDONTWRITEBYTECODE no node writes them itself, so each would compile the changed
    modules from source as it starts: slower, and 0.3 MiB more (bench/README.md). Once per lab."""
    compileall.compile_dir(ROOT / "src", quiet=2, optimize=2)


class ProcessNode:
    """One node run as its own `server_app.py` process (realistic; SIGKILL-able)."""

    dev = True   # --dev: log to stderr (stderr.log), whatever the config's log.file says

    def __init__(self, directory: Path, index: int, bootstrap: list[str],
                 overrides: dict[str, Any] | None = None, dev: bool = True) -> None:
        self.index = index
        self.config_path = write_config(directory, index, bootstrap, overrides)
        self.data_dir = directory / f"node{index:02d}"
        self.dev = dev
        self.proc: subprocess.Popen[bytes] | None = None
        self.runtime: dict[str, Any] = {}

    def start(self, timeout: float = WAIT, password: str = TEST_PASSWORD) -> dict[str, Any]:
        (self.data_dir / RUNTIME_FILE).unlink(missing_ok=True)
        compile_for_node_processes()
        env = dict(os.environ, FLUXCHAT_KEY_PASSWORD=password)
        self.log = open(self.data_dir / "stderr.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(SERVER_APP), "-c", str(self.config_path)]
                                     + ["--dev"] * self.dev, env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.log)
        deadline = time.monotonic() + timeout
        runtime = self.data_dir / RUNTIME_FILE
        while not runtime.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.index} exited with {self.proc.returncode}: "
                                   f"{(self.data_dir / 'stderr.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.index} did not start within {timeout} s")
            time.sleep(0.02)
        self.runtime = json.loads(runtime.read_text())
        return self.runtime

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.runtime['port']}"

    def client(self) -> IpcClient:
        return IpcClient("127.0.0.1", self.runtime["ipc_port"], read_token_file(self.data_dir))

    def open_store(self) -> Store:
        """The (stopped) node's encrypted database, unlocked with the test password."""
        return Store.open(self.data_dir / DB_FILE, unlock(self.data_dir, TEST_PASSWORD))

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        with self.client() as client:
            return client.call(cmd, args or {})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = WAIT) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.proc = None
        self.log.close()
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class NodeTestCase(unittest.IsolatedAsyncioTestCase):
    """A temporary directory and in-process nodes that are stopped after each test."""

    async def asyncSetUp(self) -> None:
        # unittest runs the loop in debug mode, which tracks every coroutine's origin and
        # makes a twenty-node network several times slower; nothing here needs it.
        asyncio.get_running_loop().set_debug(False)
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.labs: list[LabNode] = []

    async def asyncTearDown(self) -> None:
        for lab in self.labs:
            await lab.stop()
        self._tmp.cleanup()

    async def chain(self, count: int, first: int = 0, **overrides: Any) -> list[Node]:
        labs = await start_chain(self.dir, count, dict(overrides), first=first)
        self.labs += labs
        return [lab.node for lab in labs if lab.node is not None]

    async def start(self, index: int, bootstrap: list[str], **overrides: Any) -> LabNode:
        lab = LabNode(self.dir, index, bootstrap, dict(overrides))
        await lab.start()
        self.labs.append(lab)
        if lab.node is not None:
            await links_settled(self.labs)
        return lab
