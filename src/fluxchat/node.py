"""The node: owns the store, the peer links, the overlay, the mail and the local API.

`run()` keeps every background task in one TaskGroup until `request_stop()`; stopping
closes links and the API within a deadline and leaves the database consistent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import messages as m
from .bootstrap import read_bootstrap
from .config import Config
from .contact import advertise
from .datagram_net import Datagrams
from .errors import FluxError
from .events import EventHub
from .framing import DEFAULT_MAX_PAYLOAD
from .identity import Identity
from .ids import id_from_spki
from .ipc_handlers import NodeApi
from .ipc_protocol import TOKEN_FILE, check_bind_address
from .ipc_server import IpcServer, write_token_file
from .lan import LanDiscovery
from .link import Link
from .link_setup import link_settings
from .mailer import Mailer
from .mailkeyring import MailKeyring
from .mailroom import Mailroom
from .overlay import Overlay
from .peer_net import PeerNet
from .punch import Puncher
from .reach import Reach
from .relay import Relays
from .relay_sender import RelaySender
from .replication import Replication
from .store import Store
from .tasks import settle
from .upkeep import QUIET_CHECK, UPKEEP_INTERVAL, Upkeep

log = logging.getLogger("fluxchat.node")
DB_FILE = "fluxchat.db"
RUNTIME_FILE = "runtime.json"
STOP_DEADLINE = 1.5
REJOIN_FIRST, REJOIN_MAX = 1.0, 60.0   # seconds between join attempts while isolated


class Node:
    def __init__(self, config: Config, identity: Identity,
                 clock: Callable[[], float] = time.time, storage_key: bytes | None = None) -> None:
        self.config, self.identity, self.clock = config, identity, clock
        # server_app.py always passes the key from the vault; None (plain SQLite) is for tests.
        self.storage_key = storage_key
        self.started_at = clock()
        self.ready = asyncio.Event()     # listening, local API up
        self.joined = asyncio.Event()    # first join attempt finished (successful or not)
        self._stop = asyncio.Event()
        self.port = 0
        self.ipc_port = 0
        self.web_port = 0
        self.store: Store | None = None
        self.lan: LanDiscovery | None = None
        # The one narrow interface the local API, the event stream and the web app use.
        self.api = NodeApi(self, EventHub())

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.store = Store.open(self.config.data_dir / DB_FILE, self.storage_key)
        self.store.observers.append(self.api.on_store_change)
        try:
            await self._start()
            async with asyncio.TaskGroup() as group:
                jobs = [self._join(), self._outbox_after_join(), self._fetch_loop(),
                        self._upkeep_loop(), self.reach.run(), self.relays.run(),
                        self._every(QUIET_CHECK, self.upkeeper.release_if_quiet)]
                if self.lan is not None:
                    jobs.append(self.lan.run(self.config.discovery.interval))
                tasks = [group.create_task(job) for job in jobs]
                self._write_runtime()
                self.ready.set()
                await self._stop.wait()
                for task in tasks:
                    task.cancel()
        finally:
            await self._shutdown()

    # ----- start and stop -------------------------------------------------------------

    async def _start(self) -> None:
        assert self.store is not None
        cfg = self.config
        session, limits = link_settings(cfg, self.identity)
        self.net = PeerNet(session, limits, self._on_peer_request, self._on_link, self._on_unlink)
        self.port = await self.net.listen(cfg.address, cfg.port)
        # The contact names our real port, known only now when port 0 picked one.
        self.net.config = dataclasses.replace(session, contact=advertise(cfg.contact, self.port))
        self._bootstrap = read_bootstrap(cfg)
        self.overlay = Overlay(self.identity, self.net, self.store, cfg.kademlia, self.clock)
        self.mailer = Mailer(self.identity, self.store, self.overlay, self.net, cfg.mail,
                             DEFAULT_MAX_PAYLOAD, self.clock)
        self.mailroom = Mailroom(self.identity, self.store, self.overlay, self.net, self.mailer)
        self.replication = Replication(self.identity.node_id, self.store, self.overlay,
                                       self.mailer)
        self.mailroom.on_held = self.replication.arrived
        self.reach = Reach(self.net, self.overlay, cfg.contact, self.port, self.clock)
        self.overlay.admit = self.reach.admit
        self.overlay.verify = self.reach.verify
        if cfg.datagrams.enabled:
            await self._start_datagrams(cfg.address)
        self.reach.observers.append(self.api.on_reachability)
        self.relays = Relays(self.identity, self.net, self.overlay, self.store, self.mailer,
                             self.reach, cfg.client.idle_timeout, self.clock)
        self.relay_sender = RelaySender(self.identity.node_id, self.net, self.overlay,
                                        self.relays.directory, self.clock)
        self.mailer.relay = self.relay_sender.send
        self.mailer.relay_known = self.relay_sender.knows
        self.net.registry.keep = self.relays.keeps_link   # relay links are never evicted
        self.puncher = Puncher(self.net, self.relays)
        self.relay_sender.on_relayed = self.puncher.after_relayed
        self.keyring = MailKeyring(self.identity, self.store, self.overlay, cfg.mail_keys,
                                   self.mailer.retention, self.clock)
        self.keyring.load()
        self.keyring.upkeep()   # our first record, or a new one if a rotation came due
        self.mailer.keyring = self.keyring
        self.upkeeper = Upkeep(self.store, self.overlay, self.mailer, self.mailroom,
                               self.keyring, self.replication, cfg.kademlia.republish_interval,
                               self.clock, self.started_at)
        self._handlers = self._peer_handlers()
        log.info("listening for peers on %s:%d as %s", cfg.address, self.port,
                 self.identity.id_text)
        if cfg.discovery.enabled:
            self.lan = LanDiscovery(self.identity.node_id, self.port, cfg.discovery.broadcast,
                                    cfg.discovery.port, self._on_lan_peer)
            await self.lan.start()
        if cfg.ipc.enabled:
            check_bind_address(cfg.ipc.address, cfg.ipc.allow_remote)
            token = write_token_file(cfg.data_dir)
            self.ipc = IpcServer(cfg.ipc.address, cfg.ipc.port, token,
                                 self.api.dispatch)
            await self.ipc.start()
            self.ipc_port = self.ipc.port
            log.info("local API on %s:%d", cfg.ipc.address, self.ipc_port)
            if cfg.web.enabled:
                await self._start_web(token)

    async def _start_web(self, token: str) -> None:
        """Binds the web app's port; aiohttp loads on the first connection (see web/front.py)."""
        from .web.auth import WebAuth
        from .web.front import WebFront

        auth = WebAuth(token)
        self.web = WebFront(self.api, auth, self.config.web.address, self.config.web.port, self.clock)
        await self.web.start()
        self.web_port = self.web.port
        self.api.web_login = lambda: f"{self.web.url}/login?code={auth.issue_code(self.clock())}"
        log.info("web app on %s", self.web.url)

    def _write_runtime(self) -> None:
        """data_dir/runtime.json tells scripts and tests the ports we really bound."""
        path = self.config.data_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "id": self.identity.id_text,
                                   "port": self.port, "ipc_port": self.ipc_port,
                                   "web_port": self.web_port}) + "\n")
        tmp.replace(path)

    async def _shutdown(self) -> None:
        # A stopped node has no ports and no API: leave nothing that suggests otherwise.
        for name in (RUNTIME_FILE, TOKEN_FILE):
            (self.config.data_dir / name).unlink(missing_ok=True)
        closers = []
        self.api.events.close()
        if self.lan is not None:
            self.lan.close()
        if hasattr(self, "overlay") and self.overlay.datagrams is not None:
            self.overlay.datagrams.close()
        if hasattr(self, "ipc"):
            closers.append(self.ipc.close())
        if hasattr(self, "web"):
            closers.append(self.web.close())
        if hasattr(self, "mailroom"):   # built last in _start: everything below exists
            closers += [self.mailer.tasks.close(), self.overlay.tasks.close(),
                        self.reach.tasks.close(), self.relays.tasks.close(),
                        self.puncher.tasks.close()]
        if hasattr(self, "net"):
            closers.append(self.net.close())
        try:
            async with asyncio.timeout(STOP_DEADLINE):
                await settle(closers, "shutdown")   # each failure logged once
        except TimeoutError:
            log.warning("shutdown deadline passed; closing anyway")
        if self.store is not None:
            if hasattr(self, "overlay"):
                self.overlay.save()
            if hasattr(self, "mailer"):
                self.mailer.later.flush()   # bookkeeping that waited for company (later_moves)
            self.store.close()
            self.store = None

    async def _start_datagrams(self, host: str) -> None:
        """Lookup datagrams on the peer port's number (PROTOCOL.md §16). A port taken for
        UDP only costs speed: lookups then go over links, as with datagrams off."""
        datagrams = Datagrams(self.config.datagrams, self.overlay.closest_contacts)
        try:
            await datagrams.start(host, self.port)
        except OSError as exc:
            log.warning("lookup datagrams off: cannot bind UDP %s:%d: %s", host, self.port, exc)
            return
        self.overlay.datagrams = datagrams

    # ----- background work --------------------------------------------------------------

    async def _join(self) -> None:
        """Join; while that leaves us with no link and an empty routing table (the
        bootstrap nodes were down, or the network was not up yet), try again after 1 s,
        doubling to 60 s: nothing else would ever make the first link."""
        pause = REJOIN_FIRST
        while True:
            anyone = True
            try:
                anyone = await self._join_network()
            except Exception:   # the periodic upkeep tries again; the node stays up
                log.exception("joining the network failed")
            finally:
                self.joined.set()
            if self.net.links or len(self.overlay.table) or not anyone:
                return
            log.info("not joined (no links, no known nodes): trying again in %.0f s", pause)
            await asyncio.sleep(pause)
            pause = min(2 * pause, REJOIN_MAX)

    async def _join_network(self) -> bool:
        """One join attempt; False when there was nobody to ask (no bootstrap, no saved
        routing table: the first node of a network)."""
        known = self.overlay.load()
        addresses = self._bootstrap
        if not addresses and not known:
            log.info("joined: 0 bootstrap links, 0 nodes in the routing table (none to ask)")
            return False
        linked = await self.overlay.bootstrap(addresses)
        log.info("joined: %d bootstrap links, %d nodes in the routing table", linked,
                 len(self.overlay.table))
        if len(self.overlay.table):
            stored = await self.overlay.publish_key()
            log.info("public key stored on %d nodes", stored)
            if self.keyring.current is not None:
                log.info("mail key record stored on %d nodes", await self.keyring.publish())
            await self.mailroom.fetch_all(lookup=True)
            self.overlay.save()
            if self.net.config.contact != "private":
                # One-shot requests, done: their links would idle until client.idle_timeout
                # while later nodes join (bench/README.md, "Links held"). A private node
                # keeps them: others reach it only over links it made.
                log.info("closed %d links the join left idle",
                         self.net.registry.release_dialed())
        return True

    async def _outbox_after_join(self) -> None:
        # Mail due at start would only fail and back off before we have any links.
        await self.joined.wait()
        await self.mailer.run_outbox()

    async def _fetch_loop(self) -> None:
        await self._every(self.config.mail.fetch_interval, self.mailroom.fetch_all)

    async def _upkeep_loop(self) -> None:
        await self._every(min(UPKEEP_INTERVAL, self.config.kademlia.refresh_interval),
                          self.upkeep)

    async def upkeep(self) -> None:
        """Expire what has expired, refresh stale buckets, save the routing table, and
        now and then republish our key and the mail we hold for others (upkeep.py)."""
        await self.upkeeper.run()

    async def _every(self, interval: float, job: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except FluxError as exc:
                log.warning("%s: %s", getattr(job, "__name__", "job"), exc)
            except Exception:   # keep the node alive; the traceback goes to the log
                log.exception("background job failed")

    # ----- peer requests -------------------------------------------------------------------

    def _peer_handlers(self) -> dict[type, Callable[[Link, Any], Any]]:
        """Adding a request type to the node is one entry here."""
        return {
            m.FindNode: self.overlay.on_find_node,
            m.FindKey: self.overlay.on_find_key,
            m.StoreKey: self._on_store_key,
            m.FindMailKey: self.keyring.on_find_mail_key,
            m.StoreMailKey: self.keyring.on_store_mail_key,
            m.Deliver: self.mailroom.on_deliver,
            m.DeliverMany: self.mailroom.on_deliver_many,
            m.Store: self.mailroom.on_store,
            m.Fetch: self.mailroom.on_fetch,
            m.Delete: self.mailroom.on_delete,
            m.Notify: lambda link, _msg: self.mailroom.on_notify(link),
            m.DialBack: self.reach.on_dial_back,
            m.Reserve: self.relays.on_reserve,
            m.StoreRelay: self.relays.on_store_relay,
            m.FindRelay: self.relays.on_find_relay,
            m.Relay: self.relays.on_relay,
            m.Punch: self.puncher.on_punch,
            m.PunchOffer: self.puncher.on_punch_offer,
        }

    async def _on_peer_request(self, link: Link, message: m.Message) -> m.Message | None:
        handler = self._handlers.get(type(message))
        if handler is None:
            rid = getattr(message, "rid", None)
            return None if rid is None else m.Fail(rid, int(m.ErrorCode.INVALID), "not served")
        answer = handler(link, message)
        if inspect.isawaitable(answer):
            answer = await answer
        reply: m.Message | None = answer
        return reply

    def _on_link(self, link: Link) -> None:
        self.overlay.on_link(link)
        self.reach.on_link(link)
        self.relays.on_link(link)
        self.mailer.worker.link_opened(link.peer_id, len(self.net.links))
        self.api.on_link(link, True)

    def _on_unlink(self, link: Link) -> None:
        if hasattr(self, "relays"):
            self.relays.on_unlink(link)
        self.api.on_link(link, False)

    def _on_store_key(self, link: Link, request: m.StoreKey) -> m.Message:
        reply = self.overlay.on_store_key(link, request)
        if isinstance(reply, m.Ok):   # a key was (re)published: mail waiting for it may go now
            self.mailer.worker.key_appeared(id_from_spki(request.public_key))
        return reply

    def _on_lan_peer(self, host: str, port: int, node_id: bytes) -> None:
        """A LAN announcement: dial it with the announced ID pinned, unless already linked."""
        if node_id in self.net.links:
            return

        async def dial() -> None:
            try:
                await self.net.dial(host, port, node_id)
            except FluxError as exc:
                log.info("LAN peer %s:%d did not prove its ID: %s", host, port, exc)

        self.overlay.tasks.spawn(dial())

