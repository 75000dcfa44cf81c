"""The node's mail keys at run time: its own records (rotation, erasure, secrets at rest)
and other nodes' records (the key directory: serve, store, look up, publish).

Secrets at rest: each record's private halves sit in the `own_mail_keys` table only, AES-256-
GCM-wrapped under a key derived from the RSA identity key (mailkeys.wrapping_key), which the
node holds only after the key password opened it; the table row is erased, with the
database's freed pages zeroed, once no mail sealed to that prekey can still be accepted.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives import hpke

from . import messages as m
from .config import MailKeysConfig
from .envelope2 import MailSigner
from .errors import FluxError
from .identity import Identity
from .ids import short_id
from .link import Link
from .mailkeys import (
    SECRET_BYTES,
    WRAP_NONCE_BYTES,
    MailKeyError,
    MailKeyRecord,
    MailKeySecrets,
    RecordCache,
    Schedule,
    accept_for_directory,
    decode_record,
    make_record,
    refresh_wanted,
    unwrap_secrets,
    wrap_secrets,
    wrapping_key,
)
from .overlay import Overlay
from .store import Store
from .wire_fields import ErrorCode

log = logging.getLogger("fluxchat.mailkeys")
E = ErrorCode
MAX_HELD_RECORDS = 100_000
LOOKUP_GAP = 600          # seconds between directory lookups for one recipient's record
MAX_LOOKUP_MEMORY = 4096  # recipients whose last lookup time we remember


class MailKeyring:
    def __init__(self, identity: Identity, store: Store, overlay: Overlay,
                 config: MailKeysConfig, retention: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.me, self.store, self.overlay, self.config = identity, store, overlay, config
        self.clock = clock
        self.schedule = Schedule(max(1, int(config.rotation_interval * 3600)), retention)
        self.records = RecordCache()
        self.current: MailKeyRecord | None = None
        self.signer: MailSigner | None = None
        self._private: dict[bytes, hpke.MLKEM768X25519PrivateKey] = {}
        self._looked_up: dict[bytes, int] = {}
        # The newest record we hold per node, so sending and receiving need no database read.
        self._newest: OrderedDict[bytes, MailKeyRecord] = OrderedDict()
        self._wrap = wrapping_key(identity) if config.enabled else b""
        overlay.record_check = self._record_for_lookup

    def now(self) -> int:
        return int(self.clock())

    @property
    def prekeys(self) -> Mapping[bytes, hpke.MLKEM768X25519PrivateKey]:
        """Private prekeys not yet erased, by prekey id."""
        return self._private

    # ----- our own records ------------------------------------------------------------

    def load(self) -> None:
        """Unwrap the stored secrets of our records that are not yet erased."""
        for key_id, data, wrapped in self.store.own_mail_keys():
            if not self._wrap:
                break
            try:
                secrets = unwrap_secrets(self._wrap, wrapped, key_id)
                record = decode_record(data)
            except MailKeyError as exc:   # another identity's database? say so, carry on
                log.error("mail key %s: %s", key_id.hex()[:8], exc)
                continue
            self._private[key_id] = secrets.prekey_private()
            self._adopt(record, secrets)

    def _adopt(self, record: MailKeyRecord, secrets: MailKeySecrets) -> None:
        if self.current is None or record.created_at >= self.current.created_at:
            self.current = record
            self.signer = MailSigner(self.me.public_der, self.me.node_id, record.encode(),
                                     secrets.signing_key())

    def upkeep(self) -> MailKeyRecord | None:
        """Erase prekeys past their time, drop expired directory rows, and make a new
        record when one is due; returns the new record (to publish) or None."""
        now = self.now()
        for key_id in self.store.erase_own_mail_keys(now):
            self._private.pop(key_id, None)
            log.info("mail key %s erased", key_id.hex()[:8])
        self.store.expire_mail_keys(now)
        if not self.config.enabled or not self.schedule.rotation_due(self.current, now):
            return None
        secrets = MailKeySecrets(os.urandom(SECRET_BYTES))
        record = make_record(self.me, secrets, now, now + self.schedule.lifetime())
        self.store.add_own_mail_key(
            record.prekey_id, record.created_at, record.expires_at,
            self.schedule.erase_at(record), record.encode(),
            wrap_secrets(self._wrap, secrets, record.prekey_id, os.urandom(WRAP_NONCE_BYTES)))
        self._private[record.prekey_id] = secrets.prekey_private()
        self._adopt(record, secrets)
        log.info("new mail key %s, valid until %d", record.prekey_id.hex()[:8],
                 record.expires_at)
        return record

    async def publish(self) -> int:
        if self.current is None:
            return 0
        return await self.overlay.publish_mail_key(self.current.encode())

    # ----- other nodes' records ----------------------------------------------------------

    def learn(self, data: bytes, node_id: bytes, identity_der: bytes) -> MailKeyRecord:
        """Check a record of `node_id` and keep it unless a newer one is held."""
        now = self.now()
        record = self.records.check(data, node_id, identity_der)
        held = self.store.get_mail_key(node_id)
        accept_for_directory(record, decode_record(held) if held else None, now)
        self.store.put_mail_key(node_id, record.created_at, record.expires_at, data, now)
        self._remember(record)
        return record

    def _remember(self, record: MailKeyRecord) -> None:
        self._newest[record.node_id] = record
        self._newest.move_to_end(record.node_id)
        if len(self._newest) > MAX_LOOKUP_MEMORY:
            self._newest.popitem(last=False)

    def newest(self, node_id: bytes, identity_der: bytes,
               offered: MailKeyRecord | None = None) -> MailKeyRecord | None:
        """The newest record of `node_id` we know, after keeping `offered` (one that came
        checked in an envelope) if it is newer."""
        known = self.held(node_id, identity_der)
        if offered is not None and (known is None or offered.created_at > known.created_at):
            try:
                return self.learn(offered.encode(), node_id, identity_der)
            except MailKeyError:   # expired: keep answering to what we have
                return known or offered
        return known

    def held(self, node_id: bytes, identity_der: bytes) -> MailKeyRecord | None:
        """The record of `node_id` we hold, if it still verifies (expiry not checked)."""
        cached = self._newest.get(node_id)
        if cached is not None:
            return cached
        data = self.store.get_mail_key(node_id)
        if not data:
            return None
        try:
            record = self.records.check(data, node_id, identity_der)
        except MailKeyError:
            return None
        self._remember(record)
        return record

    async def record_for(self, node_id: bytes, identity_der: bytes) -> MailKeyRecord | None:
        """A record of `node_id` to seal to now, or None: then the mail goes as v1."""
        now = self.now()
        held = self.held(node_id, identity_der)
        if held is not None and held.valid_at(now) and not refresh_wanted(held, now):
            return held
        if now - self._looked_up.get(node_id, -LOOKUP_GAP) >= LOOKUP_GAP:
            self._remember_lookup(node_id, now)
            # The node itself knows its newest record: ask it first when we are linked.
            found = await self._ask_directly(node_id) or await self.overlay.find_mail_key(node_id)
            if found:
                try:
                    return self.learn(found, node_id, identity_der)
                except MailKeyError as exc:
                    log.info("record of %s not taken: %s", short_id(node_id), exc)
        return held if held is not None and held.valid_at(now) else None

    async def _ask_directly(self, node_id: bytes) -> bytes | None:
        link = self.overlay.net.links.get(node_id)
        if link is None:
            return None
        try:
            reply = await self.overlay.net.request(link.address[0], link.address[1], node_id,
                                                   lambda rid: m.FindMailKey(rid, node_id))
        except FluxError:
            return None
        if isinstance(reply, m.MailKeyReply) and reply.record \
                and self._record_for_lookup(node_id, reply.record):
            return reply.record
        return None

    def _remember_lookup(self, node_id: bytes, now: int) -> None:
        self._looked_up[node_id] = now
        if len(self._looked_up) > MAX_LOOKUP_MEMORY:
            del self._looked_up[next(iter(self._looked_up))]

    def _record_for_lookup(self, node_id: bytes, data: bytes) -> bool:
        """Whether a directory answer is a current record of `node_id` (its RSA key known)."""
        identity_der = self.store.get_key(node_id)
        if identity_der is None:
            return False
        try:
            record = self.records.check(data, node_id, identity_der)
            accept_for_directory(record, None, self.now())
        except MailKeyError:
            return False
        return True

    # ----- serving the directory ------------------------------------------------------------

    def on_find_mail_key(self, link: Link, request: m.FindMailKey) -> m.Message:
        record = b""
        if request.node_id == self.me.node_id:
            record = self.current.encode() if self.current is not None else b""
        else:
            record = self.store.get_mail_key(request.node_id) or b""
        nodes = () if record else self.overlay.closest_infos(request.node_id, link.peer_id)
        return m.MailKeyReply(request.rid, record, nodes)

    def on_store_mail_key(self, link: Link, request: m.StoreMailKey) -> m.Message:
        """Only a node's own record, over a link authenticated as that node (as for StoreKey):
        a peer cannot fill the directory with records it harvested from others."""
        try:
            record = decode_record(request.record)
        except MailKeyError as exc:
            return m.Fail(request.rid, int(E.INVALID), str(exc))
        if record.node_id != link.peer_id:
            return m.Fail(request.rid, int(E.FORBIDDEN),
                          "only the record of the node at the other end of the link is stored")
        identity_der = self.store.get_key(record.node_id)
        if identity_der is None:
            return m.Fail(request.rid, int(E.NOT_FOUND), "store the node's public key first")
        if self.store.get_mail_key(record.node_id) is None \
                and self.store.count_mail_keys() >= MAX_HELD_RECORDS:
            return m.Fail(request.rid, int(E.REFUSED), "mail key directory full")
        try:
            self.learn(request.record, record.node_id, identity_der)
        except MailKeyError as exc:
            return m.Fail(request.rid, int(E.REFUSED), str(exc))
        except FluxError as exc:
            return m.Fail(request.rid, int(E.INTERNAL), str(exc)[:200])
        return m.Ok(request.rid)
