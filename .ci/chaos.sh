#!/usr/bin/env bash
# Crash loops, short: SIGKILL of the real carrier-server under load, one
# server and then two neighbours (killed in the middle of a hop), each run
# ending with the total-queue check (docs/RELIABILITY.md). Uses the debug
# build `cargo test` has already made; the full-length runs are in the doc.
#
# CHAOS_SEED picks the schedule (a new one each run unless set; printed
# either way, so a failure can be replayed with the same seed).
set -euo pipefail
cd "$(dirname "$0")/.."

seed="${CHAOS_SEED:-$(date +%s)}"
cycles="${CHAOS_CYCLES:-20}"
pair_cycles="${CHAOS_PAIR_CYCLES:-10}"

echo "== crash loops (seed $seed)"
cargo build --locked --bins --example crashloop
crashloop() { cargo run --quiet --locked --example crashloop -- --seed "$seed" "$@"; }
crashloop --cycles "$cycles"
crashloop --servers 2 --cycles "$pair_cycles"
