#!/usr/bin/env python3
"""A static copy of the Retrieval API behind nginx, and side-by-side runs of two binaries on it.

Issue 15: the simulator shares the machine's cores with the job and limits what a throughput
benchmark can show; nginx serving files does not. Public tools only: nginx (Debian package
`nginx-light`), `perf stat` (page faults, user and system time of the job alone) and
`/usr/bin/time -v` (peak RSS).

    rig.py layout  --bin BIN --dir DIR [--count N] [--sizes realistic|small] [--kinds K,...]
        Runs the simulator and one export of BIN into DIR/seed, then copies every response the
        archives hold (by the api_path their provenance.json records) into DIR/www, with the
        simulator's origin replaced by the rig's, and writes DIR/refs.csv (the exported
        references, of the kinds given: `netverify` alone gives issue 15's full-size mix, about
        11 requests and 1.1 MB a transaction) and DIR/nginx.conf.
    rig.py replicate --dir DIR --from LAYOUT [--count N] [--min-responses M]
        DIR/www: N Netverify transactions copied (under new references, files hard-linked) from
        the LAYOUT transactions that have at least M responses: issue 15's full-size mix (about
        11 requests and 1.1 MB a transaction) without a seed export of 10,000 references.
    rig.py big     --dir DIR --from LAYOUT
        DIR/www: two transactions built from one of LAYOUT's: `big-200m` with a 200 MiB front
        image, `many-50x20m` with 50 images of 20 MiB.
    rig.py serve   --dir DIR          starts nginx on DIR (pid in DIR/nginx.pid)
    rig.py stop    --dir DIR
    rig.py run     --dir DIR --bin NEW [--vs OLD] [-n RUNS] [--concurrency C] [--max-file-bytes B]
        Exports DIR/refs.csv into a fresh output with NEW (and OLD in turn: new, old, new, old
        ...), each run under `perf stat` and `/usr/bin/time -v`, and prints one row per run and
        the medians. Each row also gives nginx's own CPU per 1,000 transactions (from
        /proc/PID/stat of its processes: the two programs share the machine's cores) and the
        1-minute load average after the run. Each run writes a fresh DIR/runs/LABEL-I-NS; after
        the run (outside its timed window) every file of it is emptied, not deleted: deleting
        the previous run's archives right before a run made ext4 (without a journal) scan the
        freed inodes on every file creation of the next run.
    rig.py clean   --dir DIR          removes DIR/runs (after the measurements)
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import zipfile

PORT = 18915
ORIGIN = f"http://127.0.0.1:{PORT}"

JOB = """[api]
region = "us"
netverify_url = "{base}/"
retrieval_url = "{base}/"
user_agent = "jumio-export static rig/1.0"

[input]
default_kind = "netverify"

[limits]
requests_per_second = 100000.0
burst = 1000
concurrency = {concurrency}
max_retries = 2
timeout_seconds = 120
max_file_bytes = {max_file_bytes}

[polling]
schedule_seconds = [0.1, 0.2, 0.3]
daily_retry = false

[fetch]
images = true
liveness_images = true
original_documents = true
unmasked_card_images = false

