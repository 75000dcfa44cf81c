#!/usr/bin/env python3
"""Crypto limits against what FluxChat does with them, all measured in one run.

- raw RSA private-key operations per second (PSS sign, OAEP decrypt), RSA-4096 and RSA-2048;
- envelopes sealed / opened per second (1 KiB body) and their ratio to the private-op rate:
  sealing costs one private op (sign) plus one public op (OAEP wrap), opening one private op
  (OAEP unwrap) plus one public op (verify), so the ratio says how close we run to the limit;
- new links (protocol v2, Ed25519 link keys certified by RSA-4096 identities): two Session
  objects in memory, and real TLS 1.3 links between two PeerNets on 127.0.0.1 (dial to
  established), each for a known dialer (no proof of work) and for a dialer that must pay
  the default challenge.min = 16 bits (an unknown one, or any while the acceptor is busy).

Usage: python3 bench/crypto.py [--quick] [--v2-only [SECONDS]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from cryptography.hazmat.primitives import hashes  # noqa: E402

from bench import keypool  # noqa: E402
from bench.lablib import parse_args, print_table, quiet_logs, summary_ms, write_results  # noqa: E402
from fluxchat import envelope2  # noqa: E402
from fluxchat import messages as m  # noqa: E402
from fluxchat import pow as work  # noqa: E402
from fluxchat.cbor import dumps, loads  # noqa: E402
from fluxchat.envelope import OAEP, MailContent, open_envelope, seal  # noqa: E402
from fluxchat.handshake import certificate_of  # noqa: E402
from fluxchat.identity import PSS, Identity  # noqa: E402
from fluxchat.linkkeys import LinkCredentials  # noqa: E402
from fluxchat.mailkeys import SECRET_BYTES, MailKeySecrets, RecordCache, make_record, prekey_public  # noqa: E402
from fluxchat.peer_net import NetLimits, PeerNet  # noqa: E402
from fluxchat.session import Established, LinkContext, Session, SessionConfig, WorkNeeded  # noqa: E402
from fluxchat.workpolicy import WorkLimits, WorkPolicy  # noqa: E402
from tests.keys import identity, identity_4096  # noqa: E402

BODY = "x" * 1024
DEFAULT_DIFFICULTY = 16   # config challenge.min default
MAX_DIFFICULTY = 24       # config challenge.max default


def rate(op: Callable[[], Any], seconds: float) -> float:
    """Calls per second of `op`, run for about `seconds` (after one warm-up call)."""
    op()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        op()
        count += 1
    return count / elapsed


def best_rates(ops: dict[str, Callable[[], Any]], seconds: float, rounds: int) -> dict[str, float]:
    """Each op measured in `rounds` interleaved slices; the best slice counts. The machine
    is shared, so the best slice is the closest to what the code costs on an idle core,
    and interleaving exposes the limit and our code to the same conditions."""
    best = dict.fromkeys(ops, 0.0)
    for _ in range(rounds):
        for name, op in ops.items():
            best[name] = max(best[name], rate(op, seconds / rounds))
    return best


# ----- RSA and envelopes ---------------------------------------------------------------


def rsa_ops(sender: Identity, recipient: Identity) -> tuple[dict[str, Callable[[], Any]], int]:
    """Raw RSA operations of the sender's key size, and sealing / opening envelopes."""
    me, public = sender.private_key, sender.private_key.public_key()
    message = b"fluxchat-mail-v1\x00" + os.urandom(96)
    wrapped = recipient.private_key.public_key().encrypt(os.urandom(32), OAEP)
    signature = me.sign(message, PSS, hashes.SHA256())

    def content() -> MailContent:
        return MailContent("mail", os.urandom(16), sender.node_id, recipient.node_id,
                           int(time.time()), "benchmark", BODY, b"")

    def do_seal() -> bytes:
        return seal(content(), sender, recipient.public_der, int(time.time()) + 3600,
                    os.urandom(32), os.urandom(12))

    sample = do_seal()
    ops = {
        "sign_per_s": lambda: me.sign(message, PSS, hashes.SHA256()),
        "oaep_decrypt_per_s": lambda: recipient.private_key.decrypt(wrapped, OAEP),
        "verify_per_s": lambda: public.verify(signature, message, PSS, hashes.SHA256()),
        "oaep_encrypt_per_s": lambda: public.encrypt(os.urandom(32), OAEP),
        "sealed_per_s": do_seal,
        "opened_per_s": lambda: open_envelope(sample, recipient),
    }
    return ops, len(sample)


