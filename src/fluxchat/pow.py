"""Hashcash-style proof of work asked of a dialer before the acceptor spends RSA time on it.

The work is bound to the acceptor's fresh nonce and to both node IDs, so a solution cannot
be precomputed, replayed on another link, or reused at another acceptor. Checking costs one
hash; solving costs about 2**difficulty hashes and runs off the event loop (the caller's job).
"""

from __future__ import annotations

import hashlib

DOMAIN = b"fluxchat-pow-v1"
MAX_DIFFICULTY = 40
COUNTER_LIMIT = 2**64
_DIGEST_BITS = 256


def _check_difficulty(difficulty: int) -> None:
    if not 0 <= difficulty <= MAX_DIFFICULTY:
        raise ValueError(f"difficulty must be 0..{MAX_DIFFICULTY} bits, got {difficulty}")


def _prefix(nonce: bytes, dialer_id: bytes, acceptor_id: bytes) -> hashlib._Hash:
    return hashlib.sha256(DOMAIN + nonce + dialer_id + acceptor_id)


def work_digest(nonce: bytes, dialer_id: bytes, acceptor_id: bytes, counter: int) -> bytes:
    """sha256(DOMAIN | nonce | dialer_id | acceptor_id | u64 counter)."""
    state = _prefix(nonce, dialer_id, acceptor_id)
    state.update(counter.to_bytes(8, "big"))
    return state.digest()


def leading_zero_bits(digest: bytes) -> int:
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def verify(nonce: bytes, dialer_id: bytes, acceptor_id: bytes, counter: int,
           difficulty: int) -> bool:
    """True if `counter` proves `difficulty` bits of work; False for any out-of-range input."""
    if not 0 <= difficulty <= MAX_DIFFICULTY or not 0 <= counter < COUNTER_LIMIT:
        return False
    digest = work_digest(nonce, dialer_id, acceptor_id, counter)
    return leading_zero_bits(digest) >= difficulty


def solve(nonce: bytes, dialer_id: bytes, acceptor_id: bytes, difficulty: int,
          start: int = 0, limit: int = COUNTER_LIMIT) -> int:
    """The smallest counter in [start, limit) meeting `difficulty`.

    ValueError if the difficulty is above MAX_DIFFICULTY (a dialer must refuse such a
    challenge rather than burn CPU) or if no counter in the range works."""
    _check_difficulty(difficulty)
    if not 0 <= start <= limit <= COUNTER_LIMIT:
        raise ValueError("counter range must satisfy 0 <= start <= limit <= 2**64")
    # A digest meets the difficulty iff, read as an integer, it is below this bound.
    bound = 1 << (_DIGEST_BITS - difficulty)
    prefix = _prefix(nonce, dialer_id, acceptor_id)
    from_bytes = int.from_bytes
    for counter in range(start, limit):
        state = prefix.copy()
        state.update(counter.to_bytes(8, "big"))
        if from_bytes(state.digest(), "big") < bound:
            return counter
    raise ValueError("no solution in the counter range")


def affordable_difficulty(hashes: float) -> int:
    """The highest difficulty a dialer should accept when it can spend `hashes` hashes.

    Solving takes 2**difficulty hashes on average but is geometric: with four times the
    mean to spend, a solve runs out only e**-4 (about 2%) of the time. A dialer refuses any
    harder challenge at once instead of burning work it cannot finish before its deadline."""
    if hashes < 4:
        return 0
    return min(MAX_DIFFICULTY, int(hashes / 4).bit_length() - 1)
