"""The GLIBC_TUNABLES value a node process runs with (fluxchat/malloc_env.py)."""

from __future__ import annotations

import unittest

from fluxchat.malloc_env import with_threshold


class WithThresholdTest(unittest.TestCase):
    def test_added_to_nothing_or_beside_other_tunables(self) -> None:
        self.assertEqual(with_threshold(""), "glibc.malloc.mmap_threshold=131072")
        self.assertEqual(with_threshold("glibc.malloc.arena_max=2"),
                         "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072")

    def test_a_threshold_set_by_the_user_stays(self) -> None:
        self.assertIsNone(with_threshold("glibc.malloc.mmap_threshold=65536"))
        self.assertIsNone(with_threshold("glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=0"))


if __name__ == "__main__":
    unittest.main()
