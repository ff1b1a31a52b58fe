#!/usr/bin/env bash
# Install the tools the test suite needs besides Python packages: Chromium, which renders the
# HTML reports headless (tests/integration/test_report_html.py).
#
# Idempotent: when Chromium is already installed (or $HELIOS_CHROMIUM names an executable) it
# only says so and exits 0. Installing needs root on Debian/Ubuntu (apt-get, Debian's
# `chromium` package); otherwise it prints what to run and exits 1.
set -euo pipefail

find_chromium() {
    local candidate
    if [ -n "${HELIOS_CHROMIUM:-}" ] && [ -x "$HELIOS_CHROMIUM" ]; then
        echo "$HELIOS_CHROMIUM"
        return 0
    fi
    for candidate in chromium chromium-browser; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

if found=$(find_chromium); then
    echo "Chromium already present at $found; nothing to do."
    exit 0
fi

if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Chromium not found, and this is not a Debian/Ubuntu system." >&2
    echo "Install Chromium with your package manager, or set HELIOS_CHROMIUM to its executable." >&2
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<'MSG'
Chromium not found. The HTML report tests render pages in headless Chromium; installing it
needs root. Run:

    sudo deploy/scripts/install-test-tools.sh

or by hand:

    sudo apt-get update
    sudo apt-get install -y --no-install-recommends chromium

Or set HELIOS_CHROMIUM to a Chromium executable that is already installed.
MSG
    exit 1
fi

echo "Installing Chromium (Debian package chromium)..."
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

if found=$(find_chromium); then
    echo "Chromium installed at $found."
else
    echo "The chromium package was installed, but no chromium executable is on PATH;" >&2
    echo "set HELIOS_CHROMIUM to it." >&2
    exit 1
fi
