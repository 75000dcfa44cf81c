#!/usr/bin/env bash
# Build sqlcipher3 (the version pinned in requirements.txt) into .venv against the system's
# OpenSSL, the libcrypto that Python's ssl module loads anyway.
set -euo pipefail

cd "$(dirname "$0")/.."

usage() {
    cat <<'USAGE'
usage: bin/build-sqlcipher.sh [-h] [--check]

sqlcipher3's wheel carries a second copy of OpenSSL inside its module; every node process then
maps three (Python's ssl, cryptography's and that one), which costs each node about 4 MiB of
RSS (bench/rss.py). Built from its source release against the system's libcrypto, SQLCipher
shares the library Python's ssl module has already loaded. Same SQLCipher, same database format.
Needs gcc, the Python headers and libssl-dev (apt-get install gcc python3-dev libssl-dev); without
them the wheel stays and everything works the same, with the larger footprint.
bin/setup.sh runs this when it installs requirements.txt; run it by hand to convert a .venv.
  --check   only tell which build .venv has (exit 0: system OpenSSL, 1: bundled or missing)
exit codes: 0 built (or already built) against the system OpenSSL, 1 the build failed or is not
possible here (the reason is printed; the wheel is left in place), 2 an unknown option
USAGE
}
say() { echo "build-sqlcipher: $*" >&2; }
PY=.venv/bin/python

uses_system_openssl() {
    local module
    module=$("$PY" -c 'import sqlcipher3._sqlite3 as m; print(m.__file__)' 2>/dev/null) || return 1
    # grep reads all of ldd's output: with -q it could stop early, and under pipefail ldd's
    # SIGPIPE would turn a match into a failure.
    ldd "$module" 2>/dev/null | grep 'libcrypto\.so' >/dev/null
}

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --check)
        if uses_system_openssl; then echo "sqlcipher3 uses the system OpenSSL"; exit 0; fi
        echo "sqlcipher3 is missing or carries its own OpenSSL"; exit 1 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac

[ -x "$PY" ] || { say "no .venv here: run bin/setup.sh first"; exit 1; }
uses_system_openssl && exit 0
spec=$(grep -E '^sqlcipher3==' requirements.txt) || { say "requirements.txt pins no sqlcipher3"; exit 1; }
headers=$("$PY" -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["include"], "Python.h"))')
if ! command -v gcc >/dev/null 2>&1 || [ ! -f /usr/include/openssl/evp.h ] || [ ! -f "$headers" ]; then
    say "gcc, libssl-dev or the Python headers are missing (apt-get install gcc libssl-dev python3-dev):"
    say "keeping sqlcipher3's wheel, which costs each node about 4 MiB more"
    exit 1
fi
say "building $spec against the system OpenSSL (a minute or two)"
pip=("$PY" -m pip install --quiet --disable-pip-version-check)
# No build isolation: the package's own build requirements would fetch a separate OpenSSL.
# The build backend is setuptools, pinned here like every dependency.
if "${pip[@]}" setuptools==84.2.1 \
        && "${pip[@]}" --no-build-isolation --no-binary sqlcipher3 --no-deps --force-reinstall "$spec" \
        && uses_system_openssl; then
    say "sqlcipher3 now uses the system OpenSSL"
    exit 0
fi
say "the build failed: installing sqlcipher3's wheel instead (about 4 MiB more per node)"
"${pip[@]}" --no-deps --force-reinstall "$spec" || true
exit 1
