#!/usr/bin/env python3
"""Run a FluxChat node: load config and identity, then serve peers and the local API."""

from __future__ import annotations

import gc
import os
import sys
from typing import TYPE_CHECKING

from fluxchat.process_env import run_as_node
from fluxchat.runtime_env import use_project_venv

if __name__ == "__main__":   # started as a script, perhaps by a python3 without our dependencies
    run_as_node()            # may start this process again: before anything heavy is imported
    use_project_venv()

import asyncio  # noqa: E402
import logging  # noqa: E402
import signal  # noqa: E402
from pathlib import Path  # noqa: E402

from fluxchat.config import LOG_LEVELS, Config, load_config  # noqa: E402
from fluxchat.errors import FluxError  # noqa: E402
from fluxchat.identity import Identity, load_identity  # noqa: E402
from fluxchat.ids import format_id  # noqa: E402
from fluxchat.logsetup import setup_logging  # noqa: E402
from fluxchat.node import DB_FILE, Node  # noqa: E402
from fluxchat.password import read_password  # noqa: E402
from fluxchat.pidfile import PidFile  # noqa: E402
from fluxchat.vault import params_from_env  # noqa: E402
from fluxchat.vault_format import DEFAULT_KDF  # noqa: E402
from fluxchat.vault_migrate import unlock_storage  # noqa: E402

if TYPE_CHECKING:
    import argparse

log = logging.getLogger("fluxchat.server")
# Modules only reading the command line needs (argparse and its gettext): 0.3 MiB of Python
# objects a node would keep for good. They are imported where the line is read and dropped once
# it has been (forget_start_modules); a later import would load them again.
START_ONLY_MODULES = ("argparse", "gettext")


def help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's own formatter asks `shutil` for the terminal width, and shutil brings bz2, lzma
    and zlib into the node process for good (0.4 MiB RSS, bench/rss.py); os tells it as well."""
    import argparse

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):   # not a terminal
            columns = 80
    return argparse.HelpFormatter(prog, width=(columns if columns > 0 else 80) - 2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=help_formatter,
        description="Run a FluxChat node (peer links, routing, mail, local API).",
        epilog="The key password comes from FLUXCHAT_KEY_PASSWORD, FLUXCHAT_KEY_PASSWORD_FILE "
               "or a terminal prompt. SIGINT/SIGTERM stop the node gracefully.")
    parser.add_argument("-c", "--config", type=Path,
                        default=Path(os.environ.get("FLUXCHAT_CONFIG", "var/config1.json")),
                        help="config file (default: $FLUXCHAT_CONFIG or var/config1.json)")
    parser.add_argument("--dev", action="store_true", help="log to stderr instead of the log file")
    parser.add_argument("-l", "--log-level", choices=LOG_LEVELS, help="override log.level")
    admin = parser.add_mutually_exclusive_group()
    admin.add_argument("--restore", type=Path, metavar="FILE",
                       help="restore a backup archive (ipc_app.py backup) into the config's empty "
                            "data directory, then exit")
    admin.add_argument("--change-password", action="store_true",
                       help="change the key password with the node stopped, then exit; the new one "
                            "comes from FLUXCHAT_NEW_KEY_PASSWORD(_FILE) or a prompt")
    return parser.parse_args(argv)


def forget_start_modules() -> None:
    """Drop START_ONLY_MODULES, once nothing of theirs is in use (no parser, no Namespace); the
    collection frees them, as they hold reference cycles (functions and their module's dict)."""
    for name in START_ONLY_MODULES:
        sys.modules.pop(name, None)
    gc.collect()


def load(config_path: Path) -> tuple[Config, Identity, str]:
    config = load_config(config_path)
    password = read_password()
    identity = load_identity(config.data_dir, password)
    if config.id is not None and config.id != identity.node_id:
        raise FluxError(f"{config_path}: id is {format_id(config.id)} but the key in "
                        f"{config.data_dir} belongs to {identity.id_text}")
    return config, identity, password


def ready_line(node: Node) -> str:
    """What a person starting the node in the foreground sees once it serves."""
    cfg = node.config
    api = f"local API on {cfg.ipc.address}:{node.ipc_port}" if cfg.ipc.enabled else "local API off"
    reach = ("reachable only through stored mail (contact private)" if cfg.contact == "private"
             else f"peers may dial us ({cfg.contact})")
    return (f"FluxChat node {node.identity.id_text} ready: peers on {cfg.address}:{node.port}, {api}, "
            f"{reach}; stop with Ctrl-C")


async def serve(node: Node) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, node.request_stop)

    async def say_when_ready() -> None:
        await node.ready.wait()
        print(ready_line(node), flush=True)
        await node.joined.wait()
        print(f"joined the network: {len(node.overlay.table)} nodes in the routing table; reachability "
              f"{node.reach.describe()['status']} so far (`info` shows it as it is checked)", flush=True)

    # Not a TaskGroup: it would wrap the node's FluxError in an ExceptionGroup.
    speaker = asyncio.create_task(say_when_ready())
    try:
        await node.run()
    finally:
        speaker.cancel()
        await asyncio.gather(speaker, return_exceptions=True)   # its only outcome is the cancel


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.restore is not None or args.change_password:
        from fluxchat import vault_admin  # here: a node that only runs never needs the backup code

        return vault_admin.run(args.config, args.restore, args.change_password)
    config_path, log_level, dev = args.config, args.log_level, args.dev
    del args
    forget_start_modules()
    try:
        config, identity, password = load(config_path)
    except FluxError as exc:
        print(f"server_app.py: {exc}", file=sys.stderr)
        return 2
    pidfile = PidFile(config.data_dir / "server.pid")
    try:
        pidfile.acquire()
    except FluxError as exc:
        print(f"server_app.py: {exc}", file=sys.stderr)
        return 1
    try:
        setup_logging(log_level or config.log.level, config.log.file, dev,
                      config.log.max_bytes, config.log.backups)
        log.info("node %s starting (pid %d)", identity.id_text, os.getpid())
        # Under the pid file: a second process must not migrate the database at the same time.
        storage_key = unlock_storage(config.data_dir, config.data_dir / DB_FILE, password,
                                     params_from_env(DEFAULT_KDF))
        del password
        asyncio.run(serve(Node(config, identity, storage_key=storage_key)))
        log.info("node stopped")
        print(f"FluxChat node {identity.id_text} stopped", flush=True)
    except FluxError as exc:
        if config.log.file is not None and not dev:   # else the log is stderr already
            log.error("%s", exc)
        print(f"server_app.py: {exc}", file=sys.stderr)
        return 1
    finally:
        pidfile.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
