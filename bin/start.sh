#!/usr/bin/env bash
# Start a node in the background: bin/start.sh [CONFIG]. Logs go to the config's log file.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-${FLUXCHAT_CONFIG:-var/config1.json}}"
[ -x .venv/bin/python ] || { echo "start: run bin/setup.sh first" >&2; exit 3; }
nohup .venv/bin/python src/server_app.py -c "$config" >/dev/null 2>"$config.stderr" &
pid=$!
sleep 1
if ! kill -0 "$pid" 2>/dev/null; then
    echo "start: the node exited:" >&2
    cat "$config.stderr" >&2
    exit 1
fi
echo "start: node running with pid $pid (config $config)"
