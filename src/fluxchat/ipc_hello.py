"""The local API's hello: the node proves it knows the token before the client sends it (pure).

After a crash the token file stays behind, and any local user may then listen on the API
port. So a client first sends `hello` with a fresh random nonce and no token; the node
answers with HMAC-SHA256(token, "fluxchat-ipc-hello" ‖ 0x00 ‖ nonce ‖ port), port being
the one it listens on (2 bytes, big-endian). The client checks that against the token it
read and the port it connected to, and only then sends requests carrying the token (and
mail). A squatter cannot compute the proof; a relay in front of the real node on another
port gets a proof for the wrong port.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

HELLO = "hello"
NONCE_BYTES = 32
_LABEL = b"fluxchat-ipc-hello\x00"


def hello_proof(token: str, nonce: bytes, port: int) -> str:
    message = _LABEL + nonce + port.to_bytes(2, "big")
    return hmac.new(token.encode("ascii"), message, hashlib.sha256).hexdigest()


def hello_nonce(obj: Any) -> bytes | None:
    """The nonce of a well-formed hello request object (any token ignored), else None."""
    if not isinstance(obj, dict) or obj.get("cmd") != HELLO:
        return None
    args = obj.get("args")
    nonce = args.get("nonce") if isinstance(args, dict) else None
    if not isinstance(nonce, str) or len(nonce) != 2 * NONCE_BYTES:
        return None
    try:
        return bytes.fromhex(nonce)
    except ValueError:
        return None


def proof_holds(result: Any, token: str, nonce: bytes, port: int) -> bool:
    """The client's check of the node's hello result, in constant time."""
    proof = result.get("proof") if isinstance(result, dict) else None
    if not isinstance(proof, str) or not proof.isascii():
        return False
    try:
        expected = hello_proof(token, nonce, port)
    except UnicodeEncodeError:   # a token file that is not ASCII proves nothing
        return False
    return hmac.compare_digest(proof.encode("ascii"), expected.encode("ascii"))
