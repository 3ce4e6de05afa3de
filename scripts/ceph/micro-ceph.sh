#!/usr/bin/env bash
# A throw-away single-node Ceph cluster on loopback, for basalt's Ceph backend tests.
#
#   micro-ceph.sh start DIR   creates DIR (it must not exist or be empty) and starts in it one monitor, one manager
#                             and one OSD that keeps its data in memory (memstore), with authentication off, pools of
#                             size 1 and an initialised `rbd` pool. It returns once the cluster serves I/O, and
#                             prints `CEPH_CONF=DIR/ceph.conf` as its last line.
#   micro-ceph.sh stop DIR    stops the daemons started in DIR (and only them, through their pid files) and waits
#                             until they have exited. DIR is kept (logs); remove it yourself.
#   micro-ceph.sh status DIR  runs `ceph -s` against the cluster in DIR.
#
# Needs Debian's packages ceph-mon ceph-osd ceph-mgr ceph-common and python3. Runs as root without systemd (the
# daemons run as the calling user). The monitor listens on 127.0.0.1, msgr v2 on port $MICRO_CEPH_PORT and v1 on the
# next port (default 13300 and 13301); the OSD and manager bind in the 98 ports above those. The defaults lie below
# Linux's ephemeral range; set MICRO_CEPH_PORT to run a second cluster at the same time.
#
# Environment: MICRO_CEPH_PORT (default 13300), MICRO_CEPH_MEMSTORE_BYTES (default 4 GiB),
# MICRO_CEPH_TIMEOUT (seconds for each wait, default 90), MICRO_CEPH_KEEP_ON_FAILURE (when set, a failed start
# leaves the daemons running for inspection instead of stopping them).
set -euo pipefail

PORT=${MICRO_CEPH_PORT:-13300}
MEMSTORE_BYTES=${MICRO_CEPH_MEMSTORE_BYTES:-4294967296}
TIMEOUT=${MICRO_CEPH_TIMEOUT:-90}
DAEMONS=(mgr.x osd.0 mon.a) # in stop order

usage() {
    echo "usage: $0 start|stop|status DIR" >&2
    exit 2
}

say() { echo "micro-ceph: $*" >&2; }

# --- pid files -----------------------------------------------------------------------------------------------------

# Prints the pid of daemon $1 if its pid file names a live process that was started with this cluster's ceph.conf.
live_pid() {
    local pidfile="$DIR/run/$1.pid" pid
    [ -s "$pidfile" ] || return 1
    pid=$(tr -dc '0-9' <"$pidfile")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    # Guards against a recycled pid: the process must be a ceph daemon started with our configuration file.
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-c $CONF" || return 1
    echo "$pid"
}

stop_cluster() {
    local name pid waited
    for name in "${DAEMONS[@]}"; do
        pid=$(live_pid "$name") || continue
        kill -TERM "$pid" 2>/dev/null || continue
        waited=0
        while [ -d "/proc/$pid" ] && [ "$waited" -lt 300 ]; do # 30 s, then SIGKILL
            sleep 0.1
            waited=$((waited + 1))
        done
        if [ -d "/proc/$pid" ]; then
            say "$name (pid $pid) ignored SIGTERM for 30 s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            while [ -d "/proc/$pid" ]; do sleep 0.1; done
        fi
        rm -f "$DIR/run/$name.pid"
    done
}

# --- failure reporting ---------------------------------------------------------------------------------------------

STARTED=0

