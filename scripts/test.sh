#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then formatting, lints, the dashboard's build and
# unit tests, every Rust test of the workspace, and the dashboard's end-to-end tests in a real browser.
#
# Installs (as root, with apt-get) the real clients the data-path tests drive: qemu-utils (qemu-img, qemu-io),
# libnbd-bin (nbdinfo, nbdcopy), fio, and Debian's chromium for the dashboard tests; and the dashboard's npm packages
# with `npm ci`. Everything else comes from crates.io through cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v qemu-io >/dev/null 2>&1 || need_packages+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need_packages+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need_packages+=(fio)
if [ -f web/package.json ] && [ ! -x /usr/bin/chromium ]; then need_packages+=(chromium); fi
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== apt-get install -y ${need_packages[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need: ${need_packages[*]} (run as root or install them with apt-get)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

if [ -f web/package.json ]; then
  echo "== dashboard: npm ci, build, unit tests"
  (cd web && npm ci --no-audit --no-fund && npm run build && npm test)
fi

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

if [ -f web/package.json ] && grep -q '"e2e"' web/package.json; then
  echo "== dashboard: end-to-end tests in chromium"
  (cd web && npm run e2e)
fi
