#!/usr/bin/env bash
# Stop a node started with bin/start.sh; waits until it has exited.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: bin/stop.sh [-h] [CONFIG]

Stop the FluxChat node of CONFIG (default: $FLUXCHAT_CONFIG, then var/config1.json) with SIGTERM
and wait until it has exited (at most 10 s).

exit codes: 0 stopped (or was not running), 1 it did not stop, 2 usage, 3 bad or missing config
USAGE
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -*) echo "stop: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "stop: one CONFIG at most" >&2; usage >&2; exit 2; }
config="${1:-${FLUXCHAT_CONFIG:-var/config1.json}}"
PY=.venv/bin/python
[ -x "$PY" ] || { echo "stop: no .venv here; run bin/setup.sh first" >&2; exit 3; }
data_dir="$(PYTHONPATH=src "$PY" -c '
import sys
from fluxchat.config import load_config
from fluxchat.errors import FluxError
try:
    print(load_config(sys.argv[1]).data_dir)
except FluxError as exc:
    sys.exit(f"stop: {exc}")' "$config")" || exit 3

pidfile="$data_dir/server.pid"
if [ ! -f "$pidfile" ]; then
    echo "stop: the node of $config is not running (no $pidfile)"
    exit 0
fi
pid="$(tr -dc 0-9 <"$pidfile")"
if [ -z "$pid" ] || ! kill -TERM "$pid" 2>/dev/null; then
    echo "stop: no process ${pid:-?} any more; removing the stale $pidfile"
    rm -f "$pidfile"
    exit 0
fi
for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || { echo "stop: node $pid stopped"; exit 0; }
    sleep 0.1
done
echo "stop: node $pid did not stop within 10 s" >&2
exit 1
