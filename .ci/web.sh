#!/usr/bin/env bash
# The browser client's checks (web/ci.sh): the committed web/dist must equal a
# fresh `npm run build`, and the end-to-end tests run against a real
# carrier-server serving the embedded bundle on a loopback web port (the page
# the binary serves must load under the server's own headers). The tests with
# the carrier CLI (web/e2e/cli.e2e.ts) start their own server from
# target/debug and drive target/debug/carrier beside the browser.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin carrier-server --bin carrier
data="$(mktemp -d)"
log="$data/server.log"
target/debug/carrier-server --data-dir "$data" --port 0 --web-port 0 >"$log" 2>&1 &
server=$!
stop_server() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"; }
trap stop_server EXIT

url=""
for _ in $(seq 1 300); do
    url="$(sed -n 's/^Web client on \(http[^ ]*\).*/\1/p' "$log" | head -n 1)"
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    cat "$log"
    echo "carrier-server did not start its web port"
    exit 1
fi
echo "== web client served by carrier-server at $url"
CARRIER_WEB_URL="$url" bash web/ci.sh
