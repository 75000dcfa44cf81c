"""Where the key password comes from: environment, a file, or the terminal."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from .errors import IdentityError

PASSWORD_ENV = "FLUXCHAT_KEY_PASSWORD"
PASSWORD_FILE_ENV = "FLUXCHAT_KEY_PASSWORD_FILE"


def read_password(confirm: bool = False) -> str:
    """$FLUXCHAT_KEY_PASSWORD, else the first line of $FLUXCHAT_KEY_PASSWORD_FILE, else a prompt."""
    password = os.environ.get(PASSWORD_ENV)
    if password:
        return password
    path = os.environ.get(PASSWORD_FILE_ENV)
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise IdentityError(f"{PASSWORD_FILE_ENV}={path}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise IdentityError(f"{PASSWORD_FILE_ENV}={path}: the file is empty")
        return lines[0]
    if not sys.stdin.isatty():
        raise IdentityError(f"no key password: set {PASSWORD_ENV} or {PASSWORD_FILE_ENV}, "
                            "or run from a terminal to be asked")
    password = getpass.getpass("Key password: ")
    if confirm and getpass.getpass("Repeat the key password: ") != password:
        raise IdentityError("the two passwords differ")
    if not password:
        raise IdentityError("an empty key password is not accepted")
    return password
