"""`record`: a frozen dataclass whose equality, hash, repr and immutability are functions shared
by every record, instead of six functions compiled for each class; `mutable_record`, the same for
a plain (mutable) dataclass.

`@dataclass(frozen=True)` execs the source of `__init__`, `__repr__`, `__eq__`, `__hash__`,
`__setattr__` and `__delattr__` for every class: about 9 KiB of code objects and functions per
class under -OO, 0.75 MiB RSS in a node for our ~110 frozen classes (bench/README.md, "Memory
per node"). Only `__init__` differs in substance from class to class; the others do the same
thing over the class's fields, so `record` has dataclasses make `__init__` alone and puts the
shared functions in place of the rest. They behave as the generated ones do: `==` compares
the fields (those with `compare=True`) of two instances of the same class and returns
NotImplemented for any other class, the hash is the hash of the tuple of those fields, the
repr is `Name(field=value, ...)` over the fields with `repr=True`, and assigning or deleting
any attribute raises `dataclasses.FrozenInstanceError`.

The `__setattr__` and `__delattr__` that a frozen dataclass must make are dropped again at
once (their memory is reused by the next objects). A `mutable_record` is, as a `@dataclass`,
unhashable (`__hash__` is None) and equal by its fields. Type checkers see a frozen dataclass
and a plain one (`dataclass_transform`). Standard library only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass, field, fields
from operator import attrgetter
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

# Per class: its compared fields' values as a tuple, its hashed ones, and its repr's field names.
_compared: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
_hashed: dict[type, Callable[[Any], tuple[Any, ...]]] = {}
_shown: dict[type, tuple[str, ...]] = {}


def _getter(names: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """attrgetter returns a tuple for two names or more: the same tuple for one and none."""
    if len(names) >= 2:
        return attrgetter(*names)
    if names:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return lambda obj: ()


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        values = _compared[self.__class__]
        return values(self) == values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_hashed[self.__class__](self))


def _repr(self: Any) -> str:
    shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _shown[self.__class__])
    return f"{self.__class__.__qualname__}({shown})"


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


_SHARED = {"__eq__": _eq, "__hash__": _hash, "__repr__": _repr, "__setattr__": _setattr, "__delattr__": _delattr}


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """`@dataclass(frozen=True)`, the shared functions in place of the generated ones."""
    cls = _made(cls, frozen=True)
    for name, function in _SHARED.items():
        setattr(cls, name, function)
    return cls


@dataclass_transform(field_specifiers=(field,))
def mutable_record(cls: type[T]) -> type[T]:
    """`@dataclass`, the shared equality and repr in place of the generated ones."""
    cls = _made(cls, frozen=False)
    for name, function in (("__eq__", _eq), ("__repr__", _repr), ("__hash__", None)):
        setattr(cls, name, function)
    return cls


def _made(cls: type[T], frozen: bool) -> type[T]:
    own = [name for name in _SHARED if name in cls.__dict__]
    if own:   # the generated ones would not have replaced it either: use dataclass there
        raise TypeError(f"{cls.__qualname__} defines {', '.join(own)}: not a record")
    cls = dataclass(frozen=frozen, eq=False, repr=False)(cls)
    every = fields(cls)   # type: ignore[arg-type]
    _compared[cls] = _getter(tuple(f.name for f in every if f.compare))
    # As dataclasses hash: the compared fields, unless a field says otherwise (hash=...).
    _hashed[cls] = _getter(tuple(f.name for f in every if (f.compare if f.hash is None else f.hash)))
    _shown[cls] = tuple(f.name for f in every if f.repr)
    return cls
