#!/usr/bin/env bash
# Install the tools the test suite needs besides Python packages:
#   - Chromium, which renders the HTML reports headless (tests/integration/test_report_html.py);
#   - promtool, which checks and unit-tests the Prometheus alert rules
#     (deploy/prometheus/alerts.yml, tests/unit/test_deploy_monitoring.py). Debian ships it in
#     the `prometheus` package; the Prometheus server that package contains is never started here;
#   - etcd, the coordination service of the leader election tests
#     (tests/integration/test_coord_etcd.py). Debian ships it in `etcd-server`; the tests start
#     their own members on loopback ports, so the packaged etcd service is never started here;
#   - ip (iproute2) and setpriv (util-linux), with which the partition tests
#     (tests/integration/test_partitions.py, marker netns; root only) build network namespaces
#     and run PostgreSQL inside them. No nftables/iptables: a partition is a link taken down.
#
# Idempotent: when every tool is already installed (Chromium: or $HELIOS_CHROMIUM names an
# executable; promtool: or $HELIOS_PROMTOOL names one; etcd: or $HELIOS_ETCD names one) it only
# says so and exits 0. Installing needs root on Debian/Ubuntu (apt-get, Debian's `chromium`,
# `prometheus`, `etcd-server`, `iproute2` and `util-linux` packages); otherwise it prints what to
# run and exits 1.
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

find_promtool() {
    if [ -n "${HELIOS_PROMTOOL:-}" ] && [ -x "$HELIOS_PROMTOOL" ]; then
        echo "$HELIOS_PROMTOOL"
        return 0
    fi
    command -v promtool 2>/dev/null
}

find_etcd() {
    if [ -n "${HELIOS_ETCD:-}" ] && [ -x "$HELIOS_ETCD" ]; then
        echo "$HELIOS_ETCD"
        return 0
    fi
    command -v etcd 2>/dev/null
}

find_program() {
    command -v "$1" 2>/dev/null
}

missing=()     # Debian packages to install
missing_what=() # what they provide, for messages
if found=$(find_chromium); then
    echo "Chromium already present at $found."
else
    missing+=(chromium)
    missing_what+=(Chromium)
fi
if found=$(find_promtool); then
    echo "promtool already present at $found."
else
    missing+=(prometheus)
    missing_what+=(promtool)
fi
if found=$(find_etcd); then
    echo "etcd already present at $found."
else
    missing+=(etcd-server)
    missing_what+=(etcd)
fi

if found=$(find_program ip); then
    echo "ip (iproute2) already present at $found."
else
    missing+=(iproute2)
    missing_what+=("ip (iproute2)")
fi
if found=$(find_program setpriv); then
    echo "setpriv (util-linux) already present at $found."
else
    missing+=(util-linux)
    missing_what+=("setpriv (util-linux)")
fi

if [ "${#missing[@]}" -eq 0 ]; then
    echo "Nothing to do."
    exit 0
fi

if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "Not found: ${missing_what[*]}, and this is not a Debian/Ubuntu system." >&2
    echo "Install Chromium (or set HELIOS_CHROMIUM to its executable) and Prometheus's promtool" >&2
    echo "(or set HELIOS_PROMTOOL to it) and etcd (or set HELIOS_ETCD to it), and iproute2 and" >&2
    echo "util-linux (ip, setpriv) for the partition tests, with your package manager." >&2
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<MSG
Not found: ${missing_what[*]}. The HTML report tests render pages in headless Chromium and the
alert rule tests run promtool (Debian package prometheus), the leader election tests run etcd
(Debian package etcd-server), the partition tests need ip and setpriv (Debian packages
iproute2, util-linux); installing them needs root. Run:

    sudo deploy/scripts/install-test-tools.sh

or by hand:

    sudo apt-get update
    sudo apt-get install -y --no-install-recommends ${missing[*]}

By hand, the prometheus package starts a Prometheus server on port 9090 and etcd-server may
start etcd on 2379: stop them afterwards (sudo systemctl disable --now prometheus etcd); the
script keeps them from starting. Or set HELIOS_CHROMIUM / HELIOS_PROMTOOL / HELIOS_ETCD to
executables that are already installed.
MSG
    exit 1
fi

# Keep the package's maintainer scripts from starting any daemon (the prometheus package would
# start a Prometheus server, etcd-server an etcd member): invoke-rc.d and deb-systemd-invoke ask
# /usr/sbin/policy-rc.d, and exit code 101 means "action forbidden". An existing policy is put
# back afterwards.
POLICY=/usr/sbin/policy-rc.d
policy_backup=""
restore_policy() {
    if [ -n "$policy_backup" ]; then
        mv -f "$policy_backup" "$POLICY"
    else
        rm -f "$POLICY"
    fi
}
if [ -e "$POLICY" ]; then
    policy_backup=$(mktemp "${POLICY}.helios-backup.XXXXXX")
    cp -p "$POLICY" "$policy_backup"
fi
trap restore_policy EXIT
printf '#!/bin/sh\n# helios-orchestrator install-test-tools.sh: no daemon starts during the install.\nexit 101\n' >"$POLICY"
chmod 0755 "$POLICY"

echo "Installing ${missing_what[*]} (Debian packages ${missing[*]})..."
apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
# etcd-server also enables its service for the next boot; the tests start members of their own,
# so disable it rather than leave an etcd to appear on port 2379 after a reboot.
# (systemctl edits the links even where systemd is not running, e.g. in a container.)
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable etcd.service >/dev/null 2>&1 || true
fi

status=0
if found=$(find_chromium); then
    echo "Chromium installed at $found."
else
    echo "The chromium package was installed, but no chromium executable is on PATH;" >&2
    echo "set HELIOS_CHROMIUM to it." >&2
    status=1
fi
if found=$(find_promtool); then
    echo "promtool installed at $found."
else
    echo "The prometheus package was installed, but no promtool executable is on PATH;" >&2
    echo "set HELIOS_PROMTOOL to it." >&2
    status=1
fi
if found=$(find_etcd); then
    echo "etcd installed at $found."
else
    echo "The etcd-server package was installed, but no etcd executable is on PATH;" >&2
    echo "set HELIOS_ETCD to it." >&2
    status=1
fi
for program in ip setpriv; do
    if found=$(find_program "$program"); then
        echo "$program installed at $found."
    else
        echo "No $program executable on PATH after the install." >&2
        status=1
    fi
done
exit "$status"
