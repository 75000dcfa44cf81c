"""Conversation commands of the node API: reply, conversations, one conversation, read/unread,
listing received and sent mail. Mixed into NodeApi (ipc_handlers.py), which supplies the store
and the resolvers."""

from __future__ import annotations

from typing import Any

from .envelope2 import PROTECTION, version_of
from .errors import EnvelopeError, IpcError
from .ids import format_id
from .ipc_commands import MAX_SUBJECT
from .store import InboxMail, OutboxMail, Store
from .uuids import uuid_text

Args = dict[str, Any]
Mail = InboxMail | OutboxMail


def protection_of_sent(envelope: bytes | None) -> str | None:
    """How a sealed outgoing mail is protected; None before it is sealed."""
    if envelope is None:
        return None
    try:
        return PROTECTION[version_of(envelope, len(envelope))]
    except EnvelopeError:
        return None


class _Api:
    """What the conversation commands need from NodeApi."""

    @property
    def store(self) -> Store:
        raise NotImplementedError

    def alias(self, node_id: bytes) -> str | None:
        raise NotImplementedError

    def resolve_uuid(self, text: str) -> bytes:
        raise NotImplementedError

    def resolve_peer(self, text: str) -> bytes:
        raise NotImplementedError

    async def submit(self, recipient: bytes, subject: str, body: str,
                     ref: bytes | None = None) -> Args:
        raise NotImplementedError


def mail_item(api: _Api, mail: Mail) -> Args:
    """One mail as every face shows it. `at` orders a conversation: arrival for received
    mail, creation for sent mail (both by our own clock)."""
    ref = uuid_text(mail.ref) if mail.ref else None
    if isinstance(mail, InboxMail):
        return {"uuid": uuid_text(mail.uuid), "folder": "inbox", "direction": "in",
                "peer": format_id(mail.sender), "from": format_id(mail.sender), "to": format_id(mail.recipient),
                "alias": api.alias(mail.sender), "name": mail.sender_name, "subject": mail.subject,
                "body": mail.body, "created_at": mail.created_at, "received_at": mail.received_at,
                "at": mail.received_at, "new": bool(mail.is_new), "ref": ref}
    return {"uuid": uuid_text(mail.uuid), "folder": "sent", "direction": "out",
            "peer": format_id(mail.recipient), "to": format_id(mail.recipient),
            "alias": api.alias(mail.recipient), "subject": mail.subject, "body": mail.body,
            "created_at": mail.created_at, "at": mail.created_at, "state": mail.state,
            "reason": mail.reason, "updated_at": mail.updated_at, "ref": ref}


def _summary(api: _Api, mail: Mail) -> Args:
    item = mail_item(api, mail)
    del item["body"]
    return item


def reply_subject(subject: str) -> str:
    text = subject if subject[:3].lower() == "re:" else f"Re: {subject}"
    return text[:MAX_SUBJECT]


def quoted(mail: Mail, who: str) -> str:
    lines = mail.body.splitlines() or [""]
    return f"{who} wrote:\n" + "\n".join(f"> {line}" if line else ">" for line in lines)


class ChatCommands(_Api):
    def find_mail(self, uuid: bytes) -> Mail | None:
        """A received mail, else a sent one (mail to oneself is both: the received copy wins)."""
        mail = self.store.read_inbox(uuid)
        if mail is not None:
            return mail
        sent = self.store.get_outbox(uuid)
        return sent if sent is not None and sent.kind == "mail" else None

    async def reply(self, args: Args) -> Args:
        """A mail to the other side of `uuid`'s conversation, naming `uuid` in its signed content."""
        uuid = self.resolve_uuid(args["uuid"])
        original = self.find_mail(uuid)
        if original is None:
            raise IpcError("not_found", f"no mail {args['uuid']}")
        peer = original.sender if isinstance(original, InboxMail) else original.recipient
        body = args["body"]
        if args["quote"]:
            who = self.alias(original.sender) if isinstance(original, InboxMail) else "You"
            body = f"{body}\n\n{quoted(original, who or format_id(peer))}"
        subject = args["subject"] if args["subject"] is not None else reply_subject(original.subject)
        sent = await self.submit(peer, subject, body, uuid)
        return {**sent, "ref": uuid_text(uuid)}

    def list(self, args: Args) -> Args:
        folder, limit, offset = args["folder"], args["limit"], args["offset"]
        mails: list[Mail]
        if folder == "inbox":
            total, inbox = self.store.list_inbox(args["new_only"], limit, offset)
            mails = list(inbox)
        else:
            if args["new_only"]:
                raise IpcError("bad_argument", "new_only: sent mail has no unread state")
            total, sent = self.store.list_outbox(limit, offset)
            mails = list(sent)
        return {"folder": folder, "total": total, "offset": offset,
                "items": [_summary(self, mail) for mail in mails]}

    def read(self, args: Args) -> Args:
        uuid = self.resolve_uuid(args["uuid"])
        mail = self.find_mail(uuid)
        if mail is None:
            raise IpcError("not_found", f"no mail {args['uuid']}")
        item = mail_item(self, mail)
        if isinstance(mail, InboxMail):
            if args["mark"]:
                self.store.mark_read(uuid)
            # Only mail whose signature and key hash checked out ever reaches the inbox.
            item["verified"] = True
            item["protection"] = PROTECTION.get(self.store.inbox_envelope_version(uuid) or 1)
        else:
            item["protection"] = protection_of_sent(mail.envelope)
        return item

    def mark(self, args: Args) -> Args:
        uuid = self.resolve_uuid(args["uuid"])
        if not self.store.mark_read(uuid, args["read"]):
            raise IpcError("not_found", f"no received mail {args['uuid']}")
        return {"uuid": uuid_text(uuid), "new": not args["read"]}

    def conversations(self, args: Args) -> Args:
        rows = self.store.conversations(args["limit"])
        return {"conversations": [
            {"peer": format_id(peer), "alias": self.alias(peer), "name": self.store.latest_name(peer),
             "last_at": last, "unread": unread, "total": total} for peer, last, unread, total in rows]}

    def conversation(self, args: Args) -> Args:
        """The mails exchanged with one peer, oldest first; marks the received ones read."""
        peer = self.resolve_peer(args["peer"])
        mails = self.store.conversation(peer, args["limit"])
        sent = {m.uuid for m in mails if isinstance(m, OutboxMail)}
        items = [mail_item(self, m) for m in mails if isinstance(m, OutboxMail) or m.uuid not in sent]
        if args["mark_read"]:
            self.store.mark_conversation_read(peer)
        return {"peer": format_id(peer), "alias": self.alias(peer), "name": self.store.latest_name(peer),
                "items": items}
