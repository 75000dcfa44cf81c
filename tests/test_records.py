"""records.record behaves as @dataclass(frozen=True): the same class declared both ways."""

from __future__ import annotations

import dataclasses
import unittest
from dataclasses import dataclass, field

from fluxchat import records
from fluxchat.messages import NodeInfo, Ping
from fluxchat.records import mutable_record, record


@dataclass(frozen=True)
class Generated:
    name: str
    size: int = 0
    cache: bytes = field(default=b"", compare=False, repr=False)


@record
class Shared:
    name: str
    size: int = 0
    cache: bytes = field(default=b"", compare=False, repr=False)


@dataclass(frozen=True)
class GeneratedOne:
    only: int


@record
class SharedOne:
    only: int


@dataclass(frozen=True)
class GeneratedNone:
    pass


@record
class SharedNone:
    pass


@record
class SharedChild(Shared):
    extra: tuple[int, ...] = ()


@dataclass
class GeneratedMutable:
    name: str
    items: list[int] = field(default_factory=list)
    cache: bytes = field(default=b"", compare=False, repr=False)


@mutable_record
class SharedMutable:
    name: str
    items: list[int] = field(default_factory=list)
    cache: bytes = field(default=b"", compare=False, repr=False)


class RecordTest(unittest.TestCase):
    def test_equality_and_hash_as_generated(self) -> None:
        for values in (("a",), ("a", 1), ("a", 1, b"x"), ("b", 2, b"y")):
            g, s = Generated(*values), Shared(*values)   # type: ignore[arg-type]
            self.assertEqual(hash(g), hash(s))
            self.assertEqual(s, Shared(*values))   # type: ignore[arg-type]
        self.assertEqual(Shared("a", 1, b"x"), Shared("a", 1, b"y"))   # cache: compare=False
        self.assertNotEqual(Shared("a", 1), Shared("a", 2))
        self.assertNotEqual(Shared("a"), Generated("a"))   # another class: NotImplemented both ways
        self.assertIs(Shared("a").__eq__(Generated("a")), NotImplemented)
        self.assertNotEqual(SharedChild("a"), Shared("a"))
        self.assertEqual(SharedChild("a", 1, b"", (2,)), SharedChild("a", 1, b"z", (2,)))
        self.assertEqual(hash(GeneratedOne(5)), hash(SharedOne(5)))   # a 1-tuple, not the value
        self.assertEqual(hash(GeneratedNone()), hash(SharedNone()))
        self.assertEqual(SharedNone(), SharedNone())
        self.assertEqual(len({Shared("a"), Shared("a"), Shared("b")}), 2)

    def test_repr_as_generated(self) -> None:
        cases = [(Generated("a", 1, b"x"), Shared("a", 1, b"x")), (GeneratedOne(3), SharedOne(3)),
                 (GeneratedNone(), SharedNone())]
        for g, s in cases:
            self.assertEqual(repr(g).replace("Generated", ""), repr(s).replace("Shared", ""))
        self.assertEqual(repr(SharedChild("a", 1, b"", (2,))), "SharedChild(name='a', size=1, extra=(2,))")
        self.assertEqual(repr(NodeInfo(b"\x01", "h", 2)), "NodeInfo(node_id=b'\\x01', host='h', port=2)")

    def test_frozen(self) -> None:
        s = Shared("a")
        with self.assertRaisesRegex(dataclasses.FrozenInstanceError, "cannot assign to field 'name'"):
            s.name = "b"   # type: ignore[misc]
        with self.assertRaisesRegex(dataclasses.FrozenInstanceError, "cannot assign to field 'other'"):
            s.other = 1   # type: ignore[attr-defined]
        with self.assertRaisesRegex(dataclasses.FrozenInstanceError, "cannot delete field 'size'"):
            del s.size   # type: ignore[misc]
        with self.assertRaises(dataclasses.FrozenInstanceError):
            Ping(1).rid = 2   # type: ignore[misc]
        self.assertEqual(s.name, "a")

    def test_dataclass_functions_work(self) -> None:
        s = SharedChild("a", 1, b"c", (2,))
        self.assertEqual([f.name for f in dataclasses.fields(s)], ["name", "size", "cache", "extra"])
        self.assertEqual(dataclasses.replace(s, size=3), SharedChild("a", 3, b"c", (2,)))
        self.assertEqual(dataclasses.astuple(s), ("a", 1, b"c", (2,)))
        self.assertTrue(dataclasses.is_dataclass(s))

    def test_shared_functions_not_made_per_class(self) -> None:
        for cls in (Shared, SharedOne, SharedChild, Ping, NodeInfo):
            for name in ("__eq__", "__hash__", "__repr__", "__setattr__", "__delattr__"):
                self.assertIs(getattr(cls, name), records._SHARED[name], f"{cls.__name__}.{name}")

    def test_mutable_as_generated(self) -> None:
        g, s = GeneratedMutable("a", [1], b"x"), SharedMutable("a", [1], b"x")
        self.assertEqual(repr(g).replace("Generated", ""), repr(s).replace("Shared", ""))
        self.assertEqual(s, SharedMutable("a", [1], b"y"))
        self.assertNotEqual(s, SharedMutable("a", [2]))
        self.assertIs(s.__eq__(g), NotImplemented)
        self.assertIsNone(SharedMutable.__hash__)   # unhashable, as a @dataclass with eq
        with self.assertRaises(TypeError):
            hash(s)
        s.name, s.items = "b", [3]
        del s.cache
        self.assertEqual(repr(s), "SharedMutable(name='b', items=[3])")
        self.assertIsNot(SharedMutable("a").items, SharedMutable("a").items)

    def test_a_class_defining_one_of_them_is_refused(self) -> None:
        with self.assertRaises(TypeError):
            @record
            class Own:
                def __repr__(self) -> str:
                    return "own"


if __name__ == "__main__":
    unittest.main()
