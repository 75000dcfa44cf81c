"""Where the key password comes from: environment, a file, or the terminal."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from .errors import IdentityError

PASSWORD_ENV = "FLUXCHAT_KEY_PASSWORD"
PASSWORD_FILE_ENV = "FLUXCHAT_KEY_PASSWORD_FILE"
MIN_CHOSEN_CHARS = 10   # a password chosen at the prompt; it guards the key if the disk is copied
PROMPT_TRIES = 3


def password_from_env(value_env: str, file_env: str, what: str) -> str | None:
    """$value_env, else the first line of the file named by $file_env; None when a terminal may ask.
    Raises IdentityError when neither is set and there is no terminal to ask on."""
    password = os.environ.get(value_env)
    if password:
        return password
    path = os.environ.get(file_env)
    if path:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise IdentityError(f"{file_env}={path}: {exc.strerror}") from None
        if not lines or not lines[0]:
            raise IdentityError(f"{file_env}={path}: the file is empty")
        return lines[0]
    if not sys.stdin.isatty():
        raise IdentityError(f"no {what}: set {value_env} or {file_env}, or run from a terminal to be asked")
    return None


def read_password(confirm: bool = False) -> str:
    """$FLUXCHAT_KEY_PASSWORD, else the first line of $FLUXCHAT_KEY_PASSWORD_FILE, else a prompt."""
    password = password_from_env(PASSWORD_ENV, PASSWORD_FILE_ENV, "key password")
    if password is not None:
        return password
    import getpass  # here: a node started by a script or a service never prompts

    if not confirm:
        password = getpass.getpass("Key password: ")
        if not password:
            raise IdentityError("an empty key password is not accepted")
        return password
    return choose_password(getpass.getpass, lambda text: print(text, file=sys.stderr))


def choose_password(ask: Callable[[str], str], say: Callable[[str], None]) -> str:
    """A new password from the prompt: long enough, typed the same twice; asks again on a slip."""
    for _ in range(PROMPT_TRIES):
        password = ask(f"Choose a key password (at least {MIN_CHOSEN_CHARS} characters): ")
        if len(password) < MIN_CHOSEN_CHARS:
            say(f"That is {len(password)} characters; use at least {MIN_CHOSEN_CHARS} (a few words will do).")
            continue
        if ask("Repeat the key password: ") != password:
            say("The two entries differ; once more.")
            continue
        return password
    raise IdentityError(f"no key password chosen after {PROMPT_TRIES} tries")
