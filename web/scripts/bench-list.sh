#!/usr/bin/env bash
# The Block Images list with 10,000 images (BENCH_IMAGES), timed in chromium: builds web/dist and a release basalt
# with it embedded, then runs e2e/images-list.bench.ts, which prints the median time of each step (load, next page,
# 100 rows, sort, search) until the rows are on screen. Needs what scripts/e2e.sh needs.
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
(cd .. && cargo build --quiet --release -p basalt)
export CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
export BASALT_BIN=${BASALT_BIN:-$(cd .. && pwd)/target/release/basalt}
exec npx vitest run --config vitest.bench.config.ts "$@"
