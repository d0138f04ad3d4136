#!/usr/bin/env bash
# Set up and run alertpilot on its embedded default config (SQLite under var/,
# template narratives, Slack and PagerDuty off). Extra arguments go to `serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
exec .venv/bin/alertpilot serve --config configs/alertpilot.yaml "$@"
