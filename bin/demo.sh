#!/usr/bin/env bash
# A FluxChat network on this machine in one command: five nodes on 127.0.0.1 under tmp/demo/,
# joined as a chain; the first mails the last, the mail arrives, the receipt comes back.
# Everything is stopped and tmp/demo/ removed at the end, also when a step fails.
#
#   FLUXCHAT_SETUP_VENV_ONLY=1 bin/setup.sh    # once: creates .venv (plain bin/setup.sh
#   bin/demo.sh                                 # also sets up your own node in var/)
#
# The demo nodes get fresh RSA-2048 keys from bin/setup.sh (password below, cheap key
# derivation) and the config from config-example.json: 127.0.0.1 only, ports picked free.
#
# Environment: FLUXCHAT_DEMO_NODES (default 5), FLUXCHAT_DEMO_PORT (first peer port to try,
# default 35001; local API ports from FLUXCHAT_DEMO_PORT + 1000), FLUXCHAT_DEMO_TIMEOUT
# (seconds each wait may take, default 60), FLUXCHAT_DEMO_KEEP=1 (keep tmp/demo for a look;
# the nodes are stopped all the same).
set -euo pipefail

cd "$(dirname "$0")/.."
case "${1:-}" in
    -h|--help)
        cat <<'USAGE'
usage: bin/demo.sh [-h]

Start a few FluxChat nodes on 127.0.0.1 under tmp/demo/, mail from the first to the last, show
the mail arrive and its receipt come back, then stop them all and remove tmp/demo/.
Needs .venv (FLUXCHAT_SETUP_VENV_ONLY=1 bin/setup.sh). Environment: FLUXCHAT_DEMO_NODES (5),
FLUXCHAT_DEMO_PORT (35001), FLUXCHAT_DEMO_TIMEOUT (60 s per wait), FLUXCHAT_DEMO_KEEP=1.
USAGE
        exit 0 ;;
    "") ;;
    *) echo "demo: no arguments; see bin/demo.sh --help" >&2; exit 2 ;;
esac
DEMO=tmp/demo
PY=.venv/bin/python
NODES="${FLUXCHAT_DEMO_NODES:-5}"
FIRST_PORT="${FLUXCHAT_DEMO_PORT:-35001}"
TIMEOUT="${FLUXCHAT_DEMO_TIMEOUT:-60}"
# Demo keys: 2048-bit and a cheap key derivation, so setting up five nodes takes seconds.
export FLUXCHAT_KEY_PASSWORD="fluxchat demo password"
export FLUXCHAT_KEY_BITS=2048
export FLUXCHAT_KEY_DERIVATION_ITERATIONS=1000
unset FLUXCHAT_KEY_PASSWORD_FILE FLUXCHAT_CONFIG

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

[ -x "$PY" ] || die "no .venv here: run bin/setup.sh first"
[ "$NODES" -ge 2 ] 2>/dev/null || die "FLUXCHAT_DEMO_NODES must be a number >= 2"
if [ -e "$DEMO" ]; then
    die "$DEMO already exists: is another demo running? If not, remove it and try again"
fi

