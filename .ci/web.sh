#!/usr/bin/env bash
# The browser client's checks (web/ci.sh), with its end-to-end tests also run
# against a real carrier-server serving the embedded bundle on a loopback web
# port: the page the binary serves must load under the server's own headers.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin carrier-server
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