def rsa_section(label: str, sender: Identity, recipient: Identity, seconds: float,
                rounds: int) -> dict[str, Any]:
    """Sender and recipient keys of the same size: the sign limit is the sender's key (sealing
    signs with it), the decrypt limit the recipient's (opening unwraps with it)."""
    ops, size = rsa_ops(sender, recipient)
    best = best_rates(ops, seconds, rounds)
    return {"label": label, **best, "envelope_bytes": size,
            "seal_ratio": best["sealed_per_s"] / best["sign_per_s"],
            "open_ratio": best["opened_per_s"] / best["oaep_decrypt_per_s"]}


# ----- mail keys: envelope v2 against HPKE + Ed25519 ----------------------------------------


def v2_section(sender: Identity, recipient: Identity, seconds: float,
               rounds: int) -> dict[str, Any]:
    """Envelope v2 seal/open (1 KiB body) beside the primitives it stands on, same run.

    Limit for sealing: one HPKE seal + one Ed25519 sign of the same sizes; for opening: one
    HPKE open + one Ed25519 verify (the sender's record is RSA-checked once, then cached)."""
    s_secrets, r_secrets = MailKeySecrets(os.urandom(SECRET_BYTES)), \
        MailKeySecrets(os.urandom(SECRET_BYTES))
    now = int(time.time())
    s_record = make_record(sender, s_secrets, now, now + 86400)
    r_record = make_record(recipient, r_secrets, now, now + 86400)
    signer = envelope2.MailSigner(sender.public_der, sender.node_id, s_record.encode(),
                                  s_secrets.signing_key())
    prekeys = {r_record.prekey_id: r_secrets.prekey_private()}
    cache = RecordCache()

    def do_seal() -> bytes:
        content = MailContent("mail", os.urandom(16), sender.node_id, recipient.node_id, now,
                              "benchmark", BODY, b"")
        return envelope2.seal(content, signer, r_record, now + 3600)

    sample = do_seal()
    # The primitives get exactly the sizes a v2 envelope gives them.
    header, blob = loads(sample)
    public = prekey_public(r_record.prekey)
    private = prekeys[r_record.prekey_id]
    info = envelope2.SEAL_CONTEXT + dumps(header)
    plaintext = envelope2.SUITE.decrypt(blob, private, info=info)
    inner = loads(plaintext)[0]
    sealed = envelope2.SUITE.encrypt(plaintext, public, info=info)
    sign_key = s_secrets.signing_key()
    signed = envelope2.MAIL_CONTEXT + dumps(header) + inner
    signature = sign_key.sign(signed)
    verify_key = sign_key.public_key()
    ops = {
        "hpke_seal_per_s": lambda: envelope2.SUITE.encrypt(plaintext, public, info=info),
        "hpke_open_per_s": lambda: envelope2.SUITE.decrypt(sealed, private, info=info),
        "ed25519_sign_per_s": lambda: sign_key.sign(signed),
        "ed25519_verify_per_s": lambda: verify_key.verify(signature, signed),
        "sealed_per_s": do_seal,
        "opened_per_s": lambda: envelope2.open_v2(sample, recipient.node_id, prekeys, cache),
    }
    best = best_rates(ops, seconds, rounds)
    seal_limit = 1 / (1 / best["hpke_seal_per_s"] + 1 / best["ed25519_sign_per_s"])
    open_limit = 1 / (1 / best["hpke_open_per_s"] + 1 / best["ed25519_verify_per_s"])
    return {**best, "envelope_bytes": len(sample), "seal_limit_per_s": seal_limit,
            "open_limit_per_s": open_limit, "seal_ratio": best["sealed_per_s"] / seal_limit,
            "open_ratio": best["opened_per_s"] / open_limit}


# ----- new links in memory -----------------------------------------------------------------


def session_config(me: Identity, difficulty: int) -> SessionConfig:
    """`difficulty` 0: the acceptor knows the dialer and asks no work."""
    link = LinkCredentials.issue(me, os.urandom(32), int(time.time()))
    return SessionConfig(identity=me, contact="public:25001", difficulty=difficulty,
                         max_difficulty=MAX_DIFFICULTY, link=link)


