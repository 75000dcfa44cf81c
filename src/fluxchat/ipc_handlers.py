"""The node's one narrow API: every face (the JSON-lines local API, `watch`, the web app) calls
`NodeApi.call(cmd, args)` or `NodeApi.subscribe()`, never the node object itself.

Arguments are checked against ipc_commands.COMMANDS before a handler runs, whatever face the
request came through. Results are JSON-ready dicts. Conversation commands live in chat_api.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .chat_api import ChatCommands, mail_item, protection_of_sent
from .config import Config
from .errors import IpcError, StorageError
from .events import EventHub, Subscription, TooManySubscribers
from .identity import Identity
from .ids import IdError, fingerprint, format_id, parse_id
from .ipc_commands import check_body_size, validate_args
from .mailer import Mailer, MailError
from .outbox_states import OutboxState
from .store import Store
from .uuids import uuid_text

if TYPE_CHECKING:
    from .link import Link
    from .overlay import Overlay
    from .peer_net import PeerNet
    from .punch import Puncher
    from .reach import Reach
    from .relay import Relays

Args = dict[str, Any]


class NodeParts(Protocol):
    """What the API may see of the node: its parts, never its lifecycle internals."""

    config: Config
    identity: Identity
    store: Store | None
    storage_key: bytes | None   # for backups (None: a test node with a plain database)
    mailer: Mailer
    net: PeerNet
    overlay: Overlay
    reach: Reach
    relays: Relays
    puncher: Puncher
    port: int
    ipc_port: int
    started_at: float

    def clock(self) -> float: ...
    def request_stop(self) -> None: ...


class NodeApi(ChatCommands):
    def __init__(self, node: NodeParts, events: EventHub | None = None) -> None:
        self.node = node
        self.events = events or EventHub()
        # Set by the node when the web app runs: makes a one-time sign-in link.
        self.web_login: Callable[[], str] | None = None
        self.commands: dict[str, Callable[[Args], Awaitable[Any] | Any]] = {
            "mail": self.mail, "reply": self.reply, "list": self.list, "read": self.read,
            "mark": self.mark, "delete": self.delete, "status": self.status, "resend": self.resend,
            "conversations": self.conversations, "conversation": self.conversation,
            "contacts": self.contacts, "peers": self.peers, "info": self.info, "backup": self.backup,
            "watch": self.watch, "web_link": self.web_link, "save": self.save, "stop": self.stop,
        }
        self._backup_running = False   # one archive at a time: each costs a database copy

    @property
    def store(self) -> Store:
        assert self.node.store is not None
        return self.node.store

    async def dispatch(self, cmd: str, args: Args) -> Any:
        """Run a command whose arguments are already checked (the IPC server checks them)."""
        result = self.commands[cmd](args)
        if asyncio.iscoroutine(result):
            result = await result
        return result

    async def call(self, cmd: str, raw: Args) -> Any:
        """Check the arguments like the IPC server does, then run the command."""
        return await self.dispatch(cmd, validate_args(cmd, raw))

    def subscribe(self) -> Subscription:
        try:
            return self.events.subscribe()
        except TooManySubscribers as exc:
            raise IpcError("unavailable", str(exc)) from None

    # ----- events: the node's changes, as the stream tells them --------------------------

    def on_store_change(self, topic: str, uuid: bytes) -> None:
        if not len(self.events):
            return  # nobody listens: skip the lookup
        if topic == "inbox":
            mail = self.store.read_inbox(uuid)
            if mail is not None:
                item = mail_item(self, mail)
                item.pop("body")
                self.events.publish({"type": "mail", **item})
            return
        sent = self.store.get_outbox(uuid)
        if sent is not None and sent.kind == "mail":
            self.events.publish({"type": "state", "uuid": uuid_text(uuid), "peer": format_id(sent.recipient),
                                 "state": sent.state, "at": sent.updated_at})

    def on_reachability(self) -> None:
        self.events.publish({"type": "reachability", **self.node.reach.describe()})

    def on_link(self, link: Link, up: bool) -> None:
        self.events.publish({"type": "link", "peer": format_id(link.peer_id), "up": up,
                             "direction": link.direction, "links": len(self.node.net.links)})

    # ----- helpers ----------------------------------------------------------------------

    def resolve_peer(self, text: str) -> bytes:
        """An `FC_…` ID or a contact alias."""
        if text.startswith("FC_"):
            try:
                return parse_id(text)
            except IdError as exc:
                raise IpcError("invalid_id", str(exc)) from None
        node_id = self.store.resolve_alias(text)
        if node_id is None:
            raise IpcError("not_found", f"no contact named {text!r}; add it with `contacts add`")
        return node_id

    def alias(self, node_id: bytes) -> str | None:
        return self.store.alias_of(node_id)

    def resolve_uuid(self, text: str) -> bytes:
        """A whole uuid, or a prefix naming exactly one mail (received or sent)."""
        if len(text) == 36:
            import uuid  # here: see uuids.py

            return uuid.UUID(text).bytes
        low = bytes.fromhex(text.ljust(32, "0"))
        high = bytes.fromhex(text.ljust(32, "f"))
        found = self.store.uuids_between(low, high, 2)
        if not found:
            raise IpcError("not_found", f"no mail whose uuid starts with {text}")
        if len(found) > 1:
            raise IpcError("ambiguous", f"several mails' uuids start with {text}; give more digits")
        return bytes(found[0])

    # ----- commands -------------------------------------------------------------------------

    async def submit(self, recipient: bytes, subject: str, body: str,
                     ref: bytes | None = None) -> Args:
        """Queue one mail; answered once it is committed (its commit shared with the mails
        submitted in the same moment, see mailer.send)."""
        check_body_size(body, self.node.config.mail.max_body_bytes)
        try:
            mail = await self.node.mailer.send(recipient, subject, body, ref)
        except MailError as exc:
            raise IpcError("bad_argument", str(exc)) from None
        return {"uuid": uuid_text(mail.uuid), "to": format_id(recipient), "alias": self.alias(recipient),
                "state": mail.state}

    async def mail(self, args: Args) -> Args:
        """One envelope per recipient; every recipient is resolved before anything is sent,
        and all of them are committed together."""
        recipients = [self.resolve_peer(to) for to in args["to"]]
        submits = [self.submit(r, args["subject"], args["body"]) for r in dict.fromkeys(recipients)]
        # One recipient: awaited in place (no task, no extra turn of the event loop).
        sent = [await submits[0]] if len(submits) == 1 else await asyncio.gather(*submits)
        return {"uuid": sent[0]["uuid"], "state": sent[0]["state"], "sent": sent}

    def delete(self, args: Args) -> Args:
        uuid = self.resolve_uuid(args["uuid"])
        if not (self.store.delete_inbox(uuid) | self.store.delete_outbox(uuid)):
            raise IpcError("not_found", f"no mail {args['uuid']}")
        return {"uuid": uuid_text(uuid), "deleted": True}

    def status(self, args: Args) -> Args:
        uuid = self.resolve_uuid(args["uuid"])
        mail = self.store.get_outbox(uuid)
        if mail is None or mail.kind != "mail":
            raise IpcError("not_found", f"no mail {args['uuid']} in the outbox")
        history = [{"at": at, "state": state, "detail": detail}
                   for at, state, detail in self.store.outbox_history(uuid)]
        return {"uuid": uuid_text(uuid), "to": format_id(mail.recipient),
                "alias": self.alias(mail.recipient), "state": mail.state, "reason": mail.reason,
                "stored_on": mail.stored_on, "created_at": mail.created_at,
                "expires_at": mail.expires_at, "history": history,
                "protection": protection_of_sent(mail.envelope)}

    def resend(self, args: Args) -> Args:
        uuid = self.resolve_uuid(args["uuid"])
        mail = self.store.get_outbox(uuid)
        if mail is None or mail.kind != "mail":
            raise IpcError("not_found", f"no mail {args['uuid']} in the outbox")
        if not self.node.mailer.resend(uuid):
            raise IpcError("bad_state", f"mail {args['uuid']} is {mail.state}; only failed or expired mail "
                                        "can be resent")
        return {"uuid": uuid_text(uuid), "state": str(OutboxState.QUEUED)}

    def contacts(self, args: Args) -> Args:
        action = args["action"]
        if action == "add":
            return self.add_contact(args)
        if action == "remove":
            return {"alias": args["alias"], "removed": self.store.remove_contact(args["alias"])}
        return {"contacts": [{"alias": alias, "id": format_id(node_id), "fingerprint": fingerprint(node_id),
                              "name": self.store.latest_name(node_id)}
                             for alias, node_id in self.store.contacts()]}

    def add_contact(self, args: Args) -> Args:
        if args["id"] is not None:
            node_id = self.resolve_peer(args["id"])
        else:
            mail = self.store.read_inbox(self.resolve_uuid(args["from"]))
            if mail is None:
                raise IpcError("not_found", f"no received mail {args['from']}: --from takes a mail they sent")
            node_id = mail.sender
        current = self.store.resolve_alias(args["alias"])
        if current is not None and current != node_id and not args["force"]:
            raise IpcError("exists", f"{args['alias']} already names {format_id(current)}; "
                                     "use force to point it at another node")
        self.store.add_contact(args["alias"], node_id)
        return {"alias": args["alias"], "id": format_id(node_id), "replaced": format_id(current)
                if current is not None and current != node_id else None}

    def peers(self, args: Args) -> Args:
        now = asyncio.get_running_loop().time()
        links = [{"id": format_id(link.peer_id), "address": f"{link.address[0]}:{link.address[1]}",
                  "direction": link.direction, "age": round(now - link.established_at, 3)}
                 for link in self.node.net.links.values()]
        return {"links": links, "routing_table_size": len(self.node.overlay.table)}

    def info(self, args: Args) -> Args:
        node, cfg = self.node, self.node.config
        total, new = self.store.count_inbox()
        held, _ = self.store.held_stats()
        return {
            "id": node.identity.id_text, "fingerprint": fingerprint(node.identity.node_id),
            "name": cfg.mail.display_name,
            "version": __version__, "uptime": round(node.clock() - node.started_at, 1),
            "listen": [f"{cfg.address}:{node.port}"], "ipc": f"{cfg.ipc.address}:{node.ipc_port}",
            "reachability": {**node.reach.describe(), "relays": node.relays.describe(),
                             "punch": node.puncher.describe()},
            "counts": {"inbox": total, "new": new, "outbox": sum(self.store.count_outbox().values()),
                       "held": held, "links": len(node.net.links),
                       "routing": len(node.overlay.table)},
            "datagrams": None if node.overlay.datagrams is None else dict(node.overlay.datagrams.stats),
            "watchers": len(self.events),
        }

    def watch(self, args: Args) -> Subscription:
        """The IPC server turns this connection into a stream of event lines."""
        return self.subscribe()

    def web_link(self, args: Args) -> Args:
        if self.web_login is None:
            raise IpcError("unavailable", "the web app is off; set web.enabled to true in the node's config")
        return {"url": self.web_login()}

    def save(self, args: Args) -> Args:
        self.node.overlay.save()   # mail is committed as it happens; this persists the table
        return {"saved": True}

    async def backup(self, args: Args) -> Args:
        """Write an encrypted archive of this node to an absolute path on its machine (backup.py)."""
        node, target = self.node, Path(args["file"])
        if not target.is_absolute():
            raise IpcError("bad_argument", "file: give an absolute path (the CLI does)")
        if node.storage_key is None:
            raise IpcError("unavailable", "this node runs without a storage key (tests only)")
        if self._backup_running:
            raise IpcError("busy", "a backup is being written already; try again when it is done")
        from .backup import write_backup  # here: a running node seldom writes one (bench/rss.py)

        self._backup_running = True
        try:
            size = await asyncio.to_thread(write_backup, node.config.data_dir, node.storage_key,
                                           target, node.identity.id_text, int(node.clock()))
        except StorageError as exc:
            raise IpcError("backup_failed", str(exc)) from None
        finally:
            self._backup_running = False
        return {"file": str(target), "bytes": size, "id": node.identity.id_text}

    def stop(self, args: Args) -> Args:
        # Reply first: stopping closes this very connection.
        asyncio.get_running_loop().call_later(0.05, self.node.request_stop)
        return {"stopping": True}


# The IPC server's historical name for the API object.
IpcHandlers = NodeApi