[output]
dir = "unused"
csv = true
parquet = true
archives = true
"""

NGINX = """daemon on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{
        application/json json;
        image/jpeg jpg;
        image/png png;
        application/pdf pdf;
    }}
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {dir}/tmp;
    proxy_temp_path {dir}/tmp;
    fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp;
    scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        # Every API path is a directory holding its body as `_.{{ext}}`: a status path and the
        # `/data` under it cannot both be files. The extension gives the Content-Type.
        location /api/ {{
            try_files $uri/_.json $uri/_.jpg $uri/_.png $uri/_.pdf $uri/_.bin =404;
        }}
    }}
}}
"""

EXT = {"application/json": "json", "image/jpeg": "jpg", "image/png": "png", "application/pdf": "pdf"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_job(path, base, concurrency=16, max_file_bytes=52428800):
    with open(path, "w") as f:
        f.write(JOB.format(base=base, concurrency=concurrency, max_file_bytes=max_file_bytes))


def layout(args):
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    sizes = {
        "realistic": ["--image-bytes", "300000", "--liveness-bytes", "40000",
                      "--page-bytes", "300000", "--pdf-bytes", "500000"],
        "small": ["--image-bytes", "4000", "--liveness-bytes", "2000",
                  "--page-bytes", "4000", "--pdf-bytes", "6000"],
    }[args.sizes]
    port = free_port()
    sim_origin = f"http://127.0.0.1:{port}"
    refs = os.path.join(d, "sim-refs.csv")
    sim = subprocess.Popen([args.bin, "simulate", "--listen", f"127.0.0.1:{port}", "--seed", "1",
                            "--count", str(args.count), "--references-out", refs] + sizes,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        job = os.path.join(d, "seed-job.toml")
        write_job(job, sim_origin)
        seed = os.path.join(d, "seed")
        shutil.rmtree(seed, ignore_errors=True)
        env = dict(os.environ, JUMIO_API_TOKEN="demo-token", JUMIO_API_SECRET="demo-secret")
        subprocess.run([args.bin, "run", job, "--input", refs, "--out", seed, "--quiet"], env=env)
    finally:
        sim.terminate()
        sim.wait()
    kinds = {}
    with open(refs) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) == 2 and parts[0] != "reference":
                kinds[parts[0]] = parts[1]
    www = os.path.join(d, "www")
    shutil.rmtree(www, ignore_errors=True)
    exported = []
    files = 0
    nbytes = 0
    for name in sorted(os.listdir(os.path.join(seed, "archives"))):
        if not name.endswith(".zip") or name.startswith("."):
            continue
        reference = name[:-4]
        kind = kinds.get(reference, "netverify")
        if args.kinds and kind not in args.kinds.split(","):
            continue
        with zipfile.ZipFile(os.path.join(seed, "archives", name)) as z:
            prov = json.loads(z.read("provenance.json"))
            for e in prov["entries"]:
                body = z.read(e["entry"])
                ctype = e["content_type"].split(";")[0].strip()
                ext = EXT.get(ctype, "bin")
                if ext == "json":
                    body = body.replace(sim_origin.encode(), ORIGIN.encode())
                path = e["api_path"].split("?")[0]
                target = os.path.join(www + path, f"_.{ext}")
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as out:
                    out.write(body)
                files += 1
                nbytes += len(body)
        exported.append((reference, kind))
    with open(os.path.join(d, "refs.csv"), "w") as f:
        f.write("reference,kind\n")
        for r, k in exported:
            f.write(f"{r},{k}\n")
    write_nginx(d)
    shutil.rmtree(seed, ignore_errors=True)
    print(f"{d}: {len(exported)} transactions, {files} responses, {nbytes / 1e6:.1f} MB "
          f"({files / max(1, len(exported)):.1f} requests and {nbytes / 1e6 / max(1, len(exported)):.3f} MB per transaction)")


def write_nginx(d):
    os.makedirs(os.path.join(d, "tmp"), exist_ok=True)
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(NGINX.format(dir=d, port=PORT))


def replicate(args):
    d = os.path.abspath(args.dir)
    src = os.path.abspath(args.__dict__["from"])
    scans = "/api/netverify/v2/scans"
    src_scans = os.path.join(src, "www" + scans)
    www = os.path.join(d, "www")
    shutil.rmtree(www, ignore_errors=True)
    with open(os.path.join(src, "refs.csv")) as f:
        refs = [line.split(",")[0] for line in f if line.strip().endswith(",netverify")]

    def bodies(ref):
        root = os.path.join(src_scans, ref)
        return [os.path.join(dp, n) for dp, _, ns in os.walk(root) for n in ns if n.startswith("_.")]

    full = [r for r in refs if len(bodies(r)) >= args.min_responses]
    if not full:
        sys.exit(f"no transaction of {src} has {args.min_responses} responses")
    made, files, nbytes = [], 0, 0
    for i in range(args.count):
        ref = full[i % len(full)]
        new = f"{ref[:-6]}{i:06d}"
        for path in bodies(ref):
            rel = os.path.relpath(path, os.path.join(src_scans, ref))
            target = os.path.join(www + scans, new, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if path.endswith(".json"):
                with open(path, "rb") as f:
                    body = f.read().replace(ref.encode(), new.encode())
                with open(target, "wb") as f:
                    f.write(body)
                nbytes += len(body)
            else:
                os.link(path, target)
                nbytes += os.path.getsize(path)
            files += 1
        made.append(new)
    with open(os.path.join(d, "refs.csv"), "w") as f:
        f.write("reference,kind\n")
        for r in made:
            f.write(f"{r},netverify\n")
    write_nginx(d)
    print(f"{d}: {len(made)} transactions from {len(full)} distinct ones, {files} responses, "
          f"{nbytes / 1e6:.1f} MB ({files / len(made):.1f} requests and "
          f"{nbytes / 1e6 / len(made):.3f} MB per transaction)")


def big(args):
    """Two transactions with very large files, built from one Netverify transaction of a layout."""
    d = os.path.abspath(args.dir)
    src = os.path.abspath(args.__dict__["from"])
    www = os.path.join(d, "www")
    shutil.rmtree(www, ignore_errors=True)
    with open(os.path.join(src, "refs.csv")) as f:
        ref = next(line.split(",")[0] for line in f if line.strip().endswith(",netverify"))
    scans = "/api/netverify/v2/scans"
    base = os.path.join(src, "www" + scans, ref)
    status = open(os.path.join(base, "_.json"), "rb").read()
    data = open(os.path.join(base, "data", "_.json"), "rb").read()
    pool = os.path.join(d, "pool")
    os.makedirs(pool, exist_ok=True)

    def blob(name, size):
        path = os.path.join(pool, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as f:
                f.write(b"\xff\xd8\xff\xe0")
                left = size - 4
                while left:
                    n = min(left, 1 << 20)
                    f.write(os.urandom(n))
                    left -= n
        return path

    def transaction(reference, images):
        root = os.path.join(www + scans, reference)
        os.makedirs(os.path.join(root, "data"), exist_ok=True)
        for rel, body in (("_.json", status), ("data/_.json", data)):
            with open(os.path.join(root, rel), "wb") as f:
                f.write(body.replace(ref.encode(), reference.encode()))
        listed = []
        for classifier, path in images:
            href = f"{ORIGIN}{scans}/{reference}/images/{classifier}"
            listed.append({"classifier": classifier, "href": href})
            os.makedirs(os.path.join(root, "images", classifier), exist_ok=True)
            os.link(path, os.path.join(root, "images", classifier, "_.jpg"))
        with open(os.path.join(root, "images", "_.json"), "w") as f:
            json.dump({"timestamp": "2024-01-01T00:00:00.000Z", "scanReference": reference,
                       "images": listed, "livenessImages": []}, f)

    big_ref = "big-200m"
    many_ref = "many-50x20m"
    transaction(big_ref, [("front", blob("200m.jpg", 200 << 20))])
    twenty = blob("20m.jpg", 20 << 20)
    transaction(many_ref, [(f"extra-{i}", twenty) for i in range(1, 51)])
    with open(os.path.join(d, "refs.csv"), "w") as f:
        f.write(f"reference,kind\n{big_ref},netverify\n{many_ref},netverify\n")
    write_nginx(d)
    print(f"{d}: {big_ref} (one 200 MiB image), {many_ref} (50 images of 20 MiB)")


def serve(args):
    d = os.path.abspath(args.dir)
    stop(args, quiet=True)
    subprocess.run(["nginx", "-c", os.path.join(d, "nginx.conf"), "-p", d], check=True)
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
            print(f"nginx serving {d}/www at {ORIGIN}")
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("nginx did not start")


def stop(args, quiet=False):
    pidfile = os.path.join(os.path.abspath(args.dir), "nginx.pid")
    try:
        pid = int(open(pidfile).read().strip())
        os.kill(pid, signal.SIGQUIT)
        for _ in range(50):
            if not os.path.exists(pidfile):
                break
            time.sleep(0.1)
    except (OSError, ValueError):
        if not quiet:
            print("no nginx running for", args.dir)


def perf_value(text, event):
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[2] == event:
            return float(parts[0])
    return float("nan")


def nginx_cpu_s(d):
    """User + system seconds nginx's processes (master and workers) have used so far."""
    try:
        master = int(open(os.path.join(d, "nginx.pid")).read().strip())
    except (OSError, ValueError):
        return float("nan")
    pids = [master]
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def one_run(args, binary, label, i):
    d = os.path.abspath(args.dir)
    # A fresh directory per run, and nothing deleted before or between runs: ext4 without a
    # journal (this VM's) skips the inodes freed in the last 5-10 minutes when it allocates
    # one, with a buffer lookup each, so deleting the previous run's 2,000 archives right
    # before a run made each of its file creations scan them (7-9 % of the job's CPU in a
    # profile). Both binaries are run alike; see `spend` and `clean`.
    out = os.path.join(d, "runs", f"{label}-{i}-{time.time_ns()}")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    job = os.path.join(d, "job.toml")
    write_job(job, ORIGIN, args.concurrency, args.max_file_bytes)
    stat = os.path.join(d, f"perf-{label}.txt")
    timef = os.path.join(d, f"time-{label}.txt")
    env = dict(os.environ, JUMIO_API_TOKEN="demo-token", JUMIO_API_SECRET="demo-secret")
    cmd = ["/usr/bin/time", "-v", "-o", timef,
           "perf", "stat", "-x,", "-o", stat, "-e", "page-faults,user_time,system_time",
           binary, "run", job, "--input", os.path.join(d, "refs.csv"), "--out", out, "--quiet"]
    nginx0 = nginx_cpu_s(d)
    t0 = time.monotonic()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.monotonic() - t0
    nginx = nginx_cpu_s(d) - nginx0
    with open("/proc/loadavg") as f:
        load = float(f.read().split()[0])
    ptext = open(stat).read()
    ttext = open(timef).read()
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", ttext).group(1))
    faults = perf_value(ptext, "page-faults")
    user = perf_value(ptext, "user_time") / 1e9
    system = perf_value(ptext, "system_time") / 1e9
    try:
        report = json.load(open(os.path.join(out, "report.json")))
    except OSError:
        report = {}
    exported = report.get("outcomes", {}).get("exported", 0)
    tx = max(1, exported)
    row = {
        "binary": label, "run": i, "exit": rc, "exported": exported, "wall_s": wall,
        "tx_per_s": exported / wall, "user_s": user, "sys_s": system,
        "cpu_s_per_1000_tx": (user + system) / tx * 1000, "faults_per_tx": faults / tx,
        "faults": faults, "peak_rss_mib": rss_kib / 1024,
        "nginx_cpu_s_per_1000_tx": nginx / tx * 1000, "load_1min": load,
    }
    cmdline = " ".join(cmd)
    print(f"$ {cmdline}", flush=True)
    print("  " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items()), flush=True)
    if not args.keep:
        spend(out)
    return row


