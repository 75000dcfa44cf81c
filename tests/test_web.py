"""The web app in a real browser: two node processes, headless Chromium (Debian's) driven by
Playwright. Signs in to both, sends a mail from one and watches it appear on the other's open
conversation page without a reload; checks that requests without the cookie, from a foreign
Origin or Host, or without the CSRF token are refused. Screenshots of every page go to tmp/.

Skipped (with the reason) where Playwright or /usr/bin/chromium is missing; CI installs both.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tempfile
import unittest
import urllib.parse
from pathlib import Path

from tests.lab import ProcessNode
from tests.test_cli import poll, stop_node

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "tmp" / "web"
CHROMIUM = os.environ.get("FLUXCHAT_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
WEB = {"web": {"enabled": True, "port": 0}}

try:
    from playwright.sync_api import Browser, Page, sync_playwright
    from playwright.sync_api import expect as _expect
except ImportError:  # pragma: no cover - the skip below names the reason
    sync_playwright = None  # type: ignore[assignment]


def _skip_reason() -> str | None:
    if sync_playwright is None:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


class Raw:
    """Plain HTTP requests to a web app, to check what it refuses."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"127.0.0.1:{port}"

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                form: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = urllib.parse.urlencode(form).encode() if form is not None else None
            base = {"Host": self.host}
            if body is not None:
                base["Content-Type"] = "application/x-www-form-urlencoded"
            connection.request(method, path, body=body, headers={**base, **(headers or {})})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace")
        finally:
            connection.close()

    def sign_in(self, token: str) -> str:
        status, headers, _ = self.request("POST", "/login", {"Origin": f"http://{self.host}"}, {"token": token})
        assert status == 303, status
        cookie = headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        return cookie.split(";")[0]


