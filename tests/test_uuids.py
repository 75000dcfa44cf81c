"""uuids.py against the standard library's uuid module."""

from __future__ import annotations

import os
import unittest
import uuid

from fluxchat.uuids import new_uuid, uuid_text


class UuidsTest(unittest.TestCase):
    def test_text_is_the_uuid_modules(self) -> None:
        for raw in [bytes(16), b"\xff" * 16] + [os.urandom(16) for _ in range(200)]:
            self.assertEqual(uuid_text(raw), str(uuid.UUID(bytes=raw)))

    def test_text_refuses_other_lengths(self) -> None:
        for size in (0, 15, 17, 32):
            with self.assertRaises(ValueError):
                uuid_text(bytes(size))

    def test_new_uuids_are_random_version_4(self) -> None:
        made = [new_uuid() for _ in range(200)]
        self.assertEqual(len(set(made)), len(made))
        for raw in made:
            parsed = uuid.UUID(bytes=raw)
            self.assertEqual(parsed.version, 4)
            self.assertEqual(parsed.variant, uuid.RFC_4122)
        # every bit outside the version and variant fields varies
        fixed = [0x00] * 16
        fixed[6], fixed[8] = 0xF0, 0xC0
        seen = [0] * 16
        for raw in made:
            for index, byte in enumerate(raw):
                seen[index] |= byte
        self.assertEqual([s | f for s, f in zip(seen, fixed, strict=True)], [0xFF] * 16)


if __name__ == "__main__":
    unittest.main()
