"""The web app's HTTP adapter (aiohttp): routes, sign-in, and the checks every request passes.

Every request: the Host header must name our loopback address and port (DNS rebinding); a
request carrying an Origin must come from our own origin, and a state-changing one must carry
one; every page but sign-in needs the session cookie (HttpOnly, SameSite=Strict); every POST
needs the session's CSRF token. Responses carry a strict Content-Security-Policy. The app talks
to the node only through the API object it is given (`call`, `subscribe`), like the IPC server.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from ..errors import IpcError
from ..events import Subscription
from . import pages
from .auth import Session, WebAuth

log = logging.getLogger("fluxchat.web")

COOKIE = "fc_session"
KEEPALIVE = 20.0       # seconds between SSE comments, so a vanished browser is noticed
MAX_REQUEST = 2 * 1024 * 1024
STATIC = {name: (Path(__file__).parent / "static" / name, kind)
          for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css"))}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",   # no-referrer would make Chromium send `Origin: null` on POST
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
PUBLIC = ("/login", "/static/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api(Protocol):
    """The node API as the web app sees it: the same narrow interface the IPC server uses."""

    async def call(self, cmd: str, raw: dict[str, Any]) -> Any: ...
    def subscribe(self) -> Subscription: ...


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _see(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


class WebApp:
    """Serves on a socket web/front.py already bound (to `address`:`port`)."""

    def __init__(self, api: Api, auth: WebAuth, address: str, port: int, clock: Callable[[], float]) -> None:
        self.api, self.auth, self.address, self.clock = api, auth, address, clock
        self.port = port
        # What the Host header may say: our own address, by any of loopback's names.
        self._hosts = frozenset(f"{name}:{port}" for name in ("127.0.0.1", "localhost", "[::1]"))
        self._static = {name: (path.read_bytes(), kind) for name, (path, kind) in STATIC.items()}
        self._runner: web.AppRunner | None = None

    # ----- lifecycle --------------------------------------------------------------------

    async def serve(self, sock: socket.socket) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=MAX_REQUEST)
        app.on_response_prepare.append(self._headers)
        get, post = web.get, web.post
        app.add_routes([
            get("/", self.home), get("/c/{peer}", self.conversation), post("/c/{peer}", self.send),
            get("/m/{uuid}", self.message), get("/compose", self.compose_form), post("/compose", self.compose),
            get("/sent", self.sent), get("/contacts", self.contacts), post("/contacts", self.add_contact),
            get("/network", self.network), get("/qr.svg", self.qr), get("/events", self.events),
            get("/login", self.login_form), post("/login", self.login), post("/logout", self.logout),
            get("/static/{name}", self.static),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock, shutdown_timeout=1.0).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----- the checks every request passes ---------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self._hosts:
            return _html(pages.error_page(421, "This address is not the FluxChat web app."), 421)
        origin = request.headers.get("Origin")
        changing = request.method not in ("GET", "HEAD")
        if (origin is not None or changing) and origin != f"http://{request.host}":
            return _html(pages.error_page(403, "Request from another site refused."), 403)
        if request.path.startswith(PUBLIC):
            return await handler(request)
        session = self.auth.session(request.cookies.get(COOKIE), self.clock())
        if session is None:
            return _see("/login") if not changing else _html(pages.error_page(403, "Sign in first."), 403)
        if changing:
            form = await request.post()
            given = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not isinstance(given, str) or not self.auth.csrf_ok(session, given):
                return _html(pages.error_page(403, "Missing or stale form token; reload the page."), 403)
        request["session"] = session
        try:
            return await handler(request)
        except IpcError as exc:
            status = 404 if exc.code == "not_found" else 400
            return _html(pages.error_page(status, exc.message), status)

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(HEADERS)

    @staticmethod
    def _csrf(request: web.Request) -> str:
        session: Session = request["session"]
        return session.csrf

    # ----- sign-in ---------------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.StreamResponse:
        code = request.query.get("code")
        if code is None:
            return _html(pages.login())
        session = self.auth.redeem_code(code, self.clock())
        if session is None:
            return _html(pages.login("That sign-in link was used already or has expired."), 403)
        return self._signed_in(session)   # the redirect drops the code from the address bar

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = (await request.post()).get("token")
        session = self.auth.sign_in(token, self.clock()) if isinstance(token, str) else None
        if session is None:
            return _html(pages.login("Wrong token."), 403)
        return self._signed_in(session)

    def _signed_in(self, session: Session) -> web.StreamResponse:
        response = _see("/")
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.auth.sign_out(request.cookies.get(COOKIE))
        response = _see("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    # ----- pages -----------------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        return _html(pages.conversations(await self.api.call("conversations", {"limit": 200}), self._csrf(request)))

    async def conversation(self, request: web.Request) -> web.StreamResponse:
        result = await self.api.call("conversation", {"peer": request.match_info["peer"], "limit": 100})
        return _html(pages.conversation(result, self._csrf(request)))

    async def send(self, request: web.Request) -> web.StreamResponse:
        form, peer = await request.post(), request.match_info["peer"]
        body, ref = str(form.get("body", "")), str(form.get("ref", ""))
        if ref:
            await self.api.call("reply", {"uuid": ref, "body": body})
        else:
            await self.api.call("mail", {"to": peer, "body": body})
        return _see(f"/c/{peer}")

    async def message(self, request: web.Request) -> web.StreamResponse:
        return _html(pages.message(await self.api.call("read", {"uuid": request.match_info["uuid"]})))

    async def compose_form(self, request: web.Request) -> web.StreamResponse:
        contacts = (await self.api.call("contacts", {}))["contacts"]
        return _html(pages.compose(self._csrf(request), contacts))

    async def compose(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        recipients = str(form.get("to", "")).replace(",", " ").split()
        try:
            result = await self.api.call("mail", {"to": recipients, "subject": str(form.get("subject", "")),
                                                  "body": str(form.get("body", ""))})
        except IpcError as exc:
            contacts = (await self.api.call("contacts", {}))["contacts"]
            return _html(pages.compose(self._csrf(request), contacts, exc.message), 400)
        return _see(f"/c/{result['sent'][0]['to']}")

    async def sent(self, request: web.Request) -> web.StreamResponse:
        result = await self.api.call("list", {"folder": "sent", "limit": 200})
        return _html(pages.sent(result, self._csrf(request)))

    async def contacts(self, request: web.Request, error: str = "", status: int = 200) -> web.StreamResponse:
        result, info = await self.api.call("contacts", {}), await self.api.call("info", {})
        return _html(pages.contacts(result, info, self._csrf(request), error), status)

    async def add_contact(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            await self.api.call("contacts", {"action": "add", "alias": str(form.get("alias", "")),
                                             "id": str(form.get("id", "")), "force": form.get("force") == "1"})
        except IpcError as exc:
            return await self.contacts(request, exc.message, 400)
        return _see("/contacts")

    async def network(self, request: web.Request) -> web.StreamResponse:
        peers, info = await self.api.call("peers", {}), await self.api.call("info", {})
        return _html(pages.network(peers, info, self._csrf(request)))

    async def qr(self, request: web.Request) -> web.StreamResponse:
        import segno  # only when someone opens the contacts page

        info = await self.api.call("info", {})
        out = io.BytesIO()
        segno.make(info["id"], error="m").save(out, kind="svg", scale=5, border=2, xmldecl=False)
        return web.Response(body=out.getvalue(), content_type="image/svg+xml")

    async def static(self, request: web.Request) -> web.StreamResponse:
        found = self._static.get(request.match_info["name"])
        if found is None:
            return _html(pages.error_page(404, "No such file."), 404)
        return web.Response(body=found[0], content_type=found[1])

    # ----- live updates ----------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the same stream as `watch`, one `data:` JSON line per event."""
        subscription = self.api.subscribe()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        transport = request.transport
        subscription.on_overflow = transport.abort if transport is not None else None
        try:
            await response.prepare(request)
            await response.write(b": subscribed\n\n")
            while True:
                try:
                    event = await asyncio.wait_for(subscription.next(), KEEPALIVE)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                if event is None:
                    break
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
        except (ConnectionError, RuntimeError):
            pass   # the browser went away (or we dropped it for reading too slowly)
        finally:
            subscription.close()
        return response