# CI installs Chromium and Playwright (.ci/run): there a missing piece is a failure, not a skip.
@unittest.skipIf(_skip_reason() is not None and not os.environ.get("CI"), _skip_reason() or "")
class WebAppTest(unittest.TestCase):
    tmp: Path
    a: ProcessNode
    b: ProcessNode

    @classmethod
    def setUpClass(cls) -> None:
        if _skip_reason() is not None:
            raise RuntimeError(f"the browser test must run in CI: {_skip_reason()}")
        holder = tempfile.TemporaryDirectory()
        cls.addClassCleanup(holder.cleanup)
        cls.tmp = Path(holder.name)
        cls.a = ProcessNode(cls.tmp, 0, [], {**WEB, "mail": {"display_name": "Ann"}})
        cls.a.start()
        cls.addClassCleanup(stop_node, cls.a)
        cls.b = ProcessNode(cls.tmp, 1, [cls.a.address], WEB)
        cls.b.start()
        cls.addClassCleanup(stop_node, cls.b)
        poll(lambda: cls.a.call("peers")["links"], "B linked to A")
        SHOTS.mkdir(parents=True, exist_ok=True)
        _expect.set_options(timeout=15_000)   # the machine may be busy: delivery takes what it takes
        cls.pw = sync_playwright().start()
        cls.addClassCleanup(cls.pw.stop)
        cls.browser: Browser = cls.pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        cls.addClassCleanup(cls.browser.close)

    def page(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1000, "height": 700})
        self.addCleanup(context.close)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    @staticmethod
    def token(node: ProcessNode) -> str:
        return (node.data_dir / "ipc.token").read_text().strip()

    def test_mail_appears_live_and_every_page_renders(self) -> None:
        a_id, b_id = self.a.runtime["id"], self.b.runtime["id"]
        # B signs in with a one-time link, which works once and leaves no code in the address.
        bob = self.page()
        link = self.b.call("web_link")["url"]
        bob.goto(link)
        self.assertEqual(bob.url, f"http://127.0.0.1:{self.b.runtime['web_port']}/")
        again = self.page()
        again.goto(link)
        self.assertIn("used already", again.content())
        bob.goto(f"http://127.0.0.1:{self.b.runtime['web_port']}/c/{a_id}")
        bob.evaluate("window.stillHere = true")   # gone if the page reloads

        # A signs in by pasting the token, and writes to B.
        ann = self.page()
        ann.goto(f"http://127.0.0.1:{self.a.runtime['web_port']}/")
        self.assertTrue(ann.url.endswith("/login"))
        ann.screenshot(path=str(SHOTS / "login.png"))
        ann.fill("input[name=token]", self.token(self.a))
        ann.click("main form button")
        ann.click("nav >> text=Compose")
        ann.fill("input[name=to]", b_id)
        ann.fill("input[name=subject]", "Hello <b>Bob</b>")
        ann.fill("textarea[name=body]", "Are you there?\n<script>alert(1)</script>")
        ann.screenshot(path=str(SHOTS / "compose.png"))
        ann.click("form.compose button")
        self.assertIn(f"/c/{b_id}", ann.url)

        # On B's open conversation page, without a reload; the markup in it is shown as text.
        incoming = bob.locator("article.mail.in")
        _expect(incoming).to_have_count(1)
        _expect(incoming.locator(".body")).to_have_text("Are you there?\n<script>alert(1)</script>")
        _expect(incoming.locator(".subject")).to_have_text("Hello <b>Bob</b>")
        self.assertTrue(bob.evaluate("window.stillHere === true"))
        self.assertIn("“Ann”", incoming.locator(".meta").inner_text())   # the signed name, as a hint
        # B answers in the reply box; it reaches A's open page live too, with its state.
        ann.evaluate("window.stillHere = true")
        bob.fill("#reply textarea", "Yes!")
        bob.click("#reply button")
        _expect(bob.locator("article.mail.out")).to_have_count(1)
        _expect(ann.locator("article.mail.in .body")).to_have_text("Yes!")
        self.assertTrue(ann.evaluate("window.stillHere === true"))
        _expect(ann.locator("article.mail.out .state")).to_have_text(re.compile("delivered"))
        ann.screenshot(path=str(SHOTS / "conversation.png"))
        bob.screenshot(path=str(SHOTS / "conversation-bob.png"))

        for path, name, marker in (("/", "conversations", "#conversations"), ("/sent", "sent", "table"),
                                   ("/contacts", "contacts", "#my-id"), ("/network", "network", "#link-count")):
            ann.goto(f"http://127.0.0.1:{self.a.runtime['web_port']}{path}")
            _expect(ann.locator(marker)).to_be_visible()
            ann.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
        self.assertEqual(ann.locator("#my-id").count(), 0)   # last page: network
        ann.goto(f"http://127.0.0.1:{self.a.runtime['web_port']}/contacts")
        self.assertEqual(ann.locator("#my-id").inner_text(), a_id)
        qr = ann.evaluate("fetch('/qr.svg').then(r => r.headers.get('content-type'))")
        self.assertEqual(qr, "image/svg+xml")
        ann.fill("input[name=alias]", "bob")
        ann.fill("input[name=id]", b_id)
        ann.click("form.inline button")
        _expect(ann.locator("table.list")).to_contain_text("bob")
        ann.goto(f"http://127.0.0.1:{self.a.runtime['web_port']}/")
        _expect(ann.locator("#conversations")).to_contain_text("bob")

    def test_refusals(self) -> None:
        raw = Raw(self.a.runtime["web_port"])
        own = {"Origin": f"http://{raw.host}"}
        cookie = raw.sign_in(self.token(self.a))
        status, headers, page = raw.request("GET", "/", {"Cookie": cookie})
        self.assertEqual(status, 200)
        self.assertIn("default-src 'none'", headers["Content-Security-Policy"])
        csrf = re.search(r'<meta name="csrf" content="([^"]+)"', page)
        assert csrf is not None
        form = {"to": self.b.runtime["id"], "body": "x", "csrf": csrf.group(1)}

        def status_of(method: str, path: str, headers: dict[str, str], data: dict[str, str] | None = None) -> int:
            return raw.request(method, path, headers, data)[0]

        # The one request that passes every check, so the refusals below are not vacuous.
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie, **own}, form), 303)
        # Without the cookie: pages send you to sign in, changes are refused.
        self.assertEqual(status_of("GET", "/", {}), 303)
        self.assertEqual(status_of("GET", "/events", {}), 303)
        self.assertEqual(status_of("POST", "/compose", own, form), 403)
        self.assertEqual(status_of("POST", "/login", own, {"token": "wrong"}), 403)
        # A foreign or missing Origin.
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie, "Origin": "http://evil.example"}, form), 403)
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie}, form), 403)
        self.assertEqual(status_of("GET", "/events", {"Cookie": cookie, "Origin": "http://evil.example"}), 403)
        self.assertEqual(status_of("POST", "/login", {"Origin": "null"}, {"token": self.token(self.a)}), 403)
        # A foreign Host (DNS rebinding): refused before anything else.
        evil = {"Host": f"evil.example:{raw.port}"}
        self.assertEqual(status_of("GET", "/login", evil), 421)
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie, **evil,
                                                        "Origin": f"http://evil.example:{raw.port}"}, form), 421)
        # Without (or with a wrong) CSRF token.
        no_csrf = {k: v for k, v in form.items() if k != "csrf"}
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie, **own}, no_csrf), 403)
        self.assertEqual(status_of("POST", "/compose", {"Cookie": cookie, **own}, {**form, "csrf": "x"}), 403)
        # Signing out ends the session.
        self.assertEqual(status_of("POST", "/logout", {"Cookie": cookie, **own}, {"csrf": form["csrf"]}), 303)
        self.assertEqual(status_of("GET", "/", {"Cookie": cookie}), 303)

    @classmethod
    def tearDownClass(cls) -> None:
        # The README's picture: the conversation page, as the last run drew it.
        shot = SHOTS / "conversation.png"
        if shot.exists() and os.environ.get("FLUXCHAT_UPDATE_DOCS"):
            shutil.copy(shot, ROOT / "docs" / "web-conversation.png")