pids=()
stop_nodes() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "demo: node pid $pid did not stop within 5 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
exec 3>&1 4>&2   # the terminal, for cleanup: a signal may land inside a redirected command
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    exec 1>&3 2>&4
    if [ "$status" != 0 ] && [ -d "$DEMO" ]; then
        echo "demo: failed (exit $status); the nodes' last log lines:" >&2
        for log in "$DEMO"/data*/fluxchat.log "$DEMO"/*.stderr; do
            [ -s "$log" ] && { echo "--- $log"; tail -n 5 "$log"; } >&2
        done
    fi
    step "Stopping ${#pids[@]} nodes and cleaning up"
    stop_nodes
    if [ "${FLUXCHAT_DEMO_KEEP:-0}" = 1 ]; then
        echo "kept $DEMO"
    else
        rm -rf "$DEMO"
        echo "removed $DEMO"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nodes_alive: stop the demo at once if a node has exited, showing why.
nodes_alive() {
    local i
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            tail -n 20 "$DEMO/node$((i + 1)).stderr" >&2 2>/dev/null || true
            die "node $((i + 1)) (pid ${pids[i]}) has exited"
        fi
    done
}

# wait_for SECONDS DESCRIPTION COMMAND...: run COMMAND until it succeeds or time runs out.
wait_for() {
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        nodes_alive
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds} s waiting for $what"
        sleep 0.2
    done
}

# free_port START: sets PORT to the first TCP port >= START that nothing listens on and
# that this script has not handed out yet.
taken=" "
free_port() {
    PORT=$("$PY" - "$1" "$taken" <<'EOF'
import socket, sys
port, taken = int(sys.argv[1]), set(sys.argv[2].split())
while port < 65536:
    if str(port) not in taken:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the node binds
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                pass
    port += 1
print(port)
EOF
)
    [ "$PORT" -lt 65536 ] || die "no free port from $1"
    taken+="$PORT "
}

cli() {  # cli NODE ARGS...: the command-line client against node NODE
    local node=$1
    shift
    "$PY" src/ipc_app.py -c "$DEMO/config$node.json" "$@"
}

json_field() {  # json_field KEY < JSON: print one top-level field
    "$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# ----------------------------------------------------------------------------------------

step "Setting up $NODES nodes under $DEMO (RSA-2048 demo keys, bin/setup.sh per node)"
mkdir -p "$DEMO"
ports=() ipc_ports=() ids=()
for i in $(seq 1 "$NODES"); do
    free_port $((FIRST_PORT + i - 1))
    ports[i]=$PORT
    free_port $((FIRST_PORT + 1000 + i - 1))
    ipc_ports[i]=$PORT
    bootstrap=""
    [ "$i" -gt 1 ] && bootstrap="127.0.0.1:${ports[i - 1]}"
    ids[i]=$(FLUXCHAT_CONFIG="$DEMO/config$i.json" FLUXCHAT_DATA_DIR="$DEMO/data$i" \
             FLUXCHAT_ADDRESS=127.0.0.1 FLUXCHAT_PORT="${ports[i]}" \
             FLUXCHAT_IPC_PORT="${ipc_ports[i]}" FLUXCHAT_BOOTSTRAP="$bootstrap" \
             bin/setup.sh 2>>"$DEMO/setup.log") || { cat "$DEMO/setup.log" >&2; die "setup of node $i failed"; }
    printf '  node %d  %s  peers 127.0.0.1:%s  local API %s  bootstrap %s\n' \
        "$i" "${ids[i]}" "${ports[i]}" "${ipc_ports[i]}" "${bootstrap:--}"
done

step "Starting the nodes in the background (src/server_app.py -c $DEMO/configN.json)"
for i in $(seq 1 "$NODES"); do
    "$PY" src/server_app.py -c "$DEMO/config$i.json" >/dev/null 2>"$DEMO/node$i.stderr" &
    pids+=("$!")
    # Each node must be up before the next one bootstraps from it.
    wait_for "$TIMEOUT" "node $i to answer on its local API" cli "$i" info
    echo "  node $i running (pid ${pids[-1]}), log in $DEMO/data$i/fluxchat.log"
done

step "Waiting until node 1 can see the whole network"
routing_size() { cli 1 --json peers | json_field routing_table_size; }
knows_everyone() { [ "$(routing_size)" -ge $((NODES - 1)) ]; }
wait_for "$TIMEOUT" "node 1's routing table to hold the other $((NODES - 1)) nodes" knows_everyone
cli 1 peers

step "Node 1 mails node $NODES"
echo "\$ src/ipc_app.py -c $DEMO/config1.json mail -t ${ids[NODES]} -s 'Hello from node 1' -b ..."
uuid=$(cli 1 mail -t "${ids[NODES]}" -s "Hello from node 1" \
       -b "This mail crossed a $NODES-node FluxChat network, signed and encrypted end to end.")
echo "  queued as $uuid"

step "The mail arrives at node $NODES"
arrived() { cli "$NODES" --json list | grep -q "\"$uuid\""; }
wait_for "$TIMEOUT" "the mail in node $NODES's inbox" arrived
echo "\$ src/ipc_app.py -c $DEMO/config$NODES.json list"
cli "$NODES" list
echo
echo "\$ src/ipc_app.py -c $DEMO/config$NODES.json read --uuid $uuid"
cli "$NODES" read --uuid "$uuid"

step "Node 1 gets node $NODES's signed receipt"
delivered() { [ "$(cli 1 --json status --uuid "$uuid" | json_field state)" = delivered ]; }
wait_for "$TIMEOUT" "the receipt (state delivered) at node 1" delivered
echo "\$ src/ipc_app.py -c $DEMO/config1.json status --uuid $uuid"
cli 1 status --uuid "$uuid"

step "Demo complete: the mail went from node 1 to node $NODES and the receipt came back"