def spend(out):
    """Empties every file of a finished run's output (after its timed window): the disk space
    is freed, but the inodes stay allocated until `clean`, so the next run's file creations do
    not meet recently freed inodes."""
    for root, _dirs, files in os.walk(out):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.truncate(path, 0)


def clean(args):
    """Removes every run's output (DIR/runs). Run it after the measurements: the inodes it
    frees are skipped (and scanned) by every file creation on the same disk for 5-10 minutes."""
    runs = os.path.join(os.path.abspath(args.dir), "runs")
    shutil.rmtree(runs, ignore_errors=True)
    print(f"removed {runs}")


def run(args):
    bins = [("new", args.bin)] + ([("old", args.vs)] if args.vs else [])
    rows = {label: [] for label, _ in bins}
    for i in range(args.n):
        for label, binary in bins:
            rows[label].append(one_run(args, binary, label, i))
    keys = ["tx_per_s", "wall_s", "user_s", "sys_s", "cpu_s_per_1000_tx", "faults_per_tx",
            "peak_rss_mib", "nginx_cpu_s_per_1000_tx", "load_1min"]
    print("\n| figure | " + " | ".join(f"{label}: min / median / max" for label, _ in bins)
          + (" | new ÷ old, pairwise median (min–max) |" if args.vs else " |"))
    print("|---" * (len(bins) + 1 + (1 if args.vs else 0)) + "|")
    for k in keys:
        cells = []
        for label, _ in bins:
            v = [r[k] for r in rows[label]]
            cells.append(f"{min(v):.3f} / **{statistics.median(v):.3f}** / {max(v):.3f}")
        if args.vs:
            ratios = [a[k] / b[k] if b[k] else float("nan") for a, b in zip(rows["new"], rows["old"])]
            cells.append(f"{statistics.median(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f})")
        print(f"| {k} | " + " | ".join(cells) + " |")
    exits = {label: [r["exit"] for r in rows[label]] for label, _ in bins}
    exported = {label: [r["exported"] for r in rows[label]] for label, _ in bins}
    print(f"\nexit codes {exits}; exported {exported}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("layout")
    a.add_argument("--bin", required=True)
    a.add_argument("--dir", required=True)
    a.add_argument("--count", type=int, default=2000)
    a.add_argument("--sizes", choices=["realistic", "small"], default="realistic")
    a.add_argument("--kinds", help="comma-separated kinds to keep (default: all)")
    a = sub.add_parser("replicate")
    a.add_argument("--dir", required=True)
    a.add_argument("--from", required=True)
    a.add_argument("--count", type=int, default=2000)
    a.add_argument("--min-responses", type=int, default=10)
    a = sub.add_parser("big")
    a.add_argument("--dir", required=True)
    a.add_argument("--from", required=True)
    for name in ("serve", "stop", "clean"):
        a = sub.add_parser(name)
        a.add_argument("--dir", required=True)
    a = sub.add_parser("run")
    a.add_argument("--dir", required=True)
    a.add_argument("--bin", required=True)
    a.add_argument("--vs")
    a.add_argument("-n", type=int, default=3)
    a.add_argument("--concurrency", type=int, default=16)
    a.add_argument("--max-file-bytes", type=int, default=52428800)
    a.add_argument("--keep", action="store_true",
                   help="keep every run's output whole (DIR/runs; by default its files are emptied after the run)")
    args = p.parse_args()
    {"layout": layout, "replicate": replicate, "big": big, "serve": serve, "stop": stop, "run": run,
     "clean": clean}[args.cmd](args)


if __name__ == "__main__":
    main()
