"""The layering of DESIGN §1, checked by parsing imports: each module imports only from its
own layer or below, and the pure core imports nothing that does I/O or reads the clock."""

from __future__ import annotations

import ast
import tomllib
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "fluxchat"
ENTRY_POINTS = sorted((ROOT / "src").glob("*.py"))

LAYERS = {
    0: {"__init__", "errors", "ids", "config", "config_reader", "identity", "pkcs8", "password", "asn1",
        "outbox_states", "contact", "runtime_env", "process_env", "mail_rules"},
    1: {"cbor", "framing", "messages", "session", "routing", "lookup", "envelope", "pow",
        "ipc_protocol", "ratelimit", "discovery", "wire_fields", "session_events",
        "mailkeys", "envelope2", "admission", "mail_limits", "addresses", "ipc_hello",
        "placement", "reachability", "relaying", "punching"},
    2: {"peer_net", "link", "tls", "bootstrap", "ipc_server", "ipc_client", "store", "store_schema",
        "logsetup", "pidfile", "lan", "tasks", "link_loop", "held", "probe", "events"},
    3: {"node", "overlay", "mailer", "mailroom", "replication", "ipc_handlers", "mailkeyring", "reach",
        "relay", "relay_sender", "punch",
        "chat_api", "web"},   # web: the web app package (aiohttp), given the node API; see test_web_auth
}
# Storage at rest (docs/STORAGE.md), listed apart so that additions above merge cleanly.
# The store's parts (store.py composes them).
LAYERS[2] |= {"store_base", "store_inbox", "store_outbox", "store_peers", "store_batch"}
LAYERS[3] |= {"intake", "courier"}
LAYERS[1] |= {"batching", "messages_mail"}
for _layer, _names in ((1, {"vault_format", "backup_format"}),
                       (2, {"sqldb", "vault", "vault_migrate", "backup"}), (3, {"vault_admin"})):
    LAYERS[_layer] |= _names
# Split out of messages.py, ipc_protocol.py and src/ipc_app.py (the command line's parser and output).
LAYERS[1] |= {"message_base", "messages_overlay", "messages_nat", "ipc_args", "ipc_commands"}
LAYERS[2] |= {"cli_args", "cli_show", "tls_stream", "linkcert"}
# Link keys and the link handshake (docs/PROTOCOL.md §5).
LAYERS[1] |= {"certified", "linkkeys", "handshake", "session_config", "workpolicy"}
LAYERS[1] |= {"session_timers", "early_request", "session_frames", "fairshare"}
LAYERS[1] |= {"lag_deadline"}
LAYERS[2] |= {"link_registry", "link_setup", "link_serve"}
# Link-less lookup datagrams (docs/PROTOCOL.md §16).
LAYERS[1] |= {"datagram", "datagram_guard"}
LAYERS[2] |= {"datagram_net"}
# Group commits of submits and attempts started from them (issue 13).
LAYERS[1] |= {"attempt_slots"}
LAYERS[2] |= {"group_commit"}
LAYERS[3] |= {"sealing", "outbox_worker", "later_moves", "upkeep"}
LAYERS[2] |= {"logfile"}   # the log file handler (logsetup.py)
LAYERS[0] |= {"uuids"}   # mail uuids without the uuid module
LAYERS[0] |= {"records"}   # frozen dataclasses sharing their equality, hash, repr
LAYERS[0] |= {"keyformats"}   # key encodings and loaders without cryptography's serialization package
LAYERS[1] |= {"prekey_keys"}   # prekey halves without cryptography's backend object
LAYERS[1] |= {"cbor_flat"}   # the decoder's fast paths for the flat arrays of mail and records
PURE = LAYERS[1]
IMPURE_STDLIB = {"asyncio", "socket", "ssl", "sqlite3", "sqlcipher3", "time", "os", "random", "secrets",
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

    def test_no_import_cycles(self) -> None:
        """Also through imports made only for type checking or inside functions: a cycle there
        is still two modules that cannot be understood (or changed) apart."""
        graph = {path.stem: imports(path)[0] - {path.stem} for path in PACKAGE.glob("*.py")}
        self.assertEqual(find_cycle(graph), None)

    def test_find_cycle_finds_one(self) -> None:
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}), ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": set()}))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None (depth-first search)."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done:
            return None
        for target in sorted(graph.get(module, ())):
            cycle = visit(target, path + [module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


class EntryPointsTest(unittest.TestCase):
    """src/*.py: the thin layer above the node (DESIGN §1)."""

    def test_the_package_never_imports_an_entry_point(self) -> None:
        names = {path.stem for path in ENTRY_POINTS}
        for path in PACKAGE.glob("*.py"):
            _, others = imports(path)
            self.assertEqual(others & names, set(), path.stem)

    def test_entry_points_use_the_project_venv_before_the_package(self) -> None:
        """`./src/x.py` under a python3 without our dependencies must reach use_project_venv()
        before any import that needs them (see runtime_env.py); process_env.py, standard library
        only as well, may come before it."""
        for path in ENTRY_POINTS:
            with self.subTest(path.name):
                body = ast.parse(path.read_text()).body
                guard = next(i for i, node in enumerate(body) if isinstance(node, ast.If)
                             and "use_project_venv" in ast.unparse(node))
                for node in body[:guard]:
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fluxchat"):
                        self.assertIn(node.module, ("fluxchat.runtime_env", "fluxchat.process_env"))
                self.assertTrue(any(isinstance(node, ast.ImportFrom) and node.module == "fluxchat.runtime_env"
                                    for node in body[:guard]))

    def test_console_script_and_modules_match_pyproject(self) -> None:
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())
        modules = project["tool"]["setuptools"]["py-modules"]
        self.assertEqual(sorted(modules), [path.stem for path in ENTRY_POINTS])
        for name, target in project["project"]["scripts"].items():
            module, _, function = target.partition(":")
            tree = ast.parse((ROOT / "src" / f"{module}.py").read_text())
            self.assertIn(function, {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, name)


if __name__ == "__main__":
    unittest.main()
