#!/usr/bin/env bash
# Run every benchmark (bench/run_all.py) and write docs/benchmarks.md.
# Sets up the venv with the test extra, Debian's wrk, prometheus and
# prometheus-alertmanager. Arguments go to run_all.py, e.g. --quick for a short smoke run,
# --only storm,crash for a subset. Run it on a quiet machine: the figures are timings.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh test
scripts/install-test-deps.sh

if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk
fi

exec .venv/bin/python bench/run_all.py "$@"
