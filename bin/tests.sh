#!/usr/bin/env bash
# Run the test suite under coverage in the project's virtualenv (created if missing, no keys made).
set -euo pipefail
cd "$(dirname "$0")/.."
FLUXCHAT_SETUP_VENV_ONLY=1 bin/setup.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rm -f .coverage .coverage.*
status=0
.venv/bin/python -m coverage run -m unittest discover -s tests -t . "$@" || status=$?
.venv/bin/python -m coverage combine --quiet
.venv/bin/python -m coverage report
exit "$status"
