#!/usr/bin/env python3
"""Command line for a running FluxChat node: send, list and read mail, manage contacts.

Exit codes: 0 success, 1 the node answered with an error, 2 usage, 3 node not reachable.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from fluxchat.runtime_env import use_project_venv

if __name__ == "__main__":   # started as a script, perhaps by a python3 without our dependencies
    use_project_venv()

from fluxchat.cli_args import DEFAULT_CONFIG, build_parser, request_for  # noqa: E402
from fluxchat.cli_show import SHOW, show_event  # noqa: E402
from fluxchat.config import Config, load_config  # noqa: E402
from fluxchat.errors import ConfigError, IpcError  # noqa: E402
from fluxchat.ipc_client import IpcClient, NodeUnreachable, connect_address, read_token_file  # noqa: E402

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
PROG = "ipc_app.py"


# --- main --------------------------------------------------------------------------------

def _fail(message: str, code: int, as_json: bool = False, kind: str = "error") -> int:
    """A failure for a person (stderr) or, with --json, for a script: one JSON object on stdout."""
    if as_json:
        print(json.dumps({"ok": False, "error": {"code": kind, "message": message}}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def ipc_port(config: Config) -> int:
    """The configured port, or with `ipc.port: 0` the one the running node picked."""
    if config.ipc.port:
        return config.ipc.port
    try:
        return int(json.loads((config.data_dir / "runtime.json").read_text())["ipc_port"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def run(ns: argparse.Namespace, cmd: str, args: dict[str, Any]) -> int:
    config_path = getattr(ns, "config", None) or os.environ.get("FLUXCHAT_CONFIG") or DEFAULT_CONFIG
    as_json = bool(getattr(ns, "json", False))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_USAGE, as_json, "config")
    port = ipc_port(config)
    where = f"{connect_address(config.ipc.address)}:{port}"
    hint = f"start it with src/server_app.py -c {config_path}"
    if not config.ipc.enabled:
        return _fail(f"the local API is disabled in {config_path} (ipc.enabled)", EXIT_UNREACHABLE, as_json,
                     "unavailable")
    try:
        token = read_token_file(config.data_dir)
    except IpcError as exc:  # the node writes it at each start: most likely not running
        return _fail(f"cannot reach the node at {where}: {exc.message}; {hint}", EXIT_UNREACHABLE, as_json,
                     "unavailable")
    try:
        with IpcClient(config.ipc.address, port, token) as client:
            result = client.call(cmd, args)
            if cmd == "watch":
                return watch(client, bool(getattr(ns, "json", False)))
            if cmd == "web_link" and getattr(ns, "open", False) and isinstance(result, dict):
                import webbrowser
                webbrowser.open(str(result.get("url")))
    except NodeUnreachable:
        return _fail(f"cannot reach the node at {where}; {hint}", EXIT_UNREACHABLE, as_json, "unavailable")
    except IpcError as exc:
        if as_json:
            return _fail(exc.message, EXIT_ERROR, True, exc.code)
        return _fail(f"{exc.code}: {exc.message}", EXIT_ERROR)
    if getattr(ns, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print(SHOW[cmd](result if isinstance(result, dict) else {}, args))
    if cmd == "contacts" and args.get("action") == "remove" and not (result or {}).get("removed"):
        return EXIT_ERROR   # nothing was removed: a script must not take it for done
    return EXIT_OK


def watch(client: IpcClient, as_json: bool) -> int:
    """Print events until the node closes the stream (it stops, or we read too slowly)."""
    for event in client.events():
        print(json.dumps(event) if as_json else show_event(event), flush=True)
    return _fail("the node ended the event stream", EXIT_UNREACHABLE)


def main(argv: list[str] | None = None) -> int:
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    parser, subs = build_parser(PROG)
    ns = parser.parse_args(argv)
    cmd, args = request_for(ns, subs)
    return run(ns, cmd, args)


def _tool(name: str) -> Callable[[list[str]], int] | None:
    """The entry point behind `fluxchat NAME`, for the names that are not local API commands."""
    if name == "node":
        from fluxchat.process_env import run_as_node

        run_as_node()   # as src/server_app.py does: may start this process again, lean
        import server_app
        return server_app.main
    if name == "node-id":
        import gen_id
        return gen_id.main
    if name == "keygen":
        import gen_rsa
        return gen_rsa.main
    return None


def console() -> None:
    """The `fluxchat` command (pyproject.toml): `fluxchat node ...` runs a node (server_app.py), `fluxchat node-id
    ...` prints a key's ID (gen_id.py), `fluxchat keygen ...` makes an identity (gen_rsa.py); the rest is this CLI."""
    global PROG
    argv = sys.argv[1:]
    tool = _tool(argv[0]) if argv else None
    if tool is not None:
        sys.argv[0] = f"fluxchat {argv[0]}"   # argparse names the program after it
    PROG = "fluxchat"
    try:
        sys.exit(tool(argv[1:]) if tool else main(argv))
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # e.g. piped into head
        sys.exit(0)


if __name__ == "__main__":
    console()
