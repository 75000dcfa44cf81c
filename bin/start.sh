#!/usr/bin/env bash
# Start a node in the background and report only once it answers (or has exited).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: bin/start.sh [-h] [CONFIG]

Start the FluxChat node of CONFIG (default: $FLUXCHAT_CONFIG, then var/config1.json) in the
background, wait until its local API answers, and print its ID and ports; if the node exits
instead (wrong password, port in use, bad config), print why and exit 1.

The key password comes from FLUXCHAT_KEY_PASSWORD, or the file named by
FLUXCHAT_KEY_PASSWORD_FILE, or is asked for here when started on a terminal.
The node's own output goes to DATA_DIR/server.out; its log to the configured log file.

environment: FLUXCHAT_START_TIMEOUT  seconds to wait for the node (default 120: deriving the
             key from the password takes a while on slow machines)
exit codes: 0 running, 1 the node exited or did not answer in time, 2 usage, 3 not set up
USAGE
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    -*) echo "start: unknown option $1" >&2; usage >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "start: one CONFIG at most" >&2; usage >&2; exit 2; }
config="${1:-${FLUXCHAT_CONFIG:-var/config1.json}}"
timeout="${FLUXCHAT_START_TIMEOUT:-120}"
PY=.venv/bin/python
[ -x "$PY" ] || { echo "start: no .venv here; run bin/setup.sh first" >&2; exit 3; }

# The config's data_dir and whether it has a local API, read by the node's own loader.
settings="$(PYTHONPATH=src "$PY" -c '
import sys
from fluxchat.config import load_config
from fluxchat.errors import FluxError
try:
    config = load_config(sys.argv[1])
except FluxError as exc:
    sys.exit(f"start: {exc}")
print(int(config.ipc.enabled), config.data_dir)' "$config")" || exit 3
ipc_enabled="${settings%% *}"
data_dir="${settings#* }"

if [ -z "${FLUXCHAT_KEY_PASSWORD:-}" ] && [ -z "${FLUXCHAT_KEY_PASSWORD_FILE:-}" ]; then
    if [ -t 0 ]; then
        read -r -s -p "Key password for $data_dir: " FLUXCHAT_KEY_PASSWORD; echo >&2
        export FLUXCHAT_KEY_PASSWORD
    else
        echo "start: set FLUXCHAT_KEY_PASSWORD or FLUXCHAT_KEY_PASSWORD_FILE (no terminal to ask on)" >&2
        exit 2
    fi
fi

out="$data_dir/server.out"
runtime="$data_dir/runtime.json"
nohup "$PY" src/server_app.py -c "$config" </dev/null >"$out" 2>&1 &
pid=$!
unset FLUXCHAT_KEY_PASSWORD

deadline=$((SECONDS + timeout))
while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && code=0 || code=$?
        echo "start: the node exited (code $code):" >&2
        sed 's/^/  /' "$out" >&2
        exit 1
    fi
    # runtime.json names the pid once the node serves; then the local API must answer.
    if [ -f "$runtime" ] && grep -q "\"pid\": $pid[,}]" "$runtime"; then
        if [ "$ipc_enabled" = 0 ]; then
            info="$(cat "$runtime")"
            break
        elif info="$("$PY" src/ipc_app.py -c "$config" info 2>/dev/null)"; then
            break
        fi
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "start: the node (pid $pid) did not answer within $timeout s; see $out and its log" >&2
        exit 1
    fi
    sleep 0.2
done
echo "start: node running with pid $pid (config $config)"
echo "$info" | sed -n 's/^\(ID\|Listen\|IPC\):/  &/p'
