#!/usr/bin/env python3
"""Benchmarks basalt's NBD data path against the peers a user would otherwise pick, in one run on one machine.

Targets (each gets the same fio jobs through fio's nbd engine, one connection):
  basalt       basalt serve, a fresh thin image
  basalt-snap  the same image right after a snapshot (copy-on-write cost; write jobs only)
  raw          qemu-nbd serving a raw file
  qcow2        qemu-nbd serving a qcow2 file
  qcow2-snap   the same qcow2 after an internal snapshot (write jobs only)
  file         fio on the raw file itself with io_uring and O_DIRECT (the machine's limit)

Usage: scripts/bench-nbd.py [--runtime S] [--size 1G] [--basalt PATH] [--keep]
Needs fio (with the nbd engine) and qemu-utils; builds nothing: pass a release binary with --basalt
(default target/release/basalt).

With --ceph-conf CONF (a binary built with --features ceph), it instead benchmarks the NBD gateway on that Ceph
cluster against `rbd bench` (librbd in the benchmark's own process) on the same image, after filling the image so
both read written data:
  ceph-nbd     basalt serve --ceph-conf CONF, fio through its NBD socket
  rbd-bench    rbd bench with the same I/O size, depth (threads) and pattern
"""

import argparse
import json
import os
import shutil
import socket
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
    ("seqwrite1m_qd8", ["--rw=write", "--bs=1m", "--iodepth=8"], "mibs"),
    ("seqread1m_qd8", ["--rw=read", "--bs=1m", "--iodepth=8"], "mibs"),
    # A guest that flushes after every write (a database's commit): the cost of a flush.
    ("randwrite4k_flush", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1"], "iops"),
]
WRITE_JOBS = {"randwrite4k_qd32", "randwrite4k_qd1", "randwrite4k_flush"}


def fio(engine_args, job_args, runtime, size):
    """Runs one fio job and returns (IOPS, MiB/s) summed over reads and writes."""
    cmd = ["fio", "--name=bench", "--output-format=json", "--time_based=1", f"--runtime={runtime}",
           f"--size={size}", "--group_reporting=1"] + engine_args + job_args
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{"):])
    job = report["jobs"][0]
    iops = job["read"]["iops"] + job["write"]["iops"]
    mibs = (job["read"]["bw"] + job["write"]["bw"]) / 1024.0
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

    def __init__(self, fmt, image, sock):
        self.args = ["qemu-nbd", "-f", fmt, "--cache=none", "--aio=io_uring", "-e", "8", "-k", sock, "-t", image]
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


def run_jobs(results, target, engine_args, runtime, size, only=None):
    for name, args, _ in JOBS:
        if only is None or name in only:
            results[(target, name)] = fio(engine_args, args, runtime, size)
            print(f"  {target:12} {name:18} {results[(target, name)][0]:10.0f} IOPS {results[(target, name)][1]:9.1f} MiB/s",
                  file=sys.stderr)


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
            run_jobs(results, "ceph-nbd", ["--ioengine=nbd", f"--uri={b.uri(image)}"], opts.runtime, opts.size)
        for name, _, _ in JOBS:
            io_size = RBD_BENCH[name][1]
            # About as many operations as fio did in its run, so both run for a similar time.
            ops = max(int(results[("ceph-nbd", name)][0] * opts.runtime), 1000)
            results[("rbd-bench", name)] = rbd_bench(conf, image, name, min(ops * io_size, 4 * total))
            print(f"  {'rbd-bench':12} {name:18} {results[('rbd-bench', name)][0]:10.0f} IOPS "
                  f"{results[('rbd-bench', name)][1]:9.1f} MiB/s", file=sys.stderr)
    finally:
        subprocess.run(ceph + ["osd", "pool", "delete", pool, pool, "--yes-i-really-really-mean-it"],
                       capture_output=True)
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'job':18}{'ceph-nbd':>13}{'rbd-bench':>13}{'nbd/rbd':>9}")
    for name, _, unit in JOBS:
        idx = 0 if unit == "iops" else 1
        nbd, rbd = results[("ceph-nbd", name)][idx], results[("rbd-bench", name)][idx]
        print(f"{name + (' MiB/s' if unit == 'mibs' else ''):18}{nbd:13.0f}{rbd:13.0f}{nbd / rbd:9.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=int, default=8)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--basalt", default="target/release/basalt")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--ceph-conf", help="benchmark the NBD gateway on this Ceph cluster against rbd bench")
    opts = parser.parse_args()
    if opts.ceph_conf:
        return main_ceph(opts)
    for tool in ("fio", "qemu-nbd", "qemu-img"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y fio qemu-utils")
    scratch = tempfile.mkdtemp(prefix="basalt-bench-")
    results = {}
    try:
        with Basalt(os.path.abspath(opts.basalt), os.path.join(scratch, "data")) as b:
            b.cli("create", "--size", opts.size, "rbd/bench")
            run_jobs(results, "basalt", ["--ioengine=nbd", f"--uri={b.uri('rbd/bench')}"], opts.runtime, opts.size)
            b.cli("snap", "create", "rbd/bench@fresh")
            run_jobs(results, "basalt-snap", ["--ioengine=nbd", f"--uri={b.uri('rbd/bench')}"], opts.runtime,
                     opts.size, WRITE_JOBS)
        raw = os.path.join(scratch, "raw.img")
        subprocess.run(["truncate", "-s", opts.size, raw], check=True)
        with QemuNbd("raw", raw, os.path.join(scratch, "raw.sock")) as uri:
            run_jobs(results, "raw", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size)
        qcow = os.path.join(scratch, "q.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, opts.size], check=True)
        with QemuNbd("qcow2", qcow, os.path.join(scratch, "q.sock")) as uri:
            run_jobs(results, "qcow2", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size)
        subprocess.run(["qemu-img", "snapshot", "-c", "s1", qcow], check=True)
        with QemuNbd("qcow2", qcow, os.path.join(scratch, "q.sock")) as uri:
            run_jobs(results, "qcow2-snap", ["--ioengine=nbd", f"--uri={uri}"], opts.runtime, opts.size, WRITE_JOBS)
        run_jobs(results, "file", ["--ioengine=io_uring", "--direct=1", f"--filename={raw}"], opts.runtime, opts.size)
    finally:
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    targets = ["basalt", "basalt-snap", "raw", "qcow2", "qcow2-snap", "file"]
    print(f"{'job':18}" + "".join(f"{t:>13}" for t in targets) + f"{'b/raw':>8}{'b/qcow2':>9}{'bs/qcow2s':>10}{'bs/b':>7}")
    for name, _, unit in JOBS:
        idx = 0 if unit == "iops" else 1
        value = lambda t: results.get((t, name), (None, None))[idx]
        cells = "".join(f"{value(t):13.0f}" if value(t) is not None else f"{'-':>13}" for t in targets)
        ratio = lambda a, b: f"{value(a) / value(b):.2f}" if value(a) and value(b) else "-"
        print(f"{name + (' MiB/s' if unit == 'mibs' else ''):18}{cells}{ratio('basalt', 'raw'):>8}"
              f"{ratio('basalt', 'qcow2'):>9}{ratio('basalt-snap', 'qcow2-snap'):>10}{ratio('basalt-snap', 'basalt'):>7}")


if __name__ == "__main__":
    main()
