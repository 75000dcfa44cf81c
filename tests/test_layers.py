"""The layering of DESIGN §1, checked by parsing imports: each module imports only from its
own layer or below, and the pure core imports nothing that does I/O or reads the clock."""

from __future__ import annotations

import ast
import unittest
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "fluxchat"

LAYERS = {
    0: {"__init__", "errors", "ids", "config", "identity", "pkcs8", "password", "asn1", "outbox_states",
        "contact", "runtime_env", "mail_rules"},
    1: {"cbor", "framing", "messages", "session", "routing", "lookup", "envelope", "pow",
        "ipc_protocol", "ratelimit", "discovery", "wire_fields", "session_events",
        "mailkeys", "envelope2", "admission", "mail_limits", "addresses", "ipc_hello",
        "placement", "reachability", "relaying", "punching"},
    2: {"peer_net", "link", "tls", "ipc_server", "ipc_client", "store", "store_schema",
        "logsetup", "pidfile", "lan", "tasks", "link_loop", "held", "probe"},
    3: {"node", "overlay", "mailer", "mailroom", "ipc_handlers", "mailkeyring", "reach", "relay", "punch"},
}
PURE = LAYERS[1]
IMPURE_STDLIB = {"asyncio", "socket", "ssl", "sqlite3", "time", "os", "random", "secrets",
                 "subprocess", "threading", "selectors", "datetime", "pathlib", "logging"}


def layer_of(module: str) -> int:
    for layer, names in LAYERS.items():
        if module in names:
            return layer
    raise AssertionError(f"module {module} has no layer in tests/test_layers.py")


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(project modules, top-level stdlib/third-party modules) imported by a file."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: from .x import y / from . import x
                if node.module:
                    ours.add(node.module.split(".")[0])
                else:   # `from . import x`: a module, or a name from __init__
                    ours.update(alias.name if (PACKAGE / f"{alias.name}.py").exists()
                                else "__init__" for alias in node.names)
            elif node.module:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            others.update(alias.name.split(".")[0] for alias in node.names)
    return ours, others


class LayersTest(unittest.TestCase):
    def test_every_module_has_a_layer(self) -> None:
        for path in PACKAGE.glob("*.py"):
            layer_of(path.stem)

    def test_imports_go_down_only(self) -> None:
        for path in PACKAGE.glob("*.py"):
            ours, _ = imports(path)
            for target in ours:
                self.assertLessEqual(layer_of(target), layer_of(path.stem),
                                     f"{path.stem} (layer {layer_of(path.stem)}) imports "
                                     f"{target} (layer {layer_of(target)})")

    def test_pure_core_does_no_io_and_reads_no_clock(self) -> None:
        for name in PURE:
            _, others = imports(PACKAGE / f"{name}.py")
            self.assertEqual(others & IMPURE_STDLIB, set(), f"{name} imports I/O or clock")


if __name__ == "__main__":
    unittest.main()
