#!/usr/bin/env bash
# Set up a FluxChat node: virtualenv, dependencies, identity, config, bootstrap list.
# Run it again with other FLUXCHAT_* variables to set up another node on this machine.
set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: bin/setup.sh [-h]

Set up a FluxChat node: .venv with requirements.txt and the `fluxchat` command in .venv/bin, the
identity in FLUXCHAT_DATA_DIR, the config FLUXCHAT_CONFIG and its bootstrap list. Running it again
changes nothing that exists. Settings come from environment variables (defaults in brackets):
  FLUXCHAT_CONFIG [var/config1.json]   FLUXCHAT_DATA_DIR [var/data1]   FLUXCHAT_ADDRESS [0.0.0.0]
  FLUXCHAT_PORT [25001]   FLUXCHAT_CONTACT [public]   FLUXCHAT_IPC_PORT [26001]
  FLUXCHAT_BOOTSTRAP [none; host:port,...]   FLUXCHAT_LOG_FILE [fluxchat.log]
  FLUXCHAT_KEY_PASSWORD or FLUXCHAT_KEY_PASSWORD_FILE [asked on a terminal]
  FLUXCHAT_KEY_BITS [4096]   FLUXCHAT_KEY_DERIVATION_ITERATIONS [600000]
  FLUXCHAT_SETUP_VENV_ONLY=1   only create .venv and install the requirements
exit codes: 0 set up, 2 no password, 3 a tool is missing
USAGE
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) echo "setup: settings come from FLUXCHAT_* variables, not arguments ($1)" >&2; usage >&2; exit 2 ;;
esac

export FLUXCHAT_CONFIG="${FLUXCHAT_CONFIG:-var/config1.json}"
export FLUXCHAT_ADDRESS="${FLUXCHAT_ADDRESS:-0.0.0.0}"
export FLUXCHAT_PORT="${FLUXCHAT_PORT:-25001}"
export FLUXCHAT_CONTACT="${FLUXCHAT_CONTACT:-public}"
export FLUXCHAT_DATA_DIR="${FLUXCHAT_DATA_DIR:-var/data1}"
export FLUXCHAT_IPC_PORT="${FLUXCHAT_IPC_PORT:-26001}"
export FLUXCHAT_LOG_FILE="${FLUXCHAT_LOG_FILE:-fluxchat.log}"
export FLUXCHAT_KEY_DERIVATION_ITERATIONS="${FLUXCHAT_KEY_DERIVATION_ITERATIONS:-600000}"
export FLUXCHAT_KEY_BITS="${FLUXCHAT_KEY_BITS:-4096}"
FLUXCHAT_BOOTSTRAP="${FLUXCHAT_BOOTSTRAP:-}"

say() { echo "setup: $*" >&2; }
need() {  # need TOOL DEBIAN-PACKAGE
    if ! command -v "$1" >/dev/null 2>&1; then
        say "'$1' is missing; install it with: apt-get install $2"
        exit 3
    fi
}
need python3 python3
need envsubst gettext-base

changed=0

# 1. Virtual environment and dependencies.
if [ ! -x .venv/bin/python ]; then
    if python3 -m virtualenv --version >/dev/null 2>&1 || python3 -m pip install --user --quiet virtualenv; then
        python3 -m virtualenv --quiet .venv
    else
        say "virtualenv could not be installed; using python3 -m venv instead"
        python3 -m venv .venv
    fi
    changed=1
fi
if ! cmp -s requirements.txt .venv/.requirements.installed; then
    say "installing requirements.txt into .venv"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
    # SQLCipher against the system's OpenSSL instead of the wheel's own copy (see its --help);
    # when it cannot be built, it says why and the wheel works all the same.
    bin/build-sqlcipher.sh || true
    cp requirements.txt .venv/.requirements.installed
    changed=1
