#!/usr/bin/env bash
# Install the real Prometheus / Alertmanager binaries used by the integration tests
# (tests/stack.py), PostgreSQL's server (tests/pgkit.py starts its own on a free port), and
# Chromium with its WebDriver for the console's browser test (tests/test_console_browser.py),
# and make sure no packaged service is holding ports 9090/9093/5432.
# Idempotent: safe to run repeatedly, locally or in CI.
set -euo pipefail

SUDO=""
if [[ "$(id -u)" -ne 0 ]] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

if [[ ! -x /usr/bin/prometheus || ! -x /usr/bin/prometheus-alertmanager ]]; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends prometheus prometheus-alertmanager
fi

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends chromium chromium-driver
fi

if ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql
fi

# The Debian packages enable system services; tests start their own copies on free ports,
# so stop any packaged instance (no-op in containers, where nothing was started).
for svc in prometheus prometheus-alertmanager postgresql; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        $SUDO systemctl stop "$svc"
        $SUDO systemctl disable "$svc" >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
        $SUDO service "$svc" stop || true
    fi
done

for bin in /usr/bin/prometheus /usr/bin/prometheus-alertmanager; do
    version="$("$bin" --version 2>&1)"
    echo "${version%%$'\n'*}"
done
/usr/bin/chromedriver --version
for ctl in /usr/lib/postgresql/*/bin/pg_ctl; do
    "$ctl" --version
done
