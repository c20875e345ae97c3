#!/usr/bin/env bash
# Builds and tests the browser client (web/). Called from the repository's CI.
#
#   bash web/ci.sh                 install, check the committed bundle, unit tests, end-to-end tests
#   CARRIER_WEB_URL=http://127.0.0.1:8080/ bash web/ci.sh
#                                  also loads the page a running server serves
#
# The end-to-end tests with the carrier CLI (e2e/cli.e2e.ts) run when
# ../target/debug/carrier-server and ../target/debug/carrier are built
# (CARRIER_SERVER_BIN and CARRIER_BIN name others), and are skipped otherwise.
#
# Installs what it needs itself: Node packages from package-lock.json (npm ci), and
# Debian's chromium and chromium-driver when /usr/bin/chromium is missing.
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n== web: %s\n' "$*"; }

step "npm ci"
npm ci --no-audit --no-fund

if [ ! -x /usr/bin/chromium ]; then
  step "installing Debian's chromium and chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium chromium-driver >/dev/null
fi

step "type check"
npx tsc --noEmit

step "build (dist/ must match what is committed)"
npm run build
if ! git diff --quiet --exit-code -- dist || [ -n "$(git status --porcelain --untracked-files=all -- dist)" ]; then
  git status --short -- dist
  echo "web/dist differs from a fresh build of web/: run 'npm run build' in web/ and commit dist/." >&2
  exit 1
fi

step "unit tests"
if [ ! -f ../tests/vectors/v2_session.json ] && [ -z "${CARRIER_VECTORS:-}" ]; then
  echo "web: tests/vectors/v2_*.json are not there yet; the tests that check them are skipped."
fi
npx vitest run --reporter=default --reporter=json --outputFile.json=e2e-output/unit.json

step "end-to-end tests (fake core; real server and CLI when built)"
npm run build:fake
npx vitest run --config vitest.e2e.config.ts --reporter=default --reporter=json --outputFile.json=e2e-output/e2e.json

# One closing line in the form CI reads: "web: N passed, N failed".
node -e '
  const fs = require("fs");
  let passed = 0, failed = 0, skipped = 0;
  for (const f of ["e2e-output/unit.json", "e2e-output/e2e.json"]) {
    const r = JSON.parse(fs.readFileSync(f, "utf8"));
    passed += r.numPassedTests; failed += r.numFailedTests; skipped += r.numPendingTests + r.numTodoTests;
  }
  console.log(`web: ${passed} passed, ${failed} failed, ${skipped} skipped`);
'
