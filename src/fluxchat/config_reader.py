"""Reading a JSON configuration file: typed values that name `file: key` in every error, and
the refusal of keys the configuration's dataclasses do not have (`config.py` uses both)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError


class Reader:
    """Reads typed values out of one JSON object, naming `file: key` in every error."""

    def __init__(self, path: Path, data: dict[str, Any], prefix: str = "") -> None:
        self.path, self.data, self.prefix = path, data, prefix

    def fail(self, key: str, expected: str, value: Any) -> ConfigError:
        return ConfigError(f"{self.path}: {self.prefix}{key}: expected {expected}, got {json.dumps(value)}")

    def section(self, key: str) -> Reader:
        value = self.data.get(key, {})
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        return Reader(self.path, value, f"{self.prefix}{key}.")

    def get(self, key: str, default: Any, check: Callable[[Any], bool], expected: str) -> Any:
        value = self.data.get(key, default)
        if not check(value):
            raise self.fail(key, expected, value)
        return value

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        def ok(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high
        value: int = self.get(key, default, ok, f"{low}..{high}")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        def ok(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and low <= v <= high
        return float(self.get(key, default, ok, f"a number in {low:g}..{high:g}"))

    def text(self, key: str, default: str) -> str:
        value: str = self.get(key, default, lambda v: isinstance(v, str) and v != "", "a non-empty string")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value: bool = self.get(key, default, lambda v: isinstance(v, bool), "true or false")
        return value


def read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; run bin/setup.sh to create it") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    return data


# Config fields that are not read from the file.
_NOT_IN_FILE = frozenset({"path"})


def refuse_unknown_keys(path: Path, data: dict[str, Any], section: Any, prefix: str = "") -> None:
    """A misspelled key must not be silently ignored. The allowed keys are the fields of the
    section's dataclass, so a new section or key is allowed as soon as it is in the dataclasses."""
    known = [f.name for f in fields(section) if f.name not in _NOT_IN_FILE]
    for key in data:
        if key not in known:
            import difflib  # here: only a misspelled config needs it (bench/rss.py)

            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; known keys: {', '.join(known)}"
            raise ConfigError(f"{path}: unknown key {json.dumps(prefix + key)[1:-1]!r}{hint}")
    for key, value in data.items():
        nested = getattr(section, key)
        if isinstance(value, dict) and is_dataclass(nested) and not isinstance(nested, type):
            refuse_unknown_keys(path, value, nested, f"{prefix}{key}.")
