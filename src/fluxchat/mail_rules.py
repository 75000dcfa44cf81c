"""What a mail may hold: the one place for the subject and body limits.

The envelope, the mailer, the local API and the config all check against these names; each
caller wraps the problem text in its own error type.
"""

from __future__ import annotations

MAX_SUBJECT_CHARS = 255
MAX_BODY_BYTES = 1024 * 1024   # the highest `mail.max_body_bytes` the config accepts (and its default)


def subject_problem(subject: str) -> str | None:
    if len(subject) > MAX_SUBJECT_CHARS:
        return f"subject has {len(subject)} characters; at most {MAX_SUBJECT_CHARS} are allowed"
    return None


def body_problem(body: str, limit: int) -> str | None:
    """`limit` is the node's `mail.max_body_bytes`; it counts UTF-8 bytes."""
    size = len(body.encode("utf-8"))
    if size > limit:
        return f"body has {size} bytes; mail.max_body_bytes allows {limit}"
    return None
