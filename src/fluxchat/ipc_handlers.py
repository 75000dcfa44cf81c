"""The local API's commands, run against the node (arguments arrive already validated)."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import __version__
from .backup import write_backup
from .config import Config
from .envelope2 import PROTECTION, version_of
from .errors import EnvelopeError, IpcError, StorageError
from .identity import Identity
from .ids import IdError, fingerprint, format_id, parse_id
from .ipc_protocol import check_body_size
from .mailer import Mailer, MailError
from .outbox_states import OutboxState
from .store import InboxMail, OutboxMail, Store

if TYPE_CHECKING:
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


def _uuid(text: str) -> bytes:
    return uuidlib.UUID(text).bytes


def _uuid_text(raw: bytes) -> str:
    return str(uuidlib.UUID(bytes=raw))


def _protection(envelope: bytes | None) -> str | None:
    """How a sealed outgoing mail is protected; None before it is sealed."""
    if envelope is None:
        return None
    try:
        return PROTECTION[version_of(envelope, len(envelope))]
    except EnvelopeError:
        return None


class IpcHandlers:
    def __init__(self, node: NodeParts) -> None:
        self.node = node
        self.commands: dict[str, Callable[[Args], Awaitable[Any] | Any]] = {
            "mail": self.mail, "list": self.list, "read": self.read, "delete": self.delete,
            "status": self.status, "resend": self.resend, "contacts": self.contacts, "peers": self.peers,
            "info": self.info, "save": self.save, "stop": self.stop, "backup": self.backup,
        }
        self._backup_running = False   # one archive at a time: each costs a database copy

    @property
    def store(self) -> Store:
        assert self.node.store is not None
        return self.node.store

    async def dispatch(self, cmd: str, args: Args) -> Any:
        result = self.commands[cmd](args)
        if asyncio.iscoroutine(result):
            result = await result
        return result

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

    def inbox_item(self, mail: InboxMail) -> dict[str, Any]:
        return {"uuid": _uuid_text(mail.uuid), "from": format_id(mail.sender),
                "alias": self.alias(mail.sender), "subject": mail.subject,
                "created_at": mail.created_at, "received_at": mail.received_at,
                "new": bool(mail.is_new)}

    def outbox_item(self, mail: OutboxMail) -> dict[str, Any]:
        return {"uuid": _uuid_text(mail.uuid), "to": format_id(mail.recipient),
                "alias": self.alias(mail.recipient), "subject": mail.subject,
                "created_at": mail.created_at, "state": mail.state, "updated_at": mail.updated_at}

    # ----- commands -------------------------------------------------------------------------

    def mail(self, args: Args) -> dict[str, Any]:
        recipient = self.resolve_peer(args["to"])
        check_body_size(args["body"], self.node.config.mail.max_body_bytes)
        try:
            mail = self.node.mailer.submit(recipient, args["subject"], args["body"])
        except MailError as exc:
            raise IpcError("bad_argument", str(exc)) from None
        return {"uuid": _uuid_text(mail.uuid), "state": mail.state}

    def list(self, args: Args) -> dict[str, Any]:
        folder, limit, offset = args["folder"], args["limit"], args["offset"]
        if folder == "inbox":
            total, mails = self.store.list_inbox(args["new_only"], limit, offset)
            items = [self.inbox_item(mail) for mail in mails]
        else:
            total, outgoing = self.store.list_outbox(limit, offset)
            items = [self.outbox_item(mail) for mail in outgoing]
        return {"folder": folder, "total": total, "items": items}

    def read(self, args: Args) -> dict[str, Any]:
        uuid = _uuid(args["uuid"])
        mail = self.store.read_inbox(uuid)
        if mail is None:
            raise IpcError("not_found", f"no mail {args['uuid']} in the inbox")
        self.store.mark_read(uuid)
        item = self.inbox_item(mail)
        # Only mail whose signature and key hash checked out ever reaches the inbox.
        item.update(to=format_id(mail.recipient), body=mail.body, verified=True,
                    protection=PROTECTION.get(self.store.inbox_envelope_version(uuid) or 1))
        return item

    def delete(self, args: Args) -> dict[str, Any]:
        uuid = _uuid(args["uuid"])
        if not (self.store.delete_inbox(uuid) or self.store.delete_outbox(uuid)):
            raise IpcError("not_found", f"no mail {args['uuid']}")
        return {"uuid": args["uuid"], "deleted": True}

    def status(self, args: Args) -> dict[str, Any]:
        uuid = _uuid(args["uuid"])
        mail = self.store.get_outbox(uuid)
        if mail is None or mail.kind != "mail":
            raise IpcError("not_found", f"no mail {args['uuid']} in the outbox")
        history = [{"at": at, "state": state, "detail": detail}
                   for at, state, detail in self.store.outbox_history(uuid)]
        return {"uuid": args["uuid"], "to": format_id(mail.recipient),
                "alias": self.alias(mail.recipient), "state": mail.state, "reason": mail.reason,
                "stored_on": mail.stored_on, "created_at": mail.created_at,
                "expires_at": mail.expires_at, "history": history,
                "protection": _protection(mail.envelope)}

    def resend(self, args: Args) -> dict[str, Any]:
        uuid = _uuid(args["uuid"])
        mail = self.store.get_outbox(uuid)
        if mail is None or mail.kind != "mail":
            raise IpcError("not_found", f"no mail {args['uuid']} in the outbox")
        if not self.node.mailer.resend(uuid):
            raise IpcError("bad_state", f"mail {args['uuid']} is {mail.state}; only failed or expired mail "
                                        "can be resent")
        return {"uuid": args["uuid"], "state": str(OutboxState.QUEUED)}

    def contacts(self, args: Args) -> dict[str, Any]:
        action = args["action"]
        if action == "add":
            node_id = self.resolve_peer(args["id"])
            self.store.add_contact(args["alias"], node_id)
            return {"alias": args["alias"], "id": format_id(node_id)}
        if action == "remove":
            return {"alias": args["alias"], "removed": self.store.remove_contact(args["alias"])}
        return {"contacts": [{"alias": alias, "id": format_id(node_id)}
                             for alias, node_id in self.store.contacts()]}

    def peers(self, args: Args) -> dict[str, Any]:
        now = asyncio.get_running_loop().time()
        links = [{"id": format_id(link.peer_id), "address": f"{link.address[0]}:{link.address[1]}",
                  "direction": link.direction, "age": round(now - link.established_at, 3)}
                 for link in self.node.net.links.values()]
        return {"links": links, "routing_table_size": len(self.node.overlay.table)}

    def info(self, args: Args) -> dict[str, Any]:
        node, cfg = self.node, self.node.config
        total, new = self.store.count_inbox()
        held, _ = self.store.held_stats()
        return {
            "id": node.identity.id_text, "fingerprint": fingerprint(node.identity.node_id),
            "version": __version__, "uptime": round(node.clock() - node.started_at, 1),
            "listen": [f"{cfg.address}:{node.port}"], "ipc": f"{cfg.ipc.address}:{node.ipc_port}",
            "reachability": {**node.reach.describe(), "relays": node.relays.describe(),
                             "punch": node.puncher.describe()},
            "counts": {"inbox": total, "new": new, "outbox": sum(self.store.count_outbox().values()),
                       "held": held, "links": len(node.net.links),
                       "routing": len(node.overlay.table)},
        }

    def save(self, args: Args) -> dict[str, Any]:
        self.node.overlay.save()   # mail is committed as it happens; this persists the table
        return {"saved": True}

    async def backup(self, args: Args) -> dict[str, Any]:
        """Write an encrypted archive of this node to an absolute path on its machine (backup.py)."""
        node, target = self.node, Path(args["file"])
        if not target.is_absolute():
            raise IpcError("bad_argument", "file: give an absolute path (the CLI does)")
        if node.storage_key is None:
            raise IpcError("unavailable", "this node runs without a storage key (tests only)")
        if self._backup_running:
            raise IpcError("busy", "a backup is being written already; try again when it is done")
        self._backup_running = True
        try:
            size = await asyncio.to_thread(write_backup, node.config.data_dir, node.storage_key,
                                           target, node.identity.id_text, int(node.clock()))
        except StorageError as exc:
            raise IpcError("backup_failed", str(exc)) from None
        finally:
            self._backup_running = False
        return {"file": str(target), "bytes": size, "id": node.identity.id_text}

    def stop(self, args: Args) -> dict[str, Any]:
        # Reply first: stopping closes this very connection.
        asyncio.get_running_loop().call_later(0.05, self.node.request_stop)
        return {"stopping": True}
