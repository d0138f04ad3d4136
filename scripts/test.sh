#!/usr/bin/env bash
# Set up everything the tests need (Python packages, Debian's prometheus and
# prometheus-alertmanager) and run the checks: ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh test
scripts/install-test-deps.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/pytest "$@"
