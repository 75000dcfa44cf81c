#!/usr/bin/env python3
"""Encrypted storage: what SQLCipher and the key hierarchy cost, against the targets of issue 15.

- key derivation at start: Argon2id unwrapping of the storage key (default parameters) plus the
  PBKDF2 of the PKCS#8 private key (600,000 rounds, setup's default); target <= 1 s together;
- listing 10,000 mails: `Store.list_inbox` returning all 10,000 (warm, and cold = open + list);
  target <= 50 ms encrypted;
- sustained throughput: bursts of mail between two linked in-process nodes (submit until every
  receipt is verified: envelope crypto, links and both databases), encrypted within 10 % of plain
  SQLite in the same run (runs interleaved, best of 3); and the store alone, mails stored one
  transaction each, read, marked and half deleted, the worst case for the page encryption;
- per-value AES-GCM, the alternative: the cost of decrypting subject and body of 10,000 rows;
- memory: what importing sqlcipher3 adds to an interpreter, and VmRSS / VmHWM of two real node
  processes (server_app.py, default Argon2id) after exchanging a mail.

Usage: .venv/bin/python bench/storage.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from fluxchat.vault_format import DEFAULT_KDF  # noqa: E402

# Real nodes started below must use the default cost, not the tests' cheap one.
os.environ["FLUXCHAT_STORAGE_KDF_MEMORY_KIB"] = str(DEFAULT_KDF.memory_kib)
os.environ["FLUXCHAT_STORAGE_KDF_ITERATIONS"] = str(DEFAULT_KDF.iterations)

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from bench.delivery import burst_in_process, linked  # noqa: E402
from bench.lablib import BenchNode, InboxWatch, ReceiptWatch, quiet_logs, write_results  # noqa: E402
from fluxchat.identity import encrypt_private_key, load_identity  # noqa: E402
from fluxchat.sqldb import open_database  # noqa: E402
from fluxchat.store import InboxMail, Store  # noqa: E402
from fluxchat.vault import create, unlock  # noqa: E402
from tests.keys import (  # noqa: E402
    TEST_PASSWORD,
    identity,
    install_identity,
    key_dir,  # noqa: E402
)
from tests.lab import ProcessNode  # noqa: E402

KEY = b"\x42" * 32
BODY = "A line of a letter, long enough to look like mail. " * 20   # about 1 KB


def mail(i: int) -> InboxMail:
    return InboxMail(i.to_bytes(16, "big"), b"a" * 32, b"b" * 32, f"subject {i}", BODY, i, i)


def bulk_fill(path: Path, key: bytes | None, count: int) -> None:
    Store.open(path, key).close()
    db = open_database(path, key)
    db.execute("BEGIN")
    db.executemany("INSERT INTO inbox (uuid, sender, recipient, subject, body, created_at, "
                   "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   ((m.uuid, m.sender, m.recipient, m.subject, m.body, m.created_at,
                     m.received_at) for m in map(mail, range(count))))
    db.execute("COMMIT")
    db.close()


def timed(job: Any, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        job()
        best = min(best, time.perf_counter() - start)
    return best


def key_derivation(tmp: Path) -> dict[str, float]:
    data = tmp / "kdf"
    install_identity(0, data)
    (data / "private_key.pem").write_bytes(
        encrypt_private_key(identity(0).private_key, TEST_PASSWORD, 600_000))
    create(data, TEST_PASSWORD, DEFAULT_KDF)
    argon = timed(lambda: unlock(data, TEST_PASSWORD), 3)
    pbkdf2 = timed(lambda: load_identity(data, TEST_PASSWORD), 3)
    return {"argon2id_s": argon, "pkcs8_pbkdf2_s": pbkdf2, "total_s": argon + pbkdf2,
            "memory_kib": DEFAULT_KDF.memory_kib, "iterations": DEFAULT_KDF.iterations}


def listing(tmp: Path, count: int) -> dict[str, float]:
    out = {}
    for name, key in (("plain", None), ("encrypted", KEY)):
        path = tmp / f"list-{name}.db"
        bulk_fill(path, key, count)
        store = Store.open(path, key)
        warm = timed(lambda s=store: s.list_inbox(False, count, 0), 5)
        page = timed(lambda s=store: s.list_inbox(False, 50, 0), 20)
        store.close()

        def cold(p: Path = path, k: bytes | None = key) -> None:
            s = Store.open(p, k)
            s.list_inbox(False, count, 0)
            s.close()
        out[f"{name}_all_warm_ms"] = warm * 1000
        out[f"{name}_all_cold_ms"] = timed(cold, 3) * 1000
        out[f"{name}_page50_ms"] = page * 1000
    return out


def throughput(tmp: Path, count: int) -> dict[str, float]:
    best = {"plain": 0.0, "encrypted": 0.0}
    for round_ in range(3):
        for name, key in (("plain", None), ("encrypted", KEY)):
            path = tmp / f"tp-{name}-{round_}.db"
            store = Store.open(path, key)
            start = time.perf_counter()
            for i in range(count):
                store.add_inbox(mail(i))
            for i in range(count):
                store.read_inbox(mail(i).uuid)
                store.mark_read(mail(i).uuid)
            for i in range(0, count, 2):
                store.delete_inbox(mail(i).uuid)
            rate = count / (time.perf_counter() - start)
            store.close()
            best[name] = max(best[name], rate)
    return {"plain_mails_per_s": best["plain"], "encrypted_mails_per_s": best["encrypted"],
            "encrypted_vs_plain": best["encrypted"] / best["plain"]}


async def node_burst(tmp: Path, storage_key: bytes | None, count: int, run: int) -> float:
    """Mails/s from submit until every receipt is back, between two linked in-process nodes."""
    directory = tmp / f"burst-{run}-{'enc' if storage_key else 'plain'}"
    a = BenchNode(directory, key_dir(0), [], storage_key=storage_key)
    await a.start()
    b = BenchNode(directory, key_dir(1), [a.address], storage_key=storage_key)
    try:
        await b.start()
        assert a.node is not None and b.node is not None
        await linked(a.node, b.node_id)
        result = await burst_in_process(a.node, b.node_id, InboxWatch(b.node),
                                        ReceiptWatch(a.node), count)
        return float(result["mails_per_s_to_receipt"] or 0.0)
    finally:
        await b.stop()
        await a.stop()


def node_throughput(tmp: Path, count: int) -> dict[str, float]:
    quiet_logs()
    best = {"plain": 0.0, "encrypted": 0.0}
    for run in range(3):
        for name, key in (("plain", None), ("encrypted", KEY)):
            best[name] = max(best[name], asyncio.run(node_burst(tmp, key, count, run)))
    return {"plain_mails_per_s": best["plain"], "encrypted_mails_per_s": best["encrypted"],
            "encrypted_vs_plain": best["encrypted"] / best["plain"], "burst": count}


def per_value_alternative(count: int) -> dict[str, float]:
    aead, nonce = AESGCM(KEY), b"\0" * 12
    rows = [(aead.encrypt(nonce, f"subject {i}".encode(), b"row"),
             aead.encrypt(nonce, BODY.encode(), b"row")) for i in range(count)]
    cost = timed(lambda: [(aead.decrypt(nonce, s, b"row"), aead.decrypt(nonce, b, b"row"))
                          for s, b in rows], 3)
    return {"decrypt_10k_rows_ms": cost * 1000}


def import_cost() -> dict[str, int]:
    code = ("import sqlite3, {mod}\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])")
    kib = {}
    for mod in ("sqlite3", "sqlcipher3"):
        out = subprocess.run([sys.executable, "-c", code.format(mod=mod)], capture_output=True,
                             text=True, check=True)
        kib[mod] = int(out.stdout)
    return {"interpreter_with_sqlite3_kib": kib["sqlite3"],
            "interpreter_with_sqlcipher3_kib": kib["sqlcipher3"],
            "sqlcipher3_adds_kib": kib["sqlcipher3"] - kib["sqlite3"]}


def node_memory(tmp: Path) -> dict[str, Any]:
    a = ProcessNode(tmp / "nodes", 0, [])
    b = None
    try:
        a.start(timeout=60)
        b = ProcessNode(tmp / "nodes", 1, [a.address])
        b.start(timeout=60)
        a.call("mail", {"to": identity(1).id_text, "subject": "memory", "body": BODY})
        deadline = time.monotonic() + 30
        while b.call("info")["counts"]["inbox"] < 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        status = {}
        for name, node in (("a", a), ("b", b)):
            assert node.proc is not None
            for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
                if line.startswith(("VmRSS", "VmHWM")):
                    status[f"{name}_{line.split(':')[0]}_mib"] = int(line.split()[1]) / 1024
            rollup = Path(f"/proc/{node.proc.pid}/smaps_rollup").read_text().splitlines()
            fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:]}
            status[f"{name}_private_mib"] = (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024
            status[f"{name}_shared_clean_mib"] = fields["Shared_Clean"] / 1024
        return status
    finally:
        a.stop()
        if b is not None:
            b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer mails for the throughput run")
    args = parser.parse_args()
    results: dict[str, Any] = {"load_note": "2 shared cores, other suites running"}
    with tempfile.TemporaryDirectory(prefix="fluxchat-bench-storage-") as name:
        tmp = Path(name)
        results["key_derivation"] = key_derivation(tmp)
        results["listing_10000"] = listing(tmp, 10_000)
        results["store_throughput"] = throughput(tmp, 500 if args.quick else 2000)
        results["node_throughput"] = node_throughput(tmp, 50 if args.quick else 200)
        results["per_value_aes_gcm"] = per_value_alternative(10_000)
        results["memory"] = {**import_cost(), **node_memory(tmp)}
    print(json.dumps(results, indent=1))
    write_results("storage", results)
    kd, ls, tp = results["key_derivation"], results["listing_10000"], results["node_throughput"]
    print(f"\nkey derivation at start {kd['total_s']:.2f} s (target <= 1 s); "
          f"listing 10,000 encrypted {ls['encrypted_all_warm_ms']:.1f} ms warm, "
          f"{ls['encrypted_all_cold_ms']:.1f} ms cold (target <= 50 ms); "
          f"node mail throughput encrypted/plain {tp['encrypted_vs_plain']:.1%} (target >= 90 %); "
          f"store alone {results['store_throughput']['encrypted_vs_plain']:.1%}")


if __name__ == "__main__":
    main()
