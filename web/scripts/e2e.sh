#!/usr/bin/env bash
# One command for the dashboard's end-to-end tests: builds web/dist, builds basalt with it embedded, then runs the
# playwright-core tests (e2e/*.e2e.ts) against a real `basalt serve` on a temp data dir. Screenshots: web/test-results/.
# Needs Debian's chromium (apt-get install -y chromium), qemu-io (apt-get install -y qemu-utils: the NBD client that
# writes the I/O the performance charts must show) and `npm ci` done in web/; never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
WEB=$(pwd)

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: $CHROMIUM is missing: install Debian's chromium (apt-get install -y chromium)" >&2
  exit 1
fi
if ! command -v qemu-io >/dev/null; then
  echo "e2e: qemu-io is missing: install Debian's qemu-utils (apt-get install -y qemu-utils)" >&2
  exit 1
fi
if [ ! -d node_modules ]; then
  echo "e2e: run 'npm ci' in web/ first" >&2
  exit 1
fi

npm run --silent build
(cd "$WEB/.." && cargo build --quiet -p basalt)
export CHROMIUM
exec npx vitest run --config vitest.e2e.config.ts "$@"