fi
# The `fluxchat` command (pyproject.toml), editable: it runs this checkout's code.
if [ ! -x .venv/bin/fluxchat ]; then
    say "installing the fluxchat command into .venv/bin"
    pip_install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps -e .)
    # The build backend (setuptools) comes from PyPI; offline, the venv's own may do.
    "${pip_install[@]}" 2>/dev/null || "${pip_install[@]}" --no-build-isolation \
        || say "the fluxchat command could not be installed; src/*.py work all the same"
    changed=1
fi
# A node runs under -OO (src/fluxchat/process_env.py), whose bytecode is in the *.opt-2.pyc
# files: written here, so that no start compiles the modules from source (a read-only checkout,
# PYTHONDONTWRITEBYTECODE). Quick when they are up to date.
.venv/bin/python -m compileall -q -o 2 src \
    "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null \
    || say "could not compile every module for -OO; a node compiles what is missing as it starts"
[ "${FLUXCHAT_SETUP_VENV_ONLY:-0}" = 1 ] && exit 0
PY=.venv/bin/python

# 2. Data directory and identity.
if [ ! -d "$FLUXCHAT_DATA_DIR" ]; then
    mkdir -p "$FLUXCHAT_DATA_DIR"
    changed=1
fi
chmod 700 "$FLUXCHAT_DATA_DIR"
if [ ! -f "$FLUXCHAT_DATA_DIR/private_key.pem" ]; then
    if [ -z "${FLUXCHAT_KEY_PASSWORD:-}" ] && [ -z "${FLUXCHAT_KEY_PASSWORD_FILE:-}" ]; then
        if [ -t 0 ]; then
            say "choose a password for the node's private key"
        else
            say "FLUXCHAT_KEY_PASSWORD is not set and stdin is not a terminal; set it (or FLUXCHAT_KEY_PASSWORD_FILE) and run again"
            exit 2
        fi
    fi
    FLUXCHAT_ID="$($PY src/gen_rsa.py -d "$FLUXCHAT_DATA_DIR")"
    changed=1
else
    FLUXCHAT_ID="$($PY src/gen_id.py -f "$FLUXCHAT_DATA_DIR/public_key.pem")"
fi
export FLUXCHAT_ID

# 3. Configuration, rendered once; later edits by hand are kept.
if [ ! -f "$FLUXCHAT_CONFIG" ]; then
    mkdir -p "$(dirname "$FLUXCHAT_CONFIG")"
    umask 077
    # Only our own variables are substituted, so a literal "$" elsewhere survives.
    envsubst '${FLUXCHAT_ID} ${FLUXCHAT_ADDRESS} ${FLUXCHAT_PORT} ${FLUXCHAT_CONTACT} ${FLUXCHAT_DATA_DIR} ${FLUXCHAT_IPC_PORT} ${FLUXCHAT_LOG_FILE}' \
        < config-example.json > "$FLUXCHAT_CONFIG.tmp"
    chmod 600 "$FLUXCHAT_CONFIG.tmp"
    mv "$FLUXCHAT_CONFIG.tmp" "$FLUXCHAT_CONFIG"
    say "wrote $FLUXCHAT_CONFIG"
    changed=1
fi

# 4. Bootstrap list: "host:port" entries of nodes to join through.
if [ ! -f "$FLUXCHAT_DATA_DIR/bootstrap.json" ]; then
    FLUXCHAT_BOOTSTRAP="$FLUXCHAT_BOOTSTRAP" $PY -c '
import json, os, sys
entries = [e.strip() for e in os.environ["FLUXCHAT_BOOTSTRAP"].split(",") if e.strip()]
json.dump(entries, sys.stdout)
print()' > "$FLUXCHAT_DATA_DIR/bootstrap.json"
    chmod 600 "$FLUXCHAT_DATA_DIR/bootstrap.json"
    changed=1
fi

if [ "$changed" = 0 ]; then
    say "nothing to do: $FLUXCHAT_CONFIG and $FLUXCHAT_DATA_DIR are already set up"
else
    say "node $FLUXCHAT_ID is set up; start it with: src/server_app.py -c $FLUXCHAT_CONFIG"
fi
echo "$FLUXCHAT_ID"
