#!/usr/bin/env bash
# Run the test suite under coverage in the project's virtualenv (created if missing, no keys made).
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    -h|--help)
        cat <<'USAGE'
usage: bin/tests.sh [UNITTEST-OPTIONS]

Run the whole test suite under coverage in the project's .venv (created if missing; no keys are
made) and print the coverage report. Options go to `python -m unittest discover`, e.g.
bin/tests.sh -k test_outbox. One module alone: PYTHONPATH=src .venv/bin/python -m unittest tests.test_x
USAGE
        exit 0 ;;
esac
FLUXCHAT_SETUP_VENV_ONLY=1 bin/setup.sh
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
rm -f .coverage .coverage.*
status=0
.venv/bin/python -m coverage run -m unittest discover -s tests -t . "$@" || status=$?
.venv/bin/python -m coverage combine --quiet
.venv/bin/python -m coverage report
exit "$status"
