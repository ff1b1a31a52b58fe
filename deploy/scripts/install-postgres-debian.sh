#!/usr/bin/env bash
# Install the PostgreSQL server programs the helios sandbox runs (initdb, postgres, pg_ctl,
# pg_basebackup, pg_rewind) on Debian/Ubuntu, WITHOUT creating or starting any cluster
# (nothing ends up listening on port 5432).
#
# Idempotent: when the programs are already under /usr/lib/postgresql/*/bin (or in
# $HELIOS_PG_BINDIR) it only says so and exits 0. Installing needs root; otherwise it prints
# what to run and exits 1.
set -euo pipefail

REQUIRED=(initdb postgres pg_ctl pg_basebackup pg_rewind)
CREATECLUSTER_CONF=/etc/postgresql-common/createcluster.conf

has_all() { # $1 = directory
    local prog
    [ -d "$1" ] || return 1
    for prog in "${REQUIRED[@]}"; do
        [ -x "$1/$prog" ] || return 1
    done
}

find_bindir() {
    local dir
    if [ -n "${HELIOS_PG_BINDIR:-}" ] && has_all "$HELIOS_PG_BINDIR"; then
        echo "$HELIOS_PG_BINDIR"
        return 0
    fi
    for dir in /usr/lib/postgresql/*/bin; do
        if has_all "$dir"; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

if bindir=$(find_bindir); then
    echo "PostgreSQL server binaries already present in $bindir; nothing to do."
    exit 0
fi

if [ ! -r /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "PostgreSQL server binaries not found, and this is not a Debian/Ubuntu system." >&2
    echo "Install the PostgreSQL server (version 15 or later) with your package manager and" >&2
    echo "set HELIOS_PG_BINDIR to the directory that holds initdb and postgres." >&2
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    cat >&2 <<'EOF'
PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin.
Installing them needs root. Run:

    sudo deploy/scripts/install-postgres-debian.sh

or by hand (no cluster is created, so nothing listens on port 5432):

    sudo apt-get update
    sudo apt-get install -y --no-install-recommends postgresql-common
    echo 'create_main_cluster = false' | sudo tee -a /etc/postgresql-common/createcluster.conf
    sudo apt-get install -y --no-install-recommends postgresql

Or set HELIOS_PG_BINDIR to a directory that already holds initdb and postgres.
EOF
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "Installing the PostgreSQL server packages (no cluster will be created)..."
apt-get update
apt-get install -y --no-install-recommends postgresql-common

# Stop the postgresql package from creating (and starting) a 'main' cluster on port 5432.
mkdir -p "$(dirname "$CREATECLUSTER_CONF")"
touch "$CREATECLUSTER_CONF"
if grep -Eq '^[[:space:]]*#?[[:space:]]*create_main_cluster[[:space:]]*=' "$CREATECLUSTER_CONF"; then
    sed -i -E 's/^[[:space:]]*#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
        "$CREATECLUSTER_CONF"
else
    echo 'create_main_cluster = false' >>"$CREATECLUSTER_CONF"
fi

apt-get install -y --no-install-recommends postgresql

if bindir=$(find_bindir); then
    echo "PostgreSQL server binaries installed in $bindir."
else
    echo "The postgresql package was installed, but ${REQUIRED[*]} were not found under" >&2
    echo "/usr/lib/postgresql/*/bin; set HELIOS_PG_BINDIR to where they are." >&2
    exit 1
fi
