#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install alertpilot into it; extras as arguments, e.g. "test".
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        # Debian ships venv separately
        SUDO=""
        if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi
        $SUDO apt-get update
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
fi
extras=""
if [[ $# -gt 0 ]]; then extras="[$(IFS=,; echo "$*")]"; fi
# venv seeds setuptools 65.5 on Python 3.11: CVE-2024-6345 (fixed in 70.0) and CVE-2025-47273
# (fixed in 78.1.1)
.venv/bin/python -m pip install --quiet --upgrade pip "setuptools>=78.1.1"
.venv/bin/python -m pip install --quiet -e ".${extras}"