fail() {
    say "error: $*"
    local log
    for log in "$DIR"/log/*.log; do
        [ -s "$log" ] || continue
        echo "----- last lines of $log -----" >&2
        tail -n 25 "$log" >&2
    done
    if [ "$STARTED" = 1 ] && [ -n "${MICRO_CEPH_KEEP_ON_FAILURE:-}" ]; then
        say "MICRO_CEPH_KEEP_ON_FAILURE is set: the daemons keep running; stop them with: $0 stop $DIR"
    elif [ "$STARTED" = 1 ]; then
        say "stopping the daemons started so far (logs stay in $DIR/log)"
        stop_cluster
    fi
    exit 1
}

# Runs a ceph CLI command against this cluster, bounded in time so a dead monitor cannot hang the script.
cephc() {
    timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"
}

# wait_for WHAT COMMAND...: retries COMMAND every half second until it succeeds or $TIMEOUT seconds have passed.
wait_for() {
    local what=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

# Runs a setup step, failing with its output when it fails.
step() {
    local what=$1 out
    shift
    out=$("$@" 2>&1) || fail "$what failed: $out"
}

start_daemon() {
    local type=$1 id=$2
    "ceph-$type" -c "$CONF" -i "$id" >"$DIR/log/$type.$id.stdout" 2>&1 || fail "ceph-$type -i $id did not start"
    wait_for "the pid file of $type.$id" live_pid "$type.$id"
}

json_field() { # json_field PYTHON-EXPRESSION-ON-d: reads JSON on stdin, succeeds if the expression is true
    python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"
}

mon_up() { cephc mon stat -f json | json_field 'len(d.get("quorum", [])) == 1'; }
osd_up() { cephc osd stat -f json | json_field 'd["num_up_osds"] == 1 and d["num_in_osds"] == 1'; }
mgr_up() { cephc mgr stat -f json | json_field 'd["available"]'; }
pgs_clean() {
    cephc pg stat -f json | json_field 'd["pg_summary"]["num_pgs"] > 0 and sum(s["num"] for s in
        d["pg_summary"]["num_pg_by_state"] if s["name"] == "active+clean") == d["pg_summary"]["num_pgs"]'
}
pool_writable() { timeout 20 rados -c "$CONF" -p rbd put micro-ceph-probe /dev/null && timeout 20 rados -c "$CONF" -p rbd rm micro-ceph-probe; }

port_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

# --- start ---------------------------------------------------------------------------------------------------------

start_cluster() {
    local tool
    for tool in ceph ceph-mon ceph-osd ceph-mgr monmaptool rados rbd python3 timeout uuidgen; do
        command -v "$tool" >/dev/null || fail "$tool not found: apt-get install -y ceph-mon ceph-osd ceph-mgr ceph-common"
    done
    if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR")" ]; then
        say "error: $DIR exists and is not empty; give a new directory (or stop the cluster there and remove it)"
        exit 1
    fi
    local p
    for p in "$PORT" $((PORT + 1)); do
        port_free "$p" || { say "error: port $p on 127.0.0.1 is in use; set MICRO_CEPH_PORT to another base"; exit 1; }
    done
    mkdir -p "$DIR"/{mon.a,osd.0,mgr.x,log,run}
    local fsid
    fsid=$(uuidgen)

    cat >"$CONF" <<EOF
# Generated by micro-ceph.sh: a single-node test cluster. Not for real data.
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$PORT,v1:127.0.0.1:$((PORT + 1))]
mon initial members = a
public network = 127.0.0.0/8
ms bind ipv4 = true
ms bind ipv6 = false
ms bind port min = $((PORT + 2))
ms bind port max = $((PORT + 99))
auth cluster required = none
auth service required = none
auth client required = none
run dir = $DIR/run
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mgr initial modules = iostat
# A test machine's disk may be fuller than a real monitor's (the default warning is at 30% free).
mon data avail warn = 2
mon data avail crit = 1

[mon]
mon data = $DIR/\$name
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok

[osd]
osd data = $DIR/\$name
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok

[mgr]
mgr data = $DIR/\$name
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.pid
admin socket = $DIR/run/\$name.asok
EOF

    step "monmaptool" monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$PORT,v1:127.0.0.1:$((PORT + 1))]" \
        "$DIR/monmap"
    step "ceph-mon --mkfs" ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap"
    STARTED=1
    start_daemon mon a
    wait_for "the monitor to form a quorum" mon_up

    local osd_uuid osd_id
    osd_uuid=$(uuidgen)
    osd_id=$(cephc osd new "$osd_uuid" 2>&1) || fail "ceph osd new failed: $osd_id"
    [ "$osd_id" = 0 ] || fail "ceph osd new gave id '$osd_id', expected 0"
    step "ceph-osd --mkfs" ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid"
    start_daemon osd 0
    start_daemon mgr x
    wait_for "osd.0 to be up and in" osd_up
    wait_for "the manager to be available" mgr_up

    step "creating pool rbd" cephc osd pool create rbd 8 8 replicated
    step "tagging pool rbd" cephc osd pool application enable rbd rbd
    wait_for "all placement groups to be active+clean" pgs_clean
    step "rbd pool init" timeout 60 rbd -c "$CONF" pool init rbd
    wait_for "pool rbd to accept writes" pool_writable
    echo "CEPH_CONF=$CONF"
}

# --- main ----------------------------------------------------------------------------------------------------------

[ $# -eq 2 ] || usage
CMD=$1
DIR=$2
[ -n "$DIR" ] || usage
mkdir -p "$(dirname "$DIR")"
DIR=$(cd "$(dirname "$DIR")" && pwd)/$(basename "$DIR")
CONF=$DIR/ceph.conf

case "$CMD" in
start) start_cluster ;;
stop)
    [ -f "$CONF" ] || { say "error: no cluster in $DIR ($CONF is missing)"; exit 1; }
    stop_cluster
    ;;
status) cephc -s ;;
*) usage ;;
esac
