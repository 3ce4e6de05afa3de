#!/usr/bin/env bash
# Real-guest tests of attaching basalt images: boots Debian's cloud kernel under QEMU (TCG; KVM is not used) with a
# busybox initramfs, and checks
#   - the VM path: a VM whose virtio disks are basalt images over NBD (TCP and the Unix socket) reads what the host
#     wrote and writes bytes basalt then holds;
#   - the host path, in a guest that reaches the host's servers as 10.0.2.2: `basalt device map` (the binary and its
#     libraries on a tools disk), mkfs, mount, write, list, unmap, then e2fsck -fn and the file's content on the
#     host; a snapshot maps read-only; refusals (unknown export, unreachable server, TLS required, held write lock)
#     leave nothing mapped; Debian's nbd-client maps an export; a TLS map through the daemon's relay with a client
#     certificate from basalt's CA; and a write-and-verify loop while the host restarts `basalt serve`.
#
# Usage: scripts/guest/run-tests.sh [BASALT_BINARY]   (default: cargo build -p basalt, then target/debug/basalt)
# Needs (installed by scripts/test.sh): qemu-system-x86, busybox-static, nbd-client, e2fsprogs; the kernel
# package is fetched with `apt-get download` into $BASALT_GUEST_CACHE (default target/guest) and unpacked there.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
started=$SECONDS
# The default binary is built here without the Ceph feature, so the guest needs no librbd.
if [ $# -ge 1 ]; then bin=$1; else
  cargo build --quiet -p basalt
  bin=${CARGO_TARGET_DIR:-target}/debug/basalt
fi
bin=$(realpath "$bin")
cache=${BASALT_GUEST_CACHE:-$root/target/guest}
mkdir -p "$cache"

# --- the kernel and its modules, unpacked from the Debian package without installing it ---
if [ ! -f "$cache/kernel/vmlinuz" ]; then
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2}' | head -1)
  [ -n "$pkg" ] || { echo "apt knows no linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
  rm -rf "$cache/kernel" "$cache/deb"
  mkdir -p "$cache/deb" "$cache/kernel"
  (cd "$cache/deb" && apt-get download "$pkg" >/dev/null 2>&1) || {
    [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$cache/deb" && apt-get download "$pkg" >/dev/null)
  }
  dpkg -x "$cache"/deb/*.deb "$cache/deb/x"
  cp "$cache"/deb/x/boot/vmlinuz-* "$cache/kernel/vmlinuz"
  mkdir -p "$cache/kernel/modules"
  for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover \
    net_failover virtio_net nbd; do
    find "$cache/deb/x/lib/modules" -name "$m.ko" -exec cp {} "$cache/kernel/modules/" \;
  done
  rm -rf "$cache/deb"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/basalt-guest.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the initramfs: busybox, the init script, the modules ---
mkdir -p "$work/initramfs/bin" "$work/initramfs/modules"
cp /bin/busybox "$work/initramfs/bin/busybox"
cp scripts/guest/init "$work/initramfs/init"
chmod +x "$work/initramfs/init"
cp "$cache"/kernel/modules/*.ko "$work/initramfs/modules/"
(cd "$work/initramfs" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initramfs.gz")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pass=0
failed=()
check() { # name, condition result (0 ok)
  if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok   $1"; else failed+=("$1"); echo "FAIL $1"; fi
}

# --- servers: A plain TCP (and its Unix socket), B with --nbd-tls auto ---
export BASALT_ADMIN_PASSWORD=guest-tests-password
start_server() { # name, http port, nbd port, extra args...
  local name=$1 http=$2 nbd=$3
  shift 3
  "$bin" serve --data-dir "$work/$name" --listen "127.0.0.1:$http" --nbd-listen "127.0.0.1:$nbd" "$@" \
    >>"$work/$name.log" 2>&1 &
  echo $! >"$work/$name.pid"
  pids+=($!)
  for _ in $(seq 1 200); do
    [ -S "$work/$name/api.sock" ] && [ -S "$work/$name/nbd.sock" ] && return 0
    sleep 0.1
  done
  echo "basalt serve $name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}
a_http=$(free_port) a_nbd=$(free_port) b_http=$(free_port) b_nbd=$(free_port)
start_server a "$a_http" "$a_nbd"
start_server b "$b_http" "$b_nbd" --nbd-tls auto
A() { "$bin" --data-dir "$work/a" --no-progress "$@"; }
B() { "$bin" --data-dir "$work/b" --no-progress "$@"; }
md5() { md5sum | cut -d' ' -f1; }
# The first MiB the host writes to an image: a deterministic pattern.
# `yes` ends with SIGPIPE when head has enough, which pipefail would count as a failure.
fill() { { yes "$1" || true; } | head -c "$2"; }
pattern() { fill "host wrote $1" 1048576; }

# From here on a failed step is a failed check, not the end of the run.
set +e

# --- VM path ---
for img in vmtcp vmunix; do
  pattern "$img" >"$work/$img.raw"
  truncate -s 8M "$work/$img.raw"
  A import "$work/$img.raw" "rbd/$img" >/dev/null
done
t0=$SECONDS
timeout 300 qemu-system-x86_64 -accel tcg -m 512 -smp 1 -nographic -no-reboot -nic none \
  -kernel "$cache/kernel/vmlinuz" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=1 basalt.mode=vm" \
  -drive "file=nbd://127.0.0.1:$a_nbd/rbd/vmtcp,format=raw,if=virtio,cache=none" \
  -drive "file=nbd+unix:///rbd/vmunix?socket=$work/a/nbd.sock,format=raw,if=virtio,cache=none" \
  -serial "file:$work/vm.console" -monitor none -display none </dev/null >"$work/vm.qemu" 2>&1 || true
echo "VM path: the guest ran for $((SECONDS - t0)) s (boot, two disks over NBD, power off)"
boot_line=$(grep -m1 "GUEST-MD5" "$work/vm.console" || true)
grep -q "GUEST-DONE" "$work/vm.console"
check "vm: the guest booted and finished" $?
for pair in vda:vmtcp vdb:vmunix; do
  d=${pair%%:*} img=${pair#*:}
  [ "$(sed -n "s/.*GUEST-MD5 $d \([0-9a-f]*\).*/\1/p" "$work/vm.console" | tr -d '\r')" = "$(pattern "$img" | md5)" ]
  check "vm: the guest read the host's bytes of $img ($d)" $?
  A export "rbd/$img" "$work/$img.out" >/dev/null
  [ "$(head -c 1048576 "$work/$img.out" | md5)" = "$(pattern "$img" | md5)" ] &&
    [ "$(dd if="$work/$img.out" bs=1M skip=2 count=1 2>/dev/null | md5)" = \
      "$(fill "guest wrote $d" 1048576 | md5)" ] &&
    [ "$(dd if="$work/$img.out" bs=1M skip=3 2>/dev/null | tr -d '\0' | wc -c)" = 0 ]
  check "vm: basalt holds exactly the guest's bytes of $img" $?
done
[ -n "$boot_line" ] || { echo "--- VM console:"; tail -30 "$work/vm.console"; }

# --- host path ---
for img in hostimg snapimg lockimg nbdcimg reimg; do A create --size 64M "rbd/$img"; done
B create --size 16M rbd/tlsimg
pattern snapimg >"$work/snapimg.raw"
A rm rbd/snapimg
A import "$work/snapimg.raw" rbd/snapimg >/dev/null
A snap create rbd/snapimg@base
# After the snapshot, the head changes: the snapshot map must still show the snapshot's bytes.
qemu-io -f raw -c 'write -P 0x33 0 1M' "nbd+unix:///rbd/snapimg?socket=$work/a/nbd.sock" >/dev/null

# The tools disk: basalt, mke2fs, nbd-client, their libraries, the TLS client files, the addresses.
tools=$work/tools
mkdir -p "$tools/bin" "$tools/lib" "$tools/certs"
cp "$bin" "$tools/bin/basalt"
strip "$tools/bin/basalt" 2>/dev/null || true
cp "$(command -v mke2fs)" "$tools/bin/mke2fs"
cp "$(command -v nbd-client)" "$tools/bin/nbd-client"
for f in "$tools"/bin/*; do
  ldd "$f" | awk '/=> \// {print $3} /^\t\/lib64\// {print $1}' | while read -r lib; do
    cp -L "$lib" "$tools/lib/"
  done
done
cp -L /lib64/ld-linux-x86-64.so.2 "$tools/lib/"
B nbd cert issue admin --out "$tools/certs" >/dev/null
printf 'NBD_PLAIN=10.0.2.2:%s\nNBD_TLS=10.0.2.2:%s\n' "$a_nbd" "$b_nbd" >"$tools/env"
mke2fs -q -t ext4 -d "$tools" "$work/tools.img" 400M

t0=$SECONDS
timeout 900 qemu-system-x86_64 -accel tcg -m 768 -smp 1 -nographic -no-reboot \
  -nic user,model=virtio-net-pci,restrict=off \
  -kernel "$cache/kernel/vmlinuz" -initrd "$work/initramfs.gz" \
  -append "console=ttyS0 panic=-1 quiet loglevel=1 basalt.mode=host" \
  -drive "file=$work/tools.img,format=raw,if=virtio,readonly=on" \
  -serial "file:$work/host.console" -monitor none -display none </dev/null >"$work/host.qemu" 2>&1 &
qemu=$!
pids+=($qemu)
# Restart server A once the guest starts its write-and-verify loop.
restarted=no
while kill -0 "$qemu" 2>/dev/null; do
  if [ $restarted = no ] && grep -q "GUEST-RECONNECT-START" "$work/host.console" 2>/dev/null; then
    sleep 3
    kill -TERM "$(cat "$work/a.pid")"
    while kill -0 "$(cat "$work/a.pid")" 2>/dev/null; do sleep 0.1; done
    sleep 2
    start_server a "$a_http" "$a_nbd"
    restarted=yes
    echo "host: restarted basalt serve while the guest was writing"
  fi
  sleep 0.5
done
wait "$qemu" || true
echo "host path: the guest ran for $((SECONDS - t0)) s"
tr -d '\r' <"$work/host.console" | grep -E "^GUEST" | grep -v "^GUEST-DAEMON-LOG" || true
grep -q "GUEST-DONE" "$work/host.console"
check "host: the guest finished" $?
for step in map mkfs mount umount list list-json unmap-mounted unmap list-empty snap-read-only snap-unmap \
  unknown-export unreachable tls-required write-lock lock-single nbd-client-write nbd-client-disconnect tls-write \
  tls-list tls-unmap reconnect reconnect-unmap; do
  grep -q "GUEST $step OK" <(tr -d '\r' <"$work/host.console")
  check "host: $step" $?
done
[ $restarted = yes ]
check "host: basalt serve was restarted during the reconnect loop" $?
A export rbd/hostimg "$work/hostimg.out" >/dev/null
e2fsck -fn "$work/hostimg.out" >"$work/e2fsck.out" 2>&1
check "host: e2fsck -fn is clean on the image the guest formatted" $?
[ "$(debugfs -R 'cat /hello.txt' "$work/hostimg.out" 2>/dev/null)" = "written in the guest through basalt device map" ]
check "host: the guest's file is in the image" $?
[ "$(debugfs -R 'cat /random.bin' "$work/hostimg.out" 2>/dev/null | md5)" = \
  "$(sed -n 's/.*GUEST-MD5 random.bin \([0-9a-f]*\).*/\1/p' "$work/host.console" | tr -d '\r')" ]
check "host: the guest's 2 MiB file has the bytes the guest wrote" $?
[ "$(sed -n 's/.*GUEST-MD5 snap \([0-9a-f]*\).*/\1/p' "$work/host.console" | tr -d '\r')" = "$(pattern snapimg | md5)" ]
check "host: the snapshot map read the snapshot's bytes" $?
A export rbd/nbdcimg "$work/nbdc.out" >/dev/null
[ "$(head -c 1048576 "$work/nbdc.out" | md5)" = "$(fill "nbd-client wrote this" 1048576 | md5)" ]
check "host: basalt holds what nbd-client wrote" $?
B export rbd/tlsimg "$work/tls.out" >/dev/null
[ "$(head -c 1048576 "$work/tls.out" | md5)" = "$(fill "written over TLS" 1048576 | md5)" ]
check "host: basalt holds what was written over TLS" $?
A export rbd/reimg "$work/re.out" >/dev/null
ok=0
for i in $(seq 0 23); do
  [ "$(dd if="$work/re.out" bs=256k skip="$i" count=1 2>/dev/null | md5)" = "$(fill "block $i" 262144 | md5)" ] ||
    ok=1
done
check "host: every block written across the restart is in the image" $ok
if [ ${#failed[@]} -gt 0 ]; then
  echo "--- guest console (host path):"
  tr -d '\r' <"$work/host.console" | tail -60
  echo "--- server A log:"
  tail -20 "$work/a.log"
fi

cp "$work/vm.console" "$work/host.console" "$cache/" 2>/dev/null || true
echo "guest tests: $pass passed, ${#failed[@]} failed, in $((SECONDS - started)) s"
[ ${#failed[@]} = 0 ]
