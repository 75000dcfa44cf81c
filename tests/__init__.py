"""Test package; puts src/ on the import path so `python -m unittest` works from the root."""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import logging  # noqa: E402 -- after the path set-up on purpose
import os  # noqa: E402

# Tests provoke bad peers on purpose; keep their log lines out of the test report
# unless FLUXCHAT_TEST_LOG=debug|info|… asks for them.
_level = os.environ.get("FLUXCHAT_TEST_LOG")
_logger = logging.getLogger("fluxchat")
if _level:
    logging.basicConfig(level=_level.upper())
else:
    _logger.addHandler(logging.NullHandler())
    _logger.propagate = False



def _not_a_slow_callback(record: logging.LogRecord) -> bool:
    """IsolatedAsyncioTestCase runs its loop in debug mode, whose checks we want, but which also
    reports every callback over 0.1 s: on a shared 2-core machine that measures the load, not us."""
    return not (record.msg == "Executing %s took %.3f seconds" and record.name == "asyncio")


logging.getLogger("asyncio").addFilter(_not_a_slow_callback)

# New storage key files made by nodes under test use the cheapest Argon2id the format allows,
# not the ~0.5 s default: nodes start by the hundred here. Tests of the cost set their own.
os.environ.setdefault("FLUXCHAT_STORAGE_KDF_MEMORY_KIB", "8192")
os.environ.setdefault("FLUXCHAT_STORAGE_KDF_ITERATIONS", "1")
