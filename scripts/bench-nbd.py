#!/usr/bin/env python3
"""Benchmarks basalt's NBD data path against the peers a user would otherwise pick, in one run on one machine.

Targets (each gets the same fio jobs through fio's nbd engine):
  basalt       basalt serve, a fresh thin image (feature layering only: exclusive-lock would let one connection write)
  basalt-snap  the same image right after a snapshot (copy-on-write cost; write jobs only)
  basalt-direct  basalt serve --direct-io (image data bypasses the page cache), a fresh image of its own
  raw-none     qemu-nbd serving a raw file with --cache=none (O_DIRECT) and --aio=io_uring (native where
               io_uring is missing)
  raw-wb       qemu-nbd serving the same raw file with --cache=writeback (the page cache; a flush is an fdatasync).
               The file starts sparse each round and raw-none's jobs run first (its 1 MiB sequential write covers
               all of it), so raw-wb overwrites written blocks where basalt's image starts thin: at QD32 random
               writes that spares raw-wb the file system's allocation (a thin image and a sparse file, each
               fresh, measured level on the development machine: 46-51k and 49-52k writes/s)
  qcow2        qemu-nbd serving a qcow2 file (--cache=none)
  qcow2-snap   the same qcow2 after an internal snapshot (write jobs only)
  file         fio on the raw file itself with io_uring and O_DIRECT (the machine's limit)

Jobs, in this order: 4k random write at QD32, 4k random read at QD32, 4k random write at QD1, 4k random write +
flush at "QD1" and "QD16", and 1 MiB sequential write and read at QD8:
  randwrite4k_flush_qd1   one connection: write, wait for it, flush, wait for it (fio --fsync=1 --iodepth=1).
  randwrite4k_flush_qd16  sixteen connections (fio --numjobs=16), each doing the QD1 job: sixteen clients that each
                          commit every write, so up to sixteen flushes are in flight at once (group commit).
  Both report writes per second; each write is followed by its own flush.
  fio's nbd engine sends a flush (its fsync) as one more asynchronous command in the same queue, without waiting
  for the writes before it, so --fsync=1 --iodepth=16 on one connection would keep about eight writes and eight
  flushes in flight, and a flush there need not cover the write issued just before it (NBD makes a flush cover
  only the writes already replied to). That is why the QD16 job uses sixteen connections at depth 1.

The last table compares, per job, basalt with the better of qemu-nbd raw's two cache modes in this run (the target
is >= 1.0x), and the flush jobs with raw-wb (targets 1.0x at QD1, 1.5x at QD16). A third table compares
basalt --direct-io with its like, qemu-nbd --cache=none (neither keeps image data in the page cache). With --rounds N everything runs N
times on fresh images and every figure is the median of its N values; the last table then also shows each round's
ratio, so the spread of a shared machine is in view.

Usage: scripts/bench-nbd.py [--runtime S] [--size 1G] [--rounds N] [--basalt PATH] [--keep] [--jobs J,..] [--targets T,..]
--jobs and --targets run a subset (for profiling one job); the tables then show "-" for what did not run.
Needs fio (with the nbd engine) and qemu-utils; builds nothing: pass a release binary with --basalt
(default target/release/basalt).

With --ceph-conf CONF (a binary built with --features ceph), it instead benchmarks the NBD gateway on that Ceph
cluster against `rbd bench` (librbd in the benchmark's own process) on the same image, after filling the image so
both read written data (the jobs rbd bench can run: not the flush jobs):
  ceph-nbd     basalt serve --ceph-conf CONF, fio through its NBD socket
  rbd-bench    rbd bench with the same I/O size, depth (threads) and pattern
"""

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

