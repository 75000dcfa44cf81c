"""One error root for the project; each boundary translates foreign errors into these."""

from __future__ import annotations


class FluxError(Exception):
    """Root of every error FluxChat raises on purpose."""


class ConfigError(FluxError):
    """The configuration file is missing, unreadable or holds a bad value."""


class IdentityError(FluxError):
    """A key or certificate is missing, malformed, or the password is wrong."""


class ProtocolError(FluxError):
    """A peer broke the wire protocol; `code` is sent back before the link closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EnvelopeError(FluxError):
    """A mail envelope failed to open or verify. Deliberately carries no detail."""

    def __init__(self) -> None:
        super().__init__("envelope rejected")


class StorageError(FluxError):
    """The mailbox database failed or refused a change."""


class IpcError(FluxError):
    """A local API request failed; `code` is a short machine-readable word."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
