"""A local-API bridge run inside a lab namespace: JSON lines in on stdin, JSON lines out.

`{"cmd": ..., "args": {...}}` is passed to the node's local API; `{"cmd": "_wait_inbox",
"args": {"subject": S, "timeout": T}}` polls the inbox every 5 ms and answers with the
wall-clock time the mail with that subject appeared (the lab's processes share one clock).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from fluxchat.errors import IpcError  # noqa: E402
from fluxchat.ipc_client import IpcClient, read_token_file  # noqa: E402


def wait_inbox(client: IpcClient, subject: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = client.call("list", {"folder": "inbox", "new_only": False, "limit": 500,
                                     "offset": 0})["items"]
        if any(item["subject"] == subject for item in items):
            return {"seen_at": time.time()}
        time.sleep(0.005)
    return {"seen_at": None}


def serve(client: IpcClient, request: dict[str, Any]) -> Any:
    if request["cmd"] == "_wait_inbox":
        return wait_inbox(client, request["args"]["subject"], request["args"]["timeout"])
    return client.call(request["cmd"], request.get("args", {}))


def main() -> None:
    data_dir, port = Path(sys.argv[1]), int(sys.argv[2])

    def connect() -> IpcClient:
        client = IpcClient("127.0.0.1", port, read_token_file(data_dir))
        client.__enter__()
        return client

    client = connect()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            try:
                result = serve(client, request)
            except (OSError, IpcError) as exc:
                # The node closes a local-API connection that idled too long (the request
                # was not run): connect again and send it once more.
                if isinstance(exc, IpcError) and exc.code != "unavailable":
                    raise
                client.close()
                client = connect()
                result = serve(client, request)
            print(json.dumps({"ok": True, "result": result}), flush=True)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who fails
            print(json.dumps({"ok": False, "error": str(exc)}), flush=True)


if __name__ == "__main__":
    main()
