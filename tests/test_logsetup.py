"""Logs a peer cannot forge, flood or grow without bound: escaping, per-peer line limits,
size-based rotation (real files), and a connection flood against a real node."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import stat
import tempfile
import time
import unicodedata
import unittest
from pathlib import Path

from fluxchat.logfile import PrivateRotatingFileHandler
from fluxchat.logsetup import (
    FORMAT,
    PEER_LINES_BURST,
    PEER_LINES_PER_SECOND,
    PeerLineLimit,
    SafeFormatter,
    about_peer,
    escape,
    setup_logging,
)
from tests.lab import NodeTestCase


def capture(name: str = "fluxchat.test") -> tuple[logging.Logger, io.StringIO, PeerLineLimit]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(SafeFormatter(FORMAT))
    limit = PeerLineLimit()
    handler.addFilter(limit)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, out, limit


class EscapeTest(unittest.TestCase):
    def test_peer_text_cannot_forge_lines_or_drive_a_terminal(self) -> None:
        self.assertEqual(escape("plain Grüße 👋"), "plain Grüße 👋")
        self.assertEqual(escape("a\nb\r\x1b[31m\x00"), "a\\x0ab\\x0d\\x1b[31m\\x00")
        self.assertEqual(escape("x\u2028y\u202ez\x85"), "x\\u2028y\\u202ez\\x85")

    def test_escaped_are_the_control_and_separator_categories_and_bidi(self) -> None:
        """logsetup writes the categories out instead of loading unicodedata: the same set."""
        bidi = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}
        for code in range(0x110000):
            char = chr(code)
            expected = unicodedata.category(char) in ("Cc", "Zl", "Zp") or code in bidi
            if expected != (escape(char) != char):
                self.fail(f"U+{code:04X}: escaped {not expected}, category {unicodedata.category(char)}")

    def test_one_record_is_one_line_and_tracebacks_are_indented(self) -> None:
        logger, out, _ = capture()
        logger.info("peer said %s", "ok\n2026-01-01 00:00:00 ERROR fluxchat: forged")
        try:
            raise ValueError("bad\nline\x1b[2J")
        except ValueError:
            logger.exception("handler failed")
        lines = out.getvalue().splitlines()
        self.assertIn("ok\\x0a2026-01-01", lines[0])
        self.assertTrue(all(line.startswith("    | ") for line in lines[2:]), lines)
        self.assertNotIn("\x1b", out.getvalue())
        self.assertEqual(sum(1 for line in lines if not line.startswith("    | ")), 2)


class PeerLineLimitTest(unittest.TestCase):
    def test_lines_about_one_peer_are_rate_limited_and_counted(self) -> None:
        logger, out, limit = capture()
        started = time.monotonic()
        for n in range(1000):
            logger.info("junk %d", n, extra=about_peer(b"\x01" * 32))
        logger.info("other peer", extra=about_peer("198.51.100.7"))
        logger.info("not about a peer")
        elapsed = time.monotonic() - started
        lines = out.getvalue().splitlines()
        about_one = [line for line in lines if "junk" in line]
        self.assertLessEqual(len(about_one), PEER_LINES_BURST + PEER_LINES_PER_SECOND * elapsed + 1)
        self.assertEqual(limit.dropped_total, 1000 - len(about_one))
        self.assertTrue(any("other peer" in line for line in lines))
        self.assertTrue(any("not about a peer" in line for line in lines))


class RotationTest(unittest.TestCase):
    def test_file_rotates_by_size_and_every_file_is_private(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "logs" / "node.log"
            root = logging.getLogger("fluxchat")
            saved = root.handlers[:], root.level, root.propagate
            # Put back the test package's quiet handler: with none left, logging's last resort
            # would print every later test's warnings to the report.
            self.addCleanup(lambda: (setattr(root, "handlers", saved[0]), root.setLevel(saved[1]),
                                     setattr(root, "propagate", saved[2])))
            setup_logging("info", path, dev=False, max_bytes=2000, backups=2)
            logger = logging.getLogger("fluxchat.rotation")
            for n in range(300):
                logger.info("line %d %s", n, "x" * 60)
            for handler in logging.getLogger("fluxchat").handlers:
                handler.close()
            files = sorted(p.name for p in path.parent.iterdir())
            self.assertEqual(files, ["node.log", "node.log.1", "node.log.2"])
            for name in files:
                info = (path.parent / name).stat()
                self.assertLessEqual(info.st_size, 2000)
                self.assertEqual(stat.S_IMODE(info.st_mode), 0o600)

    def test_no_rotation_when_either_limit_is_zero(self) -> None:
        for max_bytes, backups in ((0, 2), (2000, 0)):
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "node.log"
                handler = PrivateRotatingFileHandler(path, max_bytes, backups)
                logger = logging.getLogger(f"fluxchat.test.norotation{max_bytes}")
                logger.addHandler(handler)
                self.addCleanup(logger.removeHandler, handler)
                for n in range(100):
                    logger.warning("line %d %s", n, "x" * 60)
                handler.close()
                self.assertEqual([p.name for p in Path(tmp).iterdir()], ["node.log"])
                self.assertGreater(path.stat().st_size, 2000)
                self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)


class ConnectionFloodLogTest(NodeTestCase):
    async def test_a_connection_flood_costs_a_bounded_number_of_log_lines(self) -> None:
        (victim,) = await self.chain(1)
        root = logging.getLogger("fluxchat")
        saved = root.handlers[:], root.level, root.propagate
        self.addCleanup(lambda: (setattr(root, "handlers", saved[0]), root.setLevel(saved[1]),
                                 setattr(root, "propagate", saved[2])))
        _, out, _ = capture("fluxchat")
        started = time.monotonic()
        for _ in range(150):   # connect and hang up before TLS: one log line each, unlimited
            reader, writer = await asyncio.open_connection("127.0.0.1", victim.port)
            writer.write(os.urandom(64))
            writer.close()
            await reader.read()
        await asyncio.sleep(0.2)
        elapsed = time.monotonic() - started
        lines = [line for line in out.getvalue().splitlines() if "127.0.0.1" in line]
        self.assertGreater(len(lines), 0)
        self.assertLessEqual(len(lines), PEER_LINES_BURST + PEER_LINES_PER_SECOND * elapsed + 1)


if __name__ == "__main__":
    unittest.main()
