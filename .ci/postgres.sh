# A throw-away PostgreSQL cluster for the test suite. Source this file, then:
#
#   postgres_start        # installs Debian's postgresql if missing, starts a
#                         # cluster in a temporary directory on a free
#                         # loopback port and exports CARRIER_TEST_DATABASE_URL
#   ...run the tests...
#   postgres_stop         # stops the cluster and deletes its directory
#
# Run as a script (`bash .ci/postgres.sh`), it starts a cluster, prints its
# URL and leaves it running; `bash .ci/postgres.sh stop DIR` stops it.
#
# initdb refuses to run as root, so the cluster belongs to the unprivileged
# `postgres` user that Debian's package creates (or to the caller when not root).

postgres_bin_dir() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/initdb" ]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

postgres_install() {
    if postgres_bin_dir >/dev/null; then
        return 0
    fi
    echo "== installing PostgreSQL from the distribution's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    postgres_bin_dir >/dev/null
}

# Runs a command as the cluster's owner.
postgres_as_owner() {
    if [ "$(id -u)" = 0 ]; then
        su postgres -s /bin/sh -c "$*"
    else
        sh -c "$*"
    fi
}

postgres_free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null \
        || echo $((20000 + RANDOM % 20000))
}

postgres_start() {
    postgres_install || { echo "PostgreSQL could not be installed" >&2; return 1; }
    local bin port dir
    bin=$(postgres_bin_dir)
    port=$(postgres_free_port)
    dir=$(mktemp -d /tmp/carrier-pg.XXXXXX)
    chmod 755 "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown postgres: "$dir"
    fi
    # Trust on loopback only: the cluster lives as long as the test run and
    # listens on 127.0.0.1 alone.
    postgres_as_owner "'$bin/initdb' -D '$dir/data' -U carrier --auth=trust -E UTF8 --no-sync >'$dir/initdb.log' 2>&1" \
        || { cat "$dir/initdb.log" >&2; return 1; }
    postgres_as_owner "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -o \"-h 127.0.0.1 -p $port -k '$dir' -c max_connections=400 -c fsync=on -c synchronous_commit=on\" start >/dev/null" \
        || { cat "$dir/server.log" >&2; return 1; }
    POSTGRES_DIR=$dir
    CARRIER_TEST_DATABASE_URL="postgres://carrier@127.0.0.1:$port/postgres"
    export POSTGRES_DIR CARRIER_TEST_DATABASE_URL
    echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') listening: $CARRIER_TEST_DATABASE_URL (cluster in $dir)" >&2
}

postgres_stop() {
    local dir=${1:-${POSTGRES_DIR:-}}
    [ -n "$dir" ] && [ -d "$dir/data" ] || return 0
    postgres_as_owner "'$(postgres_bin_dir)/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null" || true
    rm -rf "$dir"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    set -euo pipefail
    case "${1:-start}" in
        start)
            postgres_start
            echo "$CARRIER_TEST_DATABASE_URL"
            echo "stop it with: bash $0 stop $POSTGRES_DIR" >&2
            ;;
        stop) postgres_stop "${2:?the cluster directory}" ;;
        *) echo "usage: $0 [start | stop DIR]" >&2; exit 2 ;;
    esac
fi
