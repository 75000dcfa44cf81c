#!/usr/bin/env bash
# Run the test suite under coverage in the project's virtualenv (created if missing, no keys made).
set -euo pipefail
cd "$(dirname "$0")/.."
FLUXCHAT_SETUP_VENV_ONLY=1 bin/setup.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
.venv/bin/python -m coverage run --branch --source=src -m unittest discover -s tests -t . "$@"
.venv/bin/python -m coverage report --skip-empty
