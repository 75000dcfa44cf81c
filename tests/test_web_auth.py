"""Web sign-in without a browser: one-time codes, sessions, CSRF tokens; and that aiohttp is
only ever loaded by the web package (a node without the web app never imports it)."""

from __future__ import annotations

import ast
import subprocess
import sys
import unittest
from pathlib import Path

from fluxchat.config import ConfigError, load_config
from fluxchat.web.auth import CODE_TTL, MAX_CODES, MAX_SESSIONS, SESSION_TTL, WebAuth

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "fluxchat"
TOKEN = "ab" * 32


class AuthTest(unittest.TestCase):
    def test_one_time_codes(self) -> None:
        auth = WebAuth(TOKEN)
        code = auth.issue_code(100.0)
        self.assertIsNone(auth.redeem_code("not-a-code", 100.0))
        session = auth.redeem_code(code, 101.0)
        assert session is not None
        self.assertIsNone(auth.redeem_code(code, 101.0))   # used once
        late = auth.issue_code(200.0)
        self.assertIsNone(auth.redeem_code(late, 200.0 + CODE_TTL))   # expired
        codes = [auth.issue_code(300.0) for _ in range(MAX_CODES + 3)]
        self.assertEqual(len(auth.codes), MAX_CODES)
        self.assertIsNotNone(auth.redeem_code(codes[-1], 300.0))

    def test_sessions_tokens_and_csrf(self) -> None:
        auth = WebAuth(TOKEN)
        self.assertIsNone(auth.sign_in("wrong", 0.0))
        session = auth.sign_in(TOKEN, 0.0)
        assert session is not None
        self.assertIs(auth.session(session.id, SESSION_TTL - 1), session)   # use pushes the deadline back
        self.assertIs(auth.session(session.id, 2 * SESSION_TTL - 2), session)
        self.assertIsNone(auth.session(session.id, 4 * SESSION_TTL))
        self.assertIsNone(auth.session(None, 0.0))
        fresh = auth.sign_in(TOKEN, 0.0)
        assert fresh is not None
        self.assertTrue(auth.csrf_ok(fresh, fresh.csrf))
        self.assertFalse(auth.csrf_ok(fresh, None) or auth.csrf_ok(fresh, "") or auth.csrf_ok(fresh, session.csrf))
        for _ in range(MAX_SESSIONS + 5):
            auth.sign_in(TOKEN, 1.0)
        self.assertEqual(len(auth.sessions), MAX_SESSIONS)
        auth.sign_out(fresh.id)
        self.assertIsNone(auth.session(fresh.id, 1.0))


class ConfigTest(unittest.TestCase):
    def test_web_keys(self) -> None:
        import json
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "c.json"
            path.write_text(json.dumps({"web": {"enabled": True, "port": 0}}))
            self.assertEqual(load_config(path).web.port, 0)
            for bad, words in (({"web": {"address": "0.0.0.0"}}, "web.address"),
                               ({"web": {"enabled": True}, "ipc": {"enabled": False}}, "ipc.enabled"),
                               ({"web": {"port": 70000}}, "web.port")):
                path.write_text(json.dumps(bad))
                with self.assertRaises(ConfigError) as caught:
                    load_config(path)
                self.assertIn(words, str(caught.exception))


class ImportTest(unittest.TestCase):
    def test_only_the_web_package_imports_aiohttp(self) -> None:
        for path in PACKAGE.rglob("*.py"):
            tree = ast.parse(path.read_text())
            names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names}
            names |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                      if isinstance(node, ast.ImportFrom) and not node.level}
            if "aiohttp" in names or "segno" in names:
                self.assertEqual(path.parent.name, "web", path)
            if path.parent.name == "web":   # the web app reaches the node only through the API
                relative = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
                self.assertNotIn("node", {m.split(".")[-1] for m in relative if m}, path)

    def test_a_node_without_the_web_app_never_loads_aiohttp(self) -> None:
        code = "import sys, fluxchat.node, fluxchat.ipc_handlers; print('aiohttp' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(out.stdout.strip(), "False")
