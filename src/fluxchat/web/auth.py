"""Web sign-in without aiohttp: one-time sign-in codes, sessions and their CSRF tokens.

Nothing here reads the clock: callers pass `now` (unix seconds). A session is a random cookie
value; each has its own random CSRF token that every state-changing request must echo.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from ..ipc_protocol import check_token

SESSION_TTL = 12 * 3600.0   # idle seconds before a session ends
CODE_TTL = 120.0            # a one-time sign-in link is good for two minutes
MAX_SESSIONS = 16
MAX_CODES = 8


@dataclass
class Session:
    id: str
    csrf: str
    expires: float


@dataclass
class WebAuth:
    token: str   # the node's IPC token: pasting it is one way to sign in
    sessions: dict[str, Session] = field(default_factory=dict)
    codes: dict[str, float] = field(default_factory=dict)

    def issue_code(self, now: float) -> str:
        """A single-use code for a sign-in link (what `ipc_app.py web` prints)."""
        self._expire(now)
        while len(self.codes) >= MAX_CODES:
            del self.codes[min(self.codes, key=self.codes.__getitem__)]
        code = secrets.token_urlsafe(32)
        self.codes[code] = now + CODE_TTL
        return code

    def redeem_code(self, code: str, now: float) -> Session | None:
        self._expire(now)
        for known in list(self.codes):
            if hmac.compare_digest(known.encode(), code.encode("utf-8", "replace")):
                del self.codes[known]
                return self._new_session(now)
        return None

    def sign_in(self, token: str, now: float) -> Session | None:
        return self._new_session(now) if check_token(token, self.token) else None

    def session(self, cookie: str | None, now: float) -> Session | None:
        """The live session named by the cookie, its idle deadline pushed back."""
        self._expire(now)
        found = self.sessions.get(cookie or "")
        if found is not None:
            found.expires = now + SESSION_TTL
        return found

    def sign_out(self, cookie: str | None) -> None:
        self.sessions.pop(cookie or "", None)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(session.csrf.encode(), given.encode("utf-8", "replace"))

    def _new_session(self, now: float) -> Session:
        while len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions.values(), key=lambda s: s.expires)
            del self.sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now + SESSION_TTL)
        self.sessions[session.id] = session
        return session

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self.sessions.items() if s.expires <= now]:
            del self.sessions[key]
        for key in [k for k, t in self.codes.items() if t <= now]:
            del self.codes[key]
