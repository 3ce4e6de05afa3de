#!/usr/bin/env python3
"""basalt's /metrics against a real Prometheus (Debian's `prometheus` package, with promtool).

1. `basalt serve` on a throw-away data directory, scraped every second by Prometheus (job "basalt").
2. `promtool check metrics` on /metrics, `promtool check rules` on monitoring/basalt-alerts.yml, and
   `promtool test rules` on monitoring/tests/basalt-alerts-test.yml (basalt's own alerts on synthetic series).
3. Under fio load over NBD, every expression of Ceph's RBD Overview and RBD Details dashboards
   (monitoring/tests/ceph-rbd-dashboards.json) returns series with values in its panel's unit; the latency panels
   are printed beside the latency fio measured.
4. A pool with a 4 MiB quota is filled through NBD: POOL_NEAR_FULL, then POOL_FULL are raised and a further write
   fails. The series Prometheus recorded from basalt meanwhile become the input of `promtool test rules`, which must
   show Ceph's CephPoolNearFull and CephPoolFull alerts firing (on a stretched time axis: one recorded second is one
   minute, as the rules wait 5 and 1 minutes).
5. A failed task (a flatten of an image that is no clone) makes Prometheus fire BasaltTaskFailed.

Usage: scripts/prometheus-test.py [BASALT_BINARY]   (default target/debug/basalt). Ends with 'N passed, N failed'.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASALT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(ROOT, "target", "debug", "basalt")
API_PORT = int(os.environ.get("BASALT_PROM_TEST_PORT", "18480"))
NBD_PORT = API_PORT + 1
PROM_PORT = API_PORT + 2
RULES = os.path.join(ROOT, "monitoring", "basalt-alerts.yml")
DASHBOARDS = os.path.join(ROOT, "monitoring", "tests", "ceph-rbd-dashboards.json")
STATIC_TESTS = os.path.join(ROOT, "monitoring", "tests", "basalt-alerts-test.yml")

results = []


def check(name, ok, detail=""):
    results.append((name, ok))
    print(("ok     " if ok else "FAILED ") + name + (f": {detail}" if detail else ""), flush=True)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode()


def query(expr, at=None):
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    body = json.loads(get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query?" + urllib.parse.urlencode(params)))
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    return body["data"]["result"]


def query_range(expr, start, end):
    params = {"query": expr, "start": f"{start:.0f}", "end": f"{end:.0f}", "step": "1"}
    body = json.loads(get(f"http://127.0.0.1:{PROM_PORT}/api/v1/query_range?" + urllib.parse.urlencode(params)))
    return body["data"]["result"]


def wait_for(what, test, seconds=30):
    deadline = time.time() + seconds
    while True:
        try:
            value = test()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.time() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


def basalt(data, *args, check_rc=True):
    out = subprocess.run([BASALT, "--data-dir", data, *args], capture_output=True, text=True, timeout=60)
    if check_rc and out.returncode != 0:
        raise RuntimeError(f"basalt {' '.join(args)}: {out.stderr}")
    return out


def qemu_write(sock, spec, offset, length):
    uri = f"nbd+unix:///{spec}?socket={sock}"
    out = subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 7 {offset} {length}", uri],
                         capture_output=True, text=True, timeout=60)
    return out.returncode == 0 and "failed" not in out.stdout + out.stderr, out.stdout + out.stderr


def health(name):
    rows = query(f'ceph_health_detail{{job="basalt",name="{name}"}}')
    return rows and float(rows[0]["value"][1]) == 1.0


def main():
    work = tempfile.mkdtemp(prefix="basalt-prom.")
    data = os.path.join(work, "data")
    procs = []
    try:
        env = dict(os.environ, BASALT_ADMIN_PASSWORD="prometheus-test-pw")
        serve = subprocess.Popen([BASALT, "--data-dir", data, "serve", "--listen", f"127.0.0.1:{API_PORT}",
                                  "--nbd-listen", f"127.0.0.1:{NBD_PORT}"], env=env,
                                 stdout=open(os.path.join(work, "serve.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(serve)
        metrics_url = f"http://127.0.0.1:{API_PORT}/metrics"
        wait_for("basalt", lambda: "basalt_up 1.0" in get(metrics_url))
        with open(os.path.join(work, "prometheus.yml"), "w") as conf:
            conf.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["{RULES}"]
scrape_configs:
  - job_name: basalt
    static_configs: [{{targets: ["127.0.0.1:{API_PORT}"]}}]
""")
        prom = subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml",
                                 f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
                                stdout=open(os.path.join(work, "prometheus.log"), "w"), stderr=subprocess.STDOUT)
        procs.append(prom)

        # promtool on the exposition and on the shipped rules.
        text = get(metrics_url)
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        check("promtool check metrics", lint.returncode == 0, (lint.stdout + lint.stderr).strip())
        rules = subprocess.run(["promtool", "check", "rules", RULES], capture_output=True, text=True)
        check("promtool check rules monitoring/basalt-alerts.yml", rules.returncode == 0,
              (rules.stdout + rules.stderr).strip().splitlines()[-1])
        static = subprocess.run(["promtool", "test", "rules", STATIC_TESTS], capture_output=True, text=True)
        check("promtool test rules monitoring/tests/basalt-alerts-test.yml (basalt's own alerts)",
              static.returncode == 0, (static.stdout + static.stderr).strip().replace("\n", " | ")[-600:])
        for name in ("basalt_store_stopped 0.0", "basalt_tasks_failed_recent 0.0",
                     "basalt_certificate_expiry_timestamp_seconds", "basalt_metadata_reserve_size_bytes"):
            check(f"/metrics has {name.split()[0]}" + (f" at {name.split()[1]}" if " " in name else ""),
                  f"\n{name}" in text or f"# TYPE {name} " in text)
        wait_for("the first scrape", lambda: query('up{job="basalt"}') and query('up{job="basalt"}')[0]["value"][1] == "1")

        # Load: fio over NBD on rbd/load, 4 KiB random reads and writes at queue depth 1, for 20 s.
        basalt(data, "create", "--size", "64M", "rbd/load")
        sock = os.path.join(data, "nbd.sock")
        fio = subprocess.Popen(["fio", "--name=load", "--ioengine=nbd", f"--uri=nbd+unix:///rbd/load?socket={sock}",
                                "--rw=randrw", "--bs=4k", "--iodepth=1", "--size=64m", "--time_based",
                                "--runtime=20", "--output-format=json"], stdout=subprocess.PIPE, text=True)
        procs.append(fio)
        time.sleep(14)
        with open(DASHBOARDS) as f:
            targets = json.load(f)["targets"]
        at = time.time()
        panel_latency = {}
        for t in targets:
            expr = (t["expr"].replace("$job", "basalt").replace("$__rate_interval", "10s")
                    .replace("$pool", "rbd").replace("$image", "load"))
            rows = query(expr, at)
            values = [float(r["value"][1]) for r in rows]
            name = f'{t["dashboard"]} / {t["panel"]} ({t["unit"]}): {" ".join(expr.split())[:70]}'
            ok = bool(values) and all(math.isfinite(v) and v > 0 for v in values)
            if t["unit"] == "ns":
                # A 4 KiB I/O through NBD takes between 1 µs and 1 s: a value in seconds or milliseconds fails.
                ok = ok and all(1e3 <= v <= 1e9 for v in values)
                panel_latency.setdefault(t["dashboard"] + "/" + t["panel"], []).append(values[0] if values else None)
            if t["unit"] in ("iops", "short") and "ops" in expr:
                ok = ok and all(v >= 1 for v in values)
            if t["unit"] == "Bps":
                ok = ok and all(v >= 4096 for v in values)
            check(name, ok, " ".join(f"{v:.6g}" for v in values))
        fio_out = fio.communicate(timeout=60)[0]
        report = json.loads(fio_out[fio_out.index("{"):])  # fio may print notes before its JSON
        job = report["jobs"][0]
        fio_write = job["write"]["lat_ns"]["mean"]
        fio_read = job["read"]["lat_ns"]["mean"]
        details = panel_latency.get("rbd-details/Average Latency", [None, None])
        overview = panel_latency.get("rbd-overview/Average Latency", [None, None])
        print(f"latency  write: RBD Details panel {details[0]:.0f} ns, RBD Overview panel {overview[0]:.0f} ns, "
              f"fio {fio_write:.0f} ns (mean over its run)", flush=True)
        print(f"latency  read:  RBD Details panel {details[1]:.0f} ns, RBD Overview panel {overview[1]:.0f} ns, "
              f"fio {fio_read:.0f} ns (mean over its run)", flush=True)
        # The panels show the time basalt spends on each request, as Ceph's show the OSDs' side; fio's latency adds
        # the NBD round trip and its own work, so it bounds the panel from above.
        check("the latency panels are within what fio measured", 0 < details[0] <= 1.1 * fio_write
              and 0 < details[1] <= 1.1 * fio_read, f"write {details[0]:.0f} <= {fio_write:.0f} ns, "
              f"read {details[1]:.0f} <= {fio_read:.0f} ns")

        # Fill a pool with a 4 MiB quota.
        start = time.time()
        basalt(data, "pool", "create", "small", "--application", "rbd")
        basalt(data, "pool", "set-quota", "small", "max_bytes", "4M")
        basalt(data, "create", "--size", "16M", "small/fill")
        ok, out = qemu_write(sock, "small/fill", 0, 3670016)  # 3.5 MiB: 87.5% of the quota
        check("writes under the quota succeed", ok, out.strip().splitlines()[0] if out.strip() else "")
        wait_for("POOL_NEAR_FULL", lambda: health("POOL_NEAR_FULL"))
        check("POOL_NEAR_FULL raised at 87.5% of the quota", True)
        time.sleep(8)
        ok, out = qemu_write(sock, "small/fill", 3670016, 1048576)  # crosses the quota
        check("the write that crosses the quota lands (usage is taken periodically, as on Ceph)", ok)
        wait_for("POOL_FULL", lambda: health("POOL_FULL"))
        check("POOL_FULL raised once the quota is reached", not health("POOL_NEAR_FULL"))
        ok, out = qemu_write(sock, "small/fill", 8 << 20, 65536)
        check("a write to the full pool fails (EDQUOT, ENOSPC over NBD)", not ok and "No space left" in out,
              out.strip().splitlines()[-1] if out.strip() else "")
        time.sleep(4)
        end = time.time()

        # The recorded series become promtool's input, one recorded second to one minute.
        series = {}
        for expr in ['ceph_health_detail{job="basalt"}', 'ceph_health_status{job="basalt"}',
                     'ceph_pool_percent_used{job="basalt"}', 'ceph_pool_metadata{job="basalt"}']:
            for row in query_range(expr, start, end):
                labels = row["metric"]
                name = labels.pop("__name__")
                selector = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
                series[selector] = [v for _, v in row["values"]]
        steps = max(len(v) for v in series.values())
        near = [float(v) for v in series[next(s for s in series if 'name="POOL_NEAR_FULL"' in s)]]
        full = [float(v) for v in series[next(s for s in series if 'name="POOL_FULL"' in s)]]
        first_near, first_full = near.index(1.0), full.index(1.0)
        instance = f"127.0.0.1:{API_PORT}"
        import yaml
        rules_doc = yaml.safe_load(open(RULES))
        annotations = {r["alert"]: r["annotations"] for g in rules_doc["groups"] for r in g["rules"]}
        labels = {r["alert"]: r["labels"] for g in rules_doc["groups"] for r in g["rules"]}

        def alert(name, check_name, severity):
            return {"exp_labels": {**labels[name], "alertname": name, "name": check_name, "instance": instance,
                                   "job": "basalt"}, "exp_annotations": annotations[name]}

        tests = {"rule_files": [RULES], "evaluation_interval": "1m", "tests": [{
            "interval": "1m",
            "input_series": [{"series": s, "values": " ".join(v) + f" {v[-1]}x10"} for s, v in series.items()],
            "alert_rule_test": [
                {"eval_time": f"{first_near + 2}m", "alertname": "CephPoolNearFull", "exp_alerts": []},
                {"eval_time": f"{first_near + 6}m", "alertname": "CephPoolNearFull",
                 "exp_alerts": [alert("CephPoolNearFull", "POOL_NEAR_FULL", "HEALTH_WARN")]},
                {"eval_time": f"{first_full + 2}m", "alertname": "CephPoolFull",
                 "exp_alerts": [alert("CephPoolFull", "POOL_FULL", "HEALTH_WARN")]},
                {"eval_time": f"{first_full + 2}m", "alertname": "CephPoolNearFull", "exp_alerts": []},
                {"eval_time": f"{steps + 5}m", "alertname": "CephHealthError", "exp_alerts": []},
            ],
        }]}
        for t in tests["tests"][0]["alert_rule_test"]:
            for a in t["exp_alerts"]:
                a["exp_labels"]["severity"] = labels[t["alertname"]]["severity"]
        test_file = os.path.join(work, "recorded-alerts-test.yml")
        with open(test_file, "w") as f:
            yaml.safe_dump(tests, f, sort_keys=False)
        shutil.copy(test_file, os.path.join(ROOT, "target", "prometheus-recorded-alerts-test.yml")) \
            if os.path.isdir(os.path.join(ROOT, "target")) else None
        unit = subprocess.run(["promtool", "test", "rules", test_file], capture_output=True, text=True)
        check(f"promtool test rules: CephPoolNearFull and CephPoolFull fire on {steps} recorded samples",
              unit.returncode == 0, (unit.stdout + unit.stderr).strip().replace("\n", " | ")[-600:])
        firing = query('ALERTS{alertname="CephPoolFull"}')
        check("Prometheus itself has CephPoolFull pending or firing", bool(firing),
              " ".join(r["metric"].get("alertstate", "") for r in firing))

        # A task that fails (flattening an image that is no clone) raises BasaltTaskFailed in Prometheus.
        out = basalt(data, "flatten", "small/fill", check_rc=False)
        check("flattening an image that is no clone fails", out.returncode != 0, out.stderr.strip()[-200:])
        firing = wait_for("BasaltTaskFailed", lambda: query('ALERTS{alertname="BasaltTaskFailed",alertstate="firing"}'))
        check("Prometheus fires BasaltTaskFailed", bool(firing), firing[0]["metric"].get("severity", ""))
        check("and not BasaltStoreStopped", not query('ALERTS{alertname="BasaltStoreStopped"}'))
    except Exception as err:  # noqa: BLE001 - reported as a failure
        check("the test ran to its end", False, repr(err))
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
    passed = sum(1 for _, ok in results if ok)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
