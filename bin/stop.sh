#!/usr/bin/env bash
# Stop a node started with bin/start.sh: bin/stop.sh [CONFIG]. Waits until it has exited.
set -euo pipefail
cd "$(dirname "$0")/.."
config="${1:-${FLUXCHAT_CONFIG:-var/config1.json}}"
data_dir="$(.venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["data_dir"])' "$config")"
pidfile="$data_dir/server.pid"
[ -f "$pidfile" ] || { echo "stop: no pid file at $pidfile; is the node running?" >&2; exit 1; }
pid="$(cat "$pidfile")"
kill -TERM "$pid" 2>/dev/null || { echo "stop: no process $pid; removing the stale pid file" >&2; rm -f "$pidfile"; exit 0; }
for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || { echo "stop: node $pid stopped"; exit 0; }
    sleep 0.1
done
echo "stop: node $pid did not stop within 5 s" >&2
exit 1
