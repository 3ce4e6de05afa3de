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
]
WRITE_JOBS = {"randwrite4k_qd32", "randwrite4k_qd1"}


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

    def __init__(self, binary, data_dir):
        self.binary, self.data_dir = binary, data_dir

    def __enter__(self):
        env = dict(os.environ, BASALT_ADMIN_PASSWORD="bench-password", BASALT_LOG="warn")
        self.proc = subprocess.Popen([self.binary, "serve", "--data-dir", self.data_dir,
                                      "--listen", f"127.0.0.1:{free_port()}",
                                      "--nbd-listen", f"127.0.0.1:{free_port()}"], env=env)
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", type=int, default=8)
    parser.add_argument("--size", default="1G")
    parser.add_argument("--basalt", default="target/release/basalt")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    opts = parser.parse_args()
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