def memory_handshake(dialer: SessionConfig, acceptor: SessionConfig) -> dict[str, float]:
    """One full handshake; returns wall time split into proof of work, dialer, acceptor."""
    assert acceptor.link is not None
    spent = {"work": 0.0, "dialer": 0.0, "acceptor": 0.0}
    context = LinkContext(os.urandom(48), int(time.time()))   # what TLS would give both ends
    start = time.perf_counter()
    d = Session.dialer(dialer, certificate_of(acceptor.link), context, 0.0,
                       acceptor.identity.node_id)
    t = time.perf_counter()
    a = Session.acceptor(acceptor, os.urandom(32), context, 0.0, "127.0.0.1")
    spent["acceptor"] += time.perf_counter() - t
    spent["dialer"] += t - start
    opened = 0
    for _ in range(10):
        out_d, out_a = d.data_to_send(), a.data_to_send()
        if not out_d and not out_a:
            break
        t = time.perf_counter()
        events_a = a.receive_data(out_d, 0.0) if out_d else []
        spent["acceptor"] += time.perf_counter() - t
        t = time.perf_counter()
        events_d = d.receive_data(out_a, 0.0) if out_a else []
        spent["dialer"] += time.perf_counter() - t
        for event in events_d:
            if isinstance(event, WorkNeeded):
                t = time.perf_counter()
                counter = work.solve(event.nonce, event.dialer_id, event.acceptor_id,
                                     event.difficulty)
                spent["work"] += time.perf_counter() - t
                t = time.perf_counter()
                d.work_done(counter)
                spent["dialer"] += time.perf_counter() - t
        opened += sum(isinstance(e, Established) for e in events_a + events_d)
    if opened != 2:
        raise RuntimeError("in-memory handshake did not complete")
    spent["total"] = time.perf_counter() - start
    return spent


def memory_handshakes(a: Identity, b: Identity, difficulty: int, count: int) -> dict[str, Any]:
    """Both records are verified once before timing (the acceptor's cache, as for a peer
    seen before); a new record costs one RSA-4096 verification more (~0.1 ms)."""
    dialer, acceptor = session_config(a, difficulty), session_config(b, difficulty)
    runs = [memory_handshake(dialer, acceptor) for _ in range(count + 1)][1:]
    total = sum(r["total"] for r in runs)
    acceptor_cpu = sum(r["acceptor"] for r in runs) / count
    return {"difficulty": difficulty, "count": count, "per_s": count / total,
            "latency_ms": summary_ms([r["total"] for r in runs]),
            "work_ms_mean": 1000 * sum(r["work"] for r in runs) / count,
            "dialer_ms_mean": 1000 * sum(r["dialer"] for r in runs) / count,
            "acceptor_ms_mean": 1000 * acceptor_cpu,
            "acceptor_capacity_per_s": 1 / acceptor_cpu}


# ----- new links over TLS ----------------------------------------------------------------------


async def tls_handshakes(a: Identity, b: Identity, difficulty: int,
                         count: int) -> dict[str, Any]:
    """Dial to established, one link at a time. difficulty 0: the default policy, where the
    acceptor knows the dialer after the first link (not timed); otherwise every dialer pays
    `difficulty` bits (the acceptor's policy as while it is busy)."""
    limits = NetLimits(auth_timeout=10, request_timeout=10, max_links=16, max_handshakes=8,
                       connections_per_second=1e6)

    async def noop(link: Any, message: m.Message) -> m.Message | None:
        return None

    def net(me: Identity) -> PeerNet:
        return PeerNet(session_config(me, difficulty or DEFAULT_DIFFICULTY), limits, noop,
                       lambda link: None, lambda link: None)

    dialer, acceptor = net(a), net(b)
    if difficulty:
        acceptor.work = WorkPolicy(WorkLimits(difficulty, busy_handshakes=0))
    port = await acceptor.listen("127.0.0.1", 0)
    times: list[float] = []
    try:
        for _ in range(count + 1):
            start = time.perf_counter()
            link = await dialer.dial("127.0.0.1", port, b.node_id)
            times.append(time.perf_counter() - start)
            link.close(m.ErrorCode.SHUTDOWN, "benchmark")
            while dialer.links or acceptor.links:   # both ends forget the link
                await asyncio.sleep(0.001)
    finally:
        await dialer.close()
        await acceptor.close()
    times = times[1:]   # the first pays for warm-up and makes the dialer known
    return {"difficulty": difficulty, "count": count, "per_s_sequential": count / sum(times),
            "latency_ms": summary_ms(times)}


# ----- report -------------------------------------------------------------------------------


