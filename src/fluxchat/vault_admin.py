"""`server_app.py --restore FILE` and `--change-password`: the storage jobs done with the node stopped."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from .backup import restore
from .config import load_config
from .errors import FluxError, IdentityError
from .password import password_from_env, read_password
from .pidfile import PidFile
from .vault import change_password, params_from_env
from .vault_format import DEFAULT_KDF

NEW_PASSWORD_ENV = "FLUXCHAT_NEW_KEY_PASSWORD"
NEW_PASSWORD_FILE_ENV = "FLUXCHAT_NEW_KEY_PASSWORD_FILE"
ITERATIONS_ENV = "FLUXCHAT_KEY_DERIVATION_ITERATIONS"
DEFAULT_ITERATIONS = 600_000


def read_new_password() -> str:
    """$FLUXCHAT_NEW_KEY_PASSWORD, the first line of $FLUXCHAT_NEW_KEY_PASSWORD_FILE, or asked twice."""
    new = password_from_env(NEW_PASSWORD_ENV, NEW_PASSWORD_FILE_ENV, "new password")
    if new is not None:
        return new
    new = getpass.getpass("New key password: ")
    if getpass.getpass("Repeat the new key password: ") != new:
        raise IdentityError("the two passwords differ")
    return new


def _iterations() -> int:
    text = os.environ.get(ITERATIONS_ENV)
    try:
        return int(text) if text else DEFAULT_ITERATIONS
    except ValueError:
        raise IdentityError(f"{ITERATIONS_ENV}: expected an integer, got {text!r}") from None


def run(config_path: Path, archive: Path | None, new_password: bool) -> int:
    """Restore or change the password; prints one line of outcome. Exit codes as server_app."""
    try:
        data_dir = load_config(config_path).data_dir
        if archive is not None:
            node_id = restore(archive, data_dir, read_password())
            print(f"restored node {node_id} into {data_dir}; start it with "
                  f"src/server_app.py -c {config_path}")
            return 0
        old = read_password()
        new = read_new_password()
        if new == old:
            raise IdentityError("the new password is the same as the old one")
        lock = PidFile(data_dir / "server.pid")
        lock.acquire()   # the node must be stopped: it holds the key files open in memory
        try:
            change_password(data_dir, old, new, params_from_env(DEFAULT_KDF), _iterations())
        finally:
            lock.release()
        print(f"password changed for {data_dir}; the old one no longer opens it")
        return 0
    except FluxError as exc:
        print(f"server_app.py: {exc}", file=sys.stderr)
        return 1 if archive is None else 2