JOBS = [
    # name, fio arguments, the figure that matters
    ("randwrite4k_qd32", ["--rw=randwrite", "--bs=4k", "--iodepth=32"], "iops"),
    ("randread4k_qd32", ["--rw=randread", "--bs=4k", "--iodepth=32"], "iops"),
    ("randwrite4k_qd1", ["--rw=randwrite", "--bs=4k", "--iodepth=1"], "iops"),
    # A guest that flushes after every write (a database's commit): the cost of a flush. The flush jobs run before
    # the 1 MiB ones, as in the quality bar's job file: right after a sequential write, the gigabytes it left in the
    # page cache of the buffered targets (basalt, raw-wb, not raw-none) are still being written back, and every
    # flush would wait behind that writeback rather than measure itself.
    ("randwrite4k_flush_qd1", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1"], "iops"),
    # Sixteen such clients, one connection each: sixteen flushes in flight at once (see the docstring for why not
    # --iodepth=16 on one connection).
    ("randwrite4k_flush_qd16", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1", "--numjobs=16"], "iops"),
    ("seqwrite1m_qd8", ["--rw=write", "--bs=1m", "--iodepth=8"], "mibs"),
    ("seqread1m_qd8", ["--rw=read", "--bs=1m", "--iodepth=8"], "mibs"),
]
WRITE_JOBS = {"randwrite4k_qd32", "randwrite4k_qd1", "randwrite4k_flush_qd1", "randwrite4k_flush_qd16"}
FLUSH_JOBS = {"randwrite4k_flush_qd1": 1.0, "randwrite4k_flush_qd16": 1.5}  # the targets against raw-wb


def fio(engine_args, job_args, runtime, size):
    """Runs one fio job (all its processes reported as one) and returns (IOPS, MiB/s) summed over reads and writes.
    A flush job's IOPS are its writes per second: fio counts its flushes apart, and each write has one."""
    cmd = ["fio", "--name=bench", "--output-format=json", "--time_based=1", f"--runtime={runtime}",
           f"--size={size}", "--group_reporting=1"] + engine_args + job_args
    # Every job starts with the page cache clean: otherwise the writeback of what the previous job (or target) left
    # dirty runs during this one, and a target is measured against its predecessor's leftovers.
    os.sync()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{"):])
    job = report["jobs"][0]
    iops = job["read"]["iops"] + job["write"]["iops"]
    mibs = (job["read"]["bw"] + job["write"]["bw"]) / 1024.0
    if "--fsync=1" in job_args:
        writes, flushes = job["write"]["total_ios"], job["sync"]["total_ios"]
        if flushes < writes - 16:
            sys.exit(f"fio sent {flushes} flushes for {writes} writes: the flush job measured something else")
    return iops, mibs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(path, what, seconds=30):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"{what} did not start")
        time.sleep(0.05)


class QemuNbd:
    """qemu-nbd on a Unix socket, as a context manager."""

    def __init__(self, fmt, image, sock, cache="none", aio="io_uring"):
        # -e 32: room for the sixteen connections of the QD16 flush job (qemu-nbd stops accepting at the limit).
        self.args = ["qemu-nbd", "-f", fmt, f"--cache={cache}", f"--aio={aio}", "-e", "32", "-k", sock, "-t", image]
        self.sock = sock

    def __enter__(self):
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen(self.args)
        wait_for(self.sock, "qemu-nbd")
        return f"nbd+unix:///?socket={self.sock}"

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


class Basalt:
    """basalt serve on a fresh data directory, with API calls over its Unix socket through the CLI."""

    def __init__(self, binary, data_dir, extra=()):
        self.binary, self.data_dir, self.extra = binary, data_dir, list(extra)

    def __enter__(self):
        env = dict(os.environ, BASALT_ADMIN_PASSWORD="bench-password", BASALT_LOG="warn")
        self.proc = subprocess.Popen([self.binary, "serve", "--data-dir", self.data_dir,
                                      "--listen", f"127.0.0.1:{free_port()}",
                                      "--nbd-listen", f"127.0.0.1:{free_port()}", *self.extra], env=env)
        wait_for(os.path.join(self.data_dir, "nbd.sock"), "basalt serve")
        return self

    def cli(self, *args):
        subprocess.run([self.binary, "--data-dir", self.data_dir, *args], check=True, capture_output=True)

    def uri(self, export):
        return f"nbd+unix:///{export}?socket={os.path.join(self.data_dir, 'nbd.sock')}"

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait()


# Set from --jobs and --targets: the jobs and targets to run (None: all).
SELECTED_JOBS = None
SELECTED_TARGETS = None


def selected(target):
    return SELECTED_TARGETS is None or target in SELECTED_TARGETS


def run_jobs(results, target, engine_args, runtime, size, only=None):
    if not selected(target):
        return
    for name, args, _ in JOBS:
        if (only is None or name in only) and (SELECTED_JOBS is None or name in SELECTED_JOBS):
            iops, mibs = results[(target, name)] = fio(engine_args, args, runtime, size)
            print(f"  {target:12} {name:22} {iops:10.0f} IOPS {mibs:9.1f} MiB/s", file=sys.stderr)


# rbd bench arguments for each job: I/O type, size, threads (its queue depth) and pattern.
RBD_BENCH = {
    "randwrite4k_qd32": ("write", 4096, 32, "rand"),
    "randread4k_qd32": ("read", 4096, 32, "rand"),
    "randwrite4k_qd1": ("write", 4096, 1, "rand"),
    "seqwrite1m_qd8": ("write", 1 << 20, 8, "seq"),
    "seqread1m_qd8": ("read", 1 << 20, 8, "seq"),
}


def rbd_bench(conf, image, job, total):
    """Runs rbd bench for one job; returns (IOPS, MiB/s) from its summary line."""
    io_type, io_size, threads, pattern = RBD_BENCH[job]
    out = subprocess.run(["rbd", "-c", conf, "bench", "--io-type", io_type, "--io-size", str(io_size),
                          "--io-threads", str(threads), "--io-pattern", pattern, "--io-total", str(total), image],
                         check=True, capture_output=True, text=True).stdout
    summary = [line for line in out.splitlines() if line.startswith("elapsed:")][-1].split()
    ops_per_sec = float(summary[summary.index("ops/sec:") + 1])
    return ops_per_sec, ops_per_sec * io_size / (1 << 20)


def size_bytes(text):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def main_ceph(opts):
    """The NBD gateway on a Ceph cluster against rbd bench on the same image."""
    conf = os.path.abspath(opts.ceph_conf)
    pool = f"bench-{os.getpid()}"
    image = f"{pool}/img"
    ceph = ["ceph", "-c", conf]
    subprocess.run(ceph + ["osd", "pool", "create", pool, "32"], check=True, capture_output=True)
    subprocess.run(["rbd", "-c", conf, "pool", "init", pool], check=True)
    scratch = tempfile.mkdtemp(prefix="basalt-bench-ceph-")
    results = {}
    try:
        subprocess.run(["rbd", "-c", conf, "create", "--size", opts.size, image], check=True)
        # Fill the image so reads on both sides read written objects.
        total = size_bytes(opts.size)
        subprocess.run(["rbd", "-c", conf, "bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "8",
                        "--io-pattern", "seq", "--io-total", str(total), image], check=True, capture_output=True)
        with Basalt(os.path.abspath(opts.basalt), os.path.join(scratch, "data"), ["--ceph-conf", conf]) as b:
            run_jobs(results, "ceph-nbd", ["--ioengine=nbd", f"--uri={b.uri(image)}"], opts.runtime, opts.size,
                     RBD_BENCH)
        for name in RBD_BENCH:
            io_size = RBD_BENCH[name][1]
            # About as many operations as fio did in its run, so both run for a similar time.
            ops = max(int(results[("ceph-nbd", name)][0] * opts.runtime), 1000)
            results[("rbd-bench", name)] = rbd_bench(conf, image, name, min(ops * io_size, 4 * total))
            print(f"  {'rbd-bench':12} {name:22} {results[('rbd-bench', name)][0]:10.0f} IOPS "
                  f"{results[('rbd-bench', name)][1]:9.1f} MiB/s", file=sys.stderr)
    finally:
        subprocess.run(ceph + ["osd", "pool", "delete", pool, pool, "--yes-i-really-really-mean-it"],
                       capture_output=True)
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'job':18}{'ceph-nbd':>13}{'rbd-bench':>13}{'nbd/rbd':>9}")
    for name, _, unit in JOBS:
        if name not in RBD_BENCH:
            continue
        idx = 0 if unit == "iops" else 1
        nbd, rbd = results[("ceph-nbd", name)][idx], results[("rbd-bench", name)][idx]
        print(f"{name + (' MiB/s' if unit == 'mibs' else ''):18}{nbd:13.0f}{rbd:13.0f}{nbd / rbd:9.2f}")


def one_round(opts, results):
    """Every selected target runs every selected job once, on fresh images; adds each result to `results`."""
    scratch = tempfile.mkdtemp(prefix="basalt-bench-")
    try:
        with Basalt(os.path.abspath(opts.basalt), os.path.join(scratch, "data")) as b:
            # Without exclusive-lock (only layering), so the sixteen connections of the QD16 flush job may all write,
            # as qemu-nbd's -e lets them; the features change nothing else on the engine's data path.
            b.cli("create", "--size", opts.size, "--image-feature", "layering", "rbd/bench")
            run_jobs(results, "basalt", ["--ioengine=nbd", f"--uri={b.uri('rbd/bench')}"], opts.runtime, opts.size)
            b.cli("snap", "create", "rbd/bench@fresh")
            run_jobs(results, "basalt-snap", ["--ioengine=nbd", f"--uri={b.uri('rbd/bench')}"], opts.runtime,
                     opts.size, WRITE_JOBS)
        if selected("basalt-direct"):
            with Basalt(os.path.abspath(opts.basalt), os.path.join(scratch, "direct"), ["--direct-io"]) as b:
                b.cli("create", "--size", opts.size, "--image-feature", "layering", "rbd/bench")
                run_jobs(results, "basalt-direct", ["--ioengine=nbd", f"--uri={b.uri('rbd/bench')}"], opts.runtime,
                         opts.size)
        raw = os.path.join(scratch, "raw.img")
        subprocess.run(["truncate", "-s", opts.size, raw], check=True)
        aio = io_uring_or_native(raw)
        print(f"  raw-none uses --aio={aio}", file=sys.stderr)
        # A peer is started only when it runs jobs: qemu-nbd that no client reached may not see its SIGTERM.
        if selected("raw-none"):
            with QemuNbd("raw", raw, os.path.join(scratch, "raw.sock"), "none", aio) as uri:
                run_jobs(results, "raw-none", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size)
        if selected("raw-wb"):
            with QemuNbd("raw", raw, os.path.join(scratch, "raw.sock"), "writeback", "threads") as uri:
                run_jobs(results, "raw-wb", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size)
        qcow = os.path.join(scratch, "q.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, opts.size], check=True)
        if selected("qcow2"):
            with QemuNbd("qcow2", qcow, os.path.join(scratch, "q.sock"), "none", aio) as uri:
                run_jobs(results, "qcow2", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size)
        if selected("qcow2-snap"):
            subprocess.run(["qemu-img", "snapshot", "-c", "s1", qcow], check=True)
            with QemuNbd("qcow2", qcow, os.path.join(scratch, "q.sock"), "none", aio) as uri:
                run_jobs(results, "qcow2-snap", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size,
                         WRITE_JOBS)
        run_jobs(results, "file", ["--ioengine=io_uring", "--direct=1", f"--filename={raw}"], opts.runtime, opts.size)
    finally:
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)


def best_ratio(results, name, idx):
    """basalt over the better qemu-nbd raw mode for one job, the value of each, and that mode's name."""
    b, none, wb = (results.get((t, name), (None, None))[idx] for t in ("basalt", "raw-none", "raw-wb"))
    best, mode = max(((none, "none"), (wb, "wb")), key=lambda p: p[0] or 0)
    return (b / best if b and best else None), b, best, mode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=int, default=8)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--rounds", type=int, default=1, help="run everything this many times; report medians")
    parser.add_argument("--basalt", default="target/release/basalt")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--ceph-conf", help="benchmark the NBD gateway on this Ceph cluster against rbd bench")
    parser.add_argument("--jobs", help="comma-separated jobs to run (default: all)")
    parser.add_argument("--targets", help="comma-separated targets to run (default: all)")
    opts = parser.parse_args()
    global SELECTED_JOBS, SELECTED_TARGETS
    known_jobs = {name for name, _, _ in JOBS}
    if opts.jobs:
        SELECTED_JOBS = set(opts.jobs.split(","))
        if SELECTED_JOBS - known_jobs:
            sys.exit(f"unknown jobs {sorted(SELECTED_JOBS - known_jobs)}: the jobs are {sorted(known_jobs)}")
    if opts.targets:
        SELECTED_TARGETS = set(opts.targets.split(","))
    if opts.ceph_conf:
        return main_ceph(opts)
    for tool in ("fio", "qemu-nbd", "qemu-img"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y fio qemu-utils")
    # The peers' versions go with their figures: qemu-nbd's speed differs between releases (Debian 12's 7.2 and a
    # backported 10.0 differ by a fifth on the flush jobs here).
    for tool in ("fio", "qemu-nbd"):
        version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.splitlines()
        print(f"{tool}: {version[0] if version else 'version unknown'}")
    rounds = []
    for round_no in range(opts.rounds):
        if opts.rounds > 1:
            print(f"round {round_no + 1} of {opts.rounds}", file=sys.stderr)
        rounds.append({})
        one_round(opts, rounds[-1])
    # Each figure is the median of its rounds: a run on a shared machine has outliers either way.
    results = {key: tuple(statistics.median(r[key][i] for r in rounds) for i in (0, 1)) for key in rounds[0]}

    targets = ["basalt", "basalt-snap", "basalt-direct", "raw-none", "raw-wb", "qcow2", "qcow2-snap", "file"]
    value = lambda t, name, idx: results.get((t, name), (None, None))[idx]
    ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"
    num = lambda x: f"{x:10.0f}" if x is not None else f"{'-':>10}"
    print(f"{'job':24}" + "".join(f"{t:>12}" for t in targets) + f"{'b/qcow2':>9}{'bs/qcow2s':>10}{'bs/b':>7}")
    for name, _, unit in JOBS:
        idx = 0 if unit == "iops" else 1
        v = lambda t: value(t, name, idx)
        cells = "".join(f"{v(t):12.0f}" if v(t) is not None else f"{'-':>12}" for t in targets)
        print(f"{name + (' MiB/s' if unit == 'mibs' else ''):24}{cells}{ratio(v('basalt'), v('qcow2')):>9}"
              f"{ratio(v('basalt-snap'), v('qcow2-snap')):>10}{ratio(v('basalt-snap'), v('basalt')):>7}")

    # The targets of the engine's redesign: basalt against the better qemu-nbd raw cache mode of this run.
    print()
    per_round = " b/best per round" if len(rounds) > 1 else ""
    print(f"{'job':24}{'basalt':>10}{'best raw':>10}{'mode':>6}{'b/best':>8}{'need':>6}{'b/raw-wb':>10}{'need':>6}"
          f"{per_round}")
    for name, _, unit in JOBS:
        idx = 0 if unit == "iops" else 1
        _, b, best, mode = best_ratio(results, name, idx)
        wb = value("raw-wb", name, idx)
        wb_cells = f"{ratio(b, wb):>10}{FLUSH_JOBS[name]:6.1f}" if name in FLUSH_JOBS else f"{'':16}"
        each = ""
        if len(rounds) > 1:
            each = "  " + " ".join(f"{r:.2f}" if r else "-" for r in (best_ratio(rr, name, idx)[0] for rr in rounds))
        print(f"{name + (' MiB/s' if unit == 'mibs' else ''):24}{num(b)}{num(best)}{mode:>6}{ratio(b, best):>8}"
              f"{1.0:6.1f}{wb_cells}{each}")

    # Without the page cache on both sides: basalt --direct-io against qemu-nbd --cache=none.
    if any(t == "basalt-direct" for t, _ in results):
        print()
        per_round = " direct/none per round" if len(rounds) > 1 else ""
        print(f"{'job':24}{'direct':>10}{'raw-none':>10}{'d/none':>8}{per_round}")
        for name, _, unit in JOBS:
            idx = 0 if unit == "iops" else 1
            d, n = value("basalt-direct", name, idx), value("raw-none", name, idx)
            each = ""
            if len(rounds) > 1:
                pair = lambda rr: (rr.get(("basalt-direct", name), (None, None))[idx],
                                   rr.get(("raw-none", name), (None, None))[idx])
                each = "  " + " ".join(ratio(*pair(rr)) for rr in rounds)
            print(f"{name + (' MiB/s' if unit == 'mibs' else ''):24}{num(d)}{num(n)}{ratio(d, n):>8}{each}")


def io_uring_or_native(image):
    """The --aio mode for --cache=none: io_uring where this qemu and kernel have it, else native."""
    probe = subprocess.run(["qemu-io", "-f", "raw", "-t", "none", "--aio=io_uring", "-c", "read 0 4k", image],
                           capture_output=True)
    return "io_uring" if probe.returncode == 0 else "native"

if __name__ == "__main__":
    main()
