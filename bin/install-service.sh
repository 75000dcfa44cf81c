#!/usr/bin/env bash
# Install a systemd user unit that runs a FluxChat node at login (and, with lingering, at boot).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

usage() {
    cat <<'USAGE'
usage: bin/install-service.sh [-h] [--print] [CONFIG]

Write a systemd user unit for the node of CONFIG (default: $FLUXCHAT_CONFIG, then
var/config1.json) to ~/.config/systemd/user/fluxchat-NAME.service (NAME: the config file's name
without .json) and reload systemd. A service cannot ask for the key password, so
FLUXCHAT_KEY_PASSWORD_FILE must name a file (mode 0600) whose first line is the password.

  --print   only print the unit, write nothing

Then:  systemctl --user enable --now fluxchat-NAME     start now and at every login
       loginctl enable-linger "$USER"                  keep it running without a login session
       journalctl --user -u fluxchat-NAME              its ready/stopped lines and errors
USAGE
}

print_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --print) print_only=1; shift ;;
        -*) echo "install-service: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -le 1 ] || { echo "install-service: one CONFIG at most" >&2; usage >&2; exit 2; }
config="${1:-${FLUXCHAT_CONFIG:-var/config1.json}}"
[ -f "$config" ] || { echo "install-service: no config at $config; run bin/setup.sh first" >&2; exit 3; }
[ -x .venv/bin/python ] || { echo "install-service: no .venv here; run bin/setup.sh first" >&2; exit 3; }
password_file="${FLUXCHAT_KEY_PASSWORD_FILE:-}"
if [ -z "$password_file" ] || [ ! -f "$password_file" ]; then
    echo "install-service: set FLUXCHAT_KEY_PASSWORD_FILE to a file holding the key password" >&2
    exit 2
fi
config="$(realpath "$config")"
password_file="$(realpath "$password_file")"
name="fluxchat-$(basename "$config" .json)"

unit="[Unit]
Description=FluxChat node ($config)
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
WorkingDirectory=$root
Environment=FLUXCHAT_KEY_PASSWORD_FILE=$password_file
ExecStart=$root/.venv/bin/python $root/src/server_app.py -c $config
# SIGTERM stops the node within 2 s; exit code 2 (bad config or password) is not worth a retry.
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=2
TimeoutStopSec=15

[Install]
WantedBy=default.target"

if [ "$print_only" = 1 ]; then
    echo "$unit"
    exit 0
fi
dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
mkdir -p "$dir"
printf '%s\n' "$unit" > "$dir/$name.service"
echo "install-service: wrote $dir/$name.service"
if command -v systemctl >/dev/null 2>&1 && systemctl --user daemon-reload 2>/dev/null; then
    echo "install-service: start it with: systemctl --user enable --now $name"
else
    echo "install-service: no systemd user session here; on a systemd machine run:"
    echo "  systemctl --user daemon-reload && systemctl --user enable --now $name"
fi