def report_v2(v2: dict[str, Any]) -> None:
    print_table("Envelope v2 (mail keys) vs HPKE MLKEM768_X25519 + Ed25519 (1 KiB body, one core)",
                ["HPKE seal/s", "Ed sign/s", "seal limit/s", "sealed/s", "seal ratio",
                 "HPKE open/s", "Ed verify/s", "open limit/s", "opened/s", "open ratio", "bytes"],
                [[v2["hpke_seal_per_s"], v2["ed25519_sign_per_s"], v2["seal_limit_per_s"],
                  v2["sealed_per_s"], f"{v2['seal_ratio']:.1%}", v2["hpke_open_per_s"],
                  v2["ed25519_verify_per_s"], v2["open_limit_per_s"], v2["opened_per_s"],
                  f"{v2['open_ratio']:.1%}", v2["envelope_bytes"]]])


def report(rsa: list[dict[str, Any]], v2: dict[str, Any], memory: list[dict[str, Any]],
           tls: list[dict[str, Any]]) -> None:
    print_table("RSA private-key limit vs envelopes (1 KiB body, one core)",
                ["key", "sign/s", "OAEP dec/s", "verify/s", "OAEP enc/s", "sealed/s",
                 "seal ratio", "opened/s", "open ratio"],
                [[r["label"], r["sign_per_s"], r["oaep_decrypt_per_s"], r["verify_per_s"],
                  r["oaep_encrypt_per_s"], r["sealed_per_s"], f"{r['seal_ratio']:.1%}",
                  r["opened_per_s"], f"{r['open_ratio']:.1%}"] for r in rsa])
    report_v2(v2)
    sign = rsa[0]["sign_per_s"]
    print_table(f"New links (v2: Ed25519 link keys), RSA-4096 identities (raw RSA-4096 sign: "
                f"{sign:,.0f}/s); PoW bits 0 = known dialer",
                ["mode", "PoW bits", "n", "handshakes/s", "median ms", "p95 ms", "PoW ms",
                 "dialer ms", "acceptor ms", "acceptor cap/s"],
                [["in memory", r["difficulty"], r["count"], r["per_s"], r["latency_ms"]["median"],
                  r["latency_ms"]["p95"], r["work_ms_mean"], r["dialer_ms_mean"],
                  r["acceptor_ms_mean"], r["acceptor_capacity_per_s"]] for r in memory]
                + [["TLS loopback", r["difficulty"], r["count"], r["per_s_sequential"],
                    r["latency_ms"]["median"], r["latency_ms"]["p95"], "", "", "", ""]
                   for r in tls])


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--v2-only", type=float, nargs="?", const=30.0, default=None,
                        metavar="SECONDS", help="only envelope v2 against its limit, for "
                        "about SECONDS (30): quick before/after comparisons")


def v2_only(sender: Identity, recipient: Identity, seconds: float,
            load_before: tuple[float, float, float]) -> None:
    v2 = v2_section(sender, recipient, seconds / 6, 10)   # six ops share the time
    report_v2(v2)
    print(f"load average before / after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f}")
    write_results("crypto_v2", {"envelope_v2": v2, "body_bytes": len(BODY),
                                "seconds_per_op": seconds / 6, "rounds": 10,
                                "loadavg_before": load_before, "loadavg_after": os.getloadavg()})


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], options)
    quiet_logs()
    seconds, rounds, shakes = (1.5, 3, 15) if args.quick else (12.0, 8, 60)
    big_a, big_b = identity_4096(), keypool.load(keypool.ensure_4096())
    load_before = os.getloadavg()
    if args.v2_only is not None:
        v2_only(big_a, big_b, args.v2_only, load_before)
        return
    rsa = [rsa_section("RSA-4096", big_a, big_b, seconds, rounds),
           rsa_section("RSA-2048", identity(0), identity(1), seconds, rounds)]
    v2 = v2_section(big_a, big_b, seconds, rounds)
    memory = [memory_handshakes(big_a, big_b, DEFAULT_DIFFICULTY, shakes),
              memory_handshakes(big_a, big_b, 0, shakes)]
    tls = [asyncio.run(tls_handshakes(big_a, big_b, DEFAULT_DIFFICULTY, shakes)),
           asyncio.run(tls_handshakes(big_a, big_b, 0, shakes))]
    report(rsa, v2, memory, tls)
    write_results("crypto", {"rsa": rsa, "envelope_v2": v2, "handshakes_memory": memory, "handshakes_tls": tls,
                             "body_bytes": len(BODY), "seconds_per_op": seconds, "rounds": rounds,
                             "loadavg_before": load_before, "loadavg_after": os.getloadavg()})


if __name__ == "__main__":
    main()
