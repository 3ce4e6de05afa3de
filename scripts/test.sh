#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, then formatting, lints, the dashboard's build and
# unit tests, every Rust test of the workspace (the Ceph ones against a throw-away cluster), and the dashboard's
# end-to-end tests in a real browser.
#
# Installs (as root, with apt-get) the real clients the data-path tests drive: qemu-utils (qemu-img, qemu-io),
# libnbd-bin (nbdinfo, nbdcopy), fio, prometheus (with promtool) and python3-yaml for scripts/prometheus-test.py,
# and Debian's chromium for the dashboard tests; Ceph's daemons and CLIs
# (ceph-mon, ceph-osd, ceph-mgr, ceph-common) for the throw-away cluster of scripts/ceph/micro-ceph.sh, and
# librbd-dev and librados-dev, which the Ceph backend links; qemu-system-x86, busybox-static, nbd-client and
# e2fsprogs for the real-guest tests; and the dashboard's npm packages with `npm ci`.
# Everything else comes from crates.io through cargo.
#
# The cluster listens on 127.0.0.1 from port $MICRO_CEPH_PORT (default 15300) upwards; it is stopped and its
# directory removed when the script ends, however it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

need_packages=()
command -v qemu-io >/dev/null 2>&1 || need_packages+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need_packages+=(libnbd-bin)
command -v fio >/dev/null 2>&1 || need_packages+=(fio)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || need_packages+=(prometheus)
python3 -c 'import yaml' >/dev/null 2>&1 || need_packages+=(python3-yaml)
if [ -f web/package.json ] && [ ! -x /usr/bin/chromium ]; then need_packages+=(chromium); fi
command -v ceph-mon >/dev/null 2>&1 || need_packages+=(ceph-mon)
command -v ceph-osd >/dev/null 2>&1 || need_packages+=(ceph-osd)
command -v ceph-mgr >/dev/null 2>&1 || need_packages+=(ceph-mgr)
{ command -v ceph && command -v rbd && command -v rados; } >/dev/null 2>&1 || need_packages+=(ceph-common)
[ -f /usr/include/rbd/librbd.h ] || need_packages+=(librbd-dev)
[ -f /usr/include/rados/librados.h ] || need_packages+=(librados-dev)
command -v uuidgen >/dev/null 2>&1 || need_packages+=(uuid-runtime)
command -v python3 >/dev/null 2>&1 || need_packages+=(python3)
# The real-guest tests (scripts/guest/run-tests.sh): QEMU, a static busybox for the initramfs, Debian's nbd-client
# and e2fsprogs; the guest kernel itself is fetched there with apt-get download.
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_packages+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need_packages+=(busybox-static)
[ -x /usr/sbin/nbd-client ] || need_packages+=(nbd-client)
{ command -v debugfs && command -v mke2fs && command -v e2fsck; } >/dev/null 2>&1 || need_packages+=(e2fsprogs)
if [ ${#need_packages[@]} -gt 0 ]; then
  echo "== apt-get install -y ${need_packages[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "the tests need: ${need_packages[*]} (run as root or install them with apt-get)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_packages[@]}" >/dev/null
  # Debian's qemu-system-x86 replaces a newer qemu-utils (a backport) with its own version: put qemu-utils back.
  command -v qemu-io >/dev/null 2>&1 || apt-get install -y -qq qemu-utils >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

if [ -f web/package.json ]; then
  echo "== dashboard: npm ci, build, unit tests"
  (cd web && npm ci --no-audit --no-fund && npm run build && npm test)
fi

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo clippy -D warnings, with the Ceph backend in the server and the binary"
cargo clippy --workspace --all-targets --locked --features basalt/ceph,basalt-ceph/ceph -- -D warnings

echo "== a throw-away Ceph cluster"
ceph_dir=$(mktemp -d "${TMPDIR:-/tmp}/basalt-ceph.XXXXXX")
stop_cluster() {
  scripts/ceph/micro-ceph.sh stop "$ceph_dir" >/dev/null 2>&1 || true
  rm -rf "$ceph_dir"
}
trap stop_cluster EXIT
# An interrupted run still goes through the EXIT trap.
trap 'exit 130' INT
trap 'exit 143' TERM
MICRO_CEPH_PORT=${MICRO_CEPH_PORT:-15300} scripts/ceph/micro-ceph.sh start "$ceph_dir"

# One build and one run for everything: the engine's and the server's tests, and against the cluster the
# conformance suite, the librbd wrapper's tests and `basalt serve --ceph-conf`. BASALT_REQUIRE_CEPH=1 turns a Ceph
# test that would skip into a failure. The variables are set for this step only: the dashboard's end-to-end tests
# must serve the embedded engine.
echo "== tests (with the Ceph backend, against the cluster)"
features=basalt/ceph,basalt-ceph/ceph
if cargo nextest --version >/dev/null 2>&1; then
  BASALT_CEPH_CONF="$ceph_dir/ceph.conf" BASALT_REQUIRE_CEPH=1 \
    cargo nextest run --workspace --locked --no-fail-fast --features "$features"
else
  BASALT_CEPH_CONF="$ceph_dir/ceph.conf" BASALT_REQUIRE_CEPH=1 \
    cargo test --workspace --locked --no-fail-fast --features "$features"
fi
stop_cluster
trap - EXIT

echo "== /metrics against a real Prometheus: Ceph's RBD dashboards under fio, promtool, Ceph's pool alerts"
python3 scripts/prometheus-test.py "${CARGO_TARGET_DIR:-target}/debug/basalt"

if [ -f web/package.json ] && grep -q '"e2e"' web/package.json; then
  echo "== dashboard: end-to-end tests in chromium"
  (cd web && npm run e2e)
fi

echo "== real-guest tests: device map, VM disks, reconnect and TLS in a QEMU guest (scripts/guest/run-tests.sh)"
bash scripts/guest/run-tests.sh

echo "== all passed in $(((SECONDS - started) / 60)) min $(((SECONDS - started) % 60)) s"
