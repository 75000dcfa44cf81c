"""The bootstrap list a node joins through: `bootstrap` of the config plus the data directory's
`bootstrap.json` (written by bin/setup.sh from FLUXCHAT_BOOTSTRAP), as (host, port) pairs."""

from __future__ import annotations

import json

from .config import Config
from .contact import resolve
from .errors import ConfigError


def read_bootstrap(config: Config) -> list[tuple[str, int]]:
    """config `bootstrap` plus data_dir/bootstrap.json, as (host, port); bad entries named."""
    entries = list(config.bootstrap)
    path = config.data_dir / "bootstrap.json"
    if path.exists():
        try:
            listed = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a JSON list of \"host:port\" strings ({exc})") from None
        if not isinstance(listed, list) or not all(isinstance(e, str) for e in listed):
            raise ConfigError(f"{path}: expected a JSON list of \"host:port\" strings")
        entries += listed
    addresses = []
    for entry in entries:
        address = resolve(entry, "")
        if address is None:
            raise ConfigError(f"bootstrap entry {entry!r}: expected host:port")
        addresses.append(address)
    return list(dict.fromkeys(addresses))
