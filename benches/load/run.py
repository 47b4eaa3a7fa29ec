#!/usr/bin/env python3
"""Side-by-side load benchmark, on 127.0.0.1 only (see benches/README.md).

Targets, measured in interleaved rounds whose order rotates:
  a  the upstream directly (nginx, 1 worker, a fixed 20-byte body)
  b  nginx as a keep-alive reverse proxy to it (1 worker)
  c  a bare Pingora proxy (benches/load/bare_proxy.rs, upstream_peer only, 1 thread)
  d  buntime, 1 thread: a proxy rule to the upstream, CORS with an origin list, rate
     limiting (a limit far above the load) and a JWT check (a valid token is sent)
  e  buntime serving a static worker app (the same gateway)
Each round runs wrk at saturation and h2load at a fixed offered rate against each target
and reads the CPU time the proxy's own processes used from /proc. (c) and (d), which the
first two targets compare, are one unit of the rotation, measured back to back as two
pairs of half-length runs in ABBA order; their ratios are medians of the pairs' ratios.
A last phase runs (d) with 5,000 more rules at the fixed rate, in alternating 1-second
windows with and without the table being rebuilt and swapped 4 times a second.
Everything started is stopped; runs are bounded by --duration.

Prints a Markdown table and writes it to --out.
"""
import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BODY = "01234567890123456789"  # 20 bytes
HOST = "127.0.0.1"
SECRET = "bench-secret-bench-secret-bench-secret"
ORIGIN = "https://app.example.com"
NAMES = {
    "a": "upstream (nginx, direct)",
    "b": "nginx reverse proxy",
    "c": "bare Pingora proxy",
    "d": "buntime: rule + CORS + rate limit + JWT",
    "e": "buntime: static worker app",
}


def cpus():
    """(the proxies' CPU, the CPU of everything else): the proxy under test gets a core to
    itself, while the upstream, the load generators and this script share the other, so
    the scheduler cannot place a proxy next to wrk in one round and apart in the next.
    (None, None) on a single CPU."""
    return (1, 0) if (os.cpu_count() or 1) >= 2 else (None, None)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def jwt(secret, roles=("user",)):
    def b64(data):
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"sub": "bench", "roles": list(roles), "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def cpu_seconds(pids):
    """CPU time of every thread of `pids`, from the scheduler's own clock
    (/proc/<pid>/task/<tid>/schedstat, in ns). utime/stime in /proc/<pid>/stat are sampled
    at timer ticks and miss most of a process that runs in short bursts, as a proxy at a
    fixed rate does."""
    total = 0
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total / 1e9


def children(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]
    except OSError:
        return []


def wait_http(url, headers=None, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - still starting
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer 200 within {timeout}s: {last}")


class Procs:
    """Everything this run started; stopped on exit, whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, argv, cpu=None, **kw):
        """`cpu`: run the process (and every thread and child it makes) on that CPU only."""
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=pin, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        """Stops one process (and its children) and forgets it."""
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.remove(p)

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def nginx_conf(tmp, name, server_block):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    {server_block}
}}
""")
    return ["nginx", "-p", d, "-c", conf]


def parse_duration_us(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


def saturate(url, headers, conns, duration):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = parse_duration_us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_duration_us(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "p50": p50, "p99": p99, "errors": int(errors.group(1)) if errors else 0}


def fixed_rate_log(url, headers, rate, duration, tmp):
    """Runs h2load at a fixed offered rate; returns, per request, its start (seconds since
    the epoch), its latency (µs) and whether it answered 200."""
    clients = 20
    log = os.path.join(tmp, "h2load.log")
    if os.path.exists(log):
        os.remove(log)  # h2load appends to it
    argv = ["h2load", "--h1", "-c", str(clients), "--rps", str(max(1, rate // clients)), "-D", str(duration), "--log-file", log]
    for h in headers:
        argv += ["-H", h]
    subprocess.run(argv + [url], capture_output=True, text=True, timeout=duration + 30)
    samples = []
    with open(log) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                samples.append((float(cols[0]) / 1e6, float(cols[2]), cols[1] == "200"))
    return samples


def percentile(lat, p):
    """The p-quantile of sorted, non-empty latencies."""
    return lat[min(len(lat) - 1, int(len(lat) * p))]


def latency_summary(samples):
    lat = sorted(s[1] for s in samples)
    errors = sum(1 for s in samples if not s[2])
    if not lat:
        return {"requests": 0, "p50": float("nan"), "p99": float("nan"), "errors": errors}
    return {"requests": len(lat), "p50": percentile(lat, 0.50), "p99": percentile(lat, 0.99), "errors": errors}


def fixed_rate(url, headers, rate, duration, tmp):
    return latency_summary(fixed_rate_log(url, headers, rate, duration, tmp))


def measure(kind, target, args, tmp):
    before = cpu_seconds(target["pids"]())
    if kind == "sat":
        r = saturate(target["url"], target["headers"], args.conns, args.duration)
    else:
        r = fixed_rate(target["url"], target["headers"], args.rate, args.duration, tmp)
    used = cpu_seconds(target["pids"]()) - before
    r["cpu_us"] = used * 1e6 / r["requests"] if r["requests"] else float("nan")
    return r


def start_buntime(procs, args, tmp, name, up_port, extra_rules=0):
    d = os.path.join(tmp, name)
    apps = os.path.join(d, "apps", "w")
    os.makedirs(apps, exist_ok=True)
    with open(os.path.join(apps, "manifest.yaml"), "w") as f:
        # Steady-state serving: no recycling (maxRequests) during the runs.
        f.write("ttl: 1h\npreload: true\nentrypoint: body.txt\nmaxRequests: 1000000000\n")
    with open(os.path.join(apps, "body.txt"), "w") as f:
        f.write(BODY)
    rules = [{"pattern": "^/bench(/.*)?$", "target": f"http://{HOST}:{up_port}"}]
    rules += [{"pattern": f"^/r{i}/(\\d+)/x$", "target": f"http://{HOST}:{up_port}"} for i in range(extra_rules)]
    config = os.path.join(d, "buntime.yaml")
    with open(config, "w") as f:
        json.dump({"plugins": {"proxy": {"rules": rules}}}, f)  # JSON is YAML
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": str(port),
        "RUNTIME_THREADS": "1",
        "RUNTIME_DATA_DIR": os.path.join(d, "data"),
        "RUNTIME_WORKER_DIRS": os.path.join(d, "apps"),
        "RUNTIME_PLUGIN_DIRS": os.path.join(d, "plugins"),
        "RUNTIME_ACCESS_LOG": args.access_log,
        "RUNTIME_LOG_LEVEL": "warn",
        "GATEWAY_CORS_ORIGIN": f"https://admin.example.org,{ORIGIN},https://*.example.net",
        "GATEWAY_RATE_LIMIT_REQUESTS": "1000000000",
        "GATEWAY_RATE_LIMIT_WINDOW": "1m",
        "AUTH_JWT_SECRET": SECRET,
    }
    log = open(os.path.join(d, "buntime.log"), "w")
    p = procs.start([args.buntime, "serve", "--config", config], cpu=cpus()[0], env=env, cwd=d, stdout=log,
                    stderr=log)
    wait_http(f"http://{HOST}:{port}/api/health/ready")
    return p, port


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=4, help="seconds per measurement (default 4; (c) and (d) get two of half that)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    ap.add_argument("--conns", type=int, default=32, help="wrk connections (default 32)")
    ap.add_argument("--rate", type=int, default=5000, help="fixed offered load, requests/s (default 5000)")
    ap.add_argument("--access-log", default="off", choices=["on", "off"], help="buntime's access log (default off)")
    ap.add_argument("--no-swap", action="store_true", help="skip the 5,000-rule rebuild phase")
    ap.add_argument("--swap-only", action="store_true", help="run only the 5,000-rule rebuild phase")
    ap.add_argument("--buntime", default="target/release/buntime")
    ap.add_argument("--bare", default="target/release/examples/bare-proxy")
    ap.add_argument("--out", help="write the table here too (default: benches/load/results.md, "
                    "except with --swap-only, which leaves the full run's table alone)")
    args = ap.parse_args()
    args.buntime, args.bare = os.path.abspath(args.buntime), os.path.abspath(args.bare)
    if args.swap_only and args.no_swap:
        raise SystemExit("--swap-only and --no-swap exclude each other")
    if args.out is None and not args.swap_only:
        args.out = "benches/load/results.md"
    for tool in ("nginx", "wrk", "h2load", args.buntime, args.bare):
        if not shutil.which(tool) and not os.access(tool, os.X_OK):
            raise SystemExit(f"missing {tool} (see benches/README.md)")

    if cpus()[1] is not None:
        os.sched_setaffinity(0, {cpus()[1]})  # inherited by the upstream, wrk and h2load
    procs = Procs()
    tmp = tempfile.mkdtemp(prefix="buntime-load-")
    try:
        rows, pairs, swap = run(procs, args, tmp)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, pairs, swap, args)


def start_proxies(procs, args, tmp, name, up, up_port, headers):
    """Starts (b) to (e) and warms each up; returns the targets and the processes to stop."""
    np_port, bare_port = free_port(), free_port()
    nginx_proxy = procs.start(cpu=cpus()[0], argv=nginx_conf(tmp, f"proxy-{name}", f"""
    upstream up {{ server {HOST}:{up_port}; keepalive 64; }}
    server {{
        listen {HOST}:{np_port};
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""), stderr=subprocess.DEVNULL)
    bare = procs.start([args.bare, f"{HOST}:{bare_port}", f"{HOST}:{up_port}", "1"], cpu=cpus()[0],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw, gw_port = start_buntime(procs, args, tmp, f"buntime-{name}", up_port)
    targets = {
        "a": {"url": f"http://{HOST}:{up_port}/bench/x", "pids": lambda: [up.pid] + children(up.pid)},
        "b": {"url": f"http://{HOST}:{np_port}/bench/x", "pids": lambda: [nginx_proxy.pid] + children(nginx_proxy.pid)},
        "c": {"url": f"http://{HOST}:{bare_port}/bench/x", "pids": lambda: [bare.pid]},
        "d": {"url": f"http://{HOST}:{gw_port}/bench/x", "pids": lambda: [gw.pid]},
        "e": {"url": f"http://{HOST}:{gw_port}/w/", "pids": lambda: [gw.pid]},
    }
    for t in targets.values():
        t["headers"] = headers
        wait_http(t["url"], {"Authorization": headers[1].split(": ", 1)[1]})
        # Warm-up: connections pooled, caches filled.
        subprocess.run(["wrk", "-t1", "-c8", "-d1s"] + sum((["-H", h] for h in headers), []) + [t["url"]],
                       capture_output=True, timeout=30)
    return targets, [nginx_proxy, bare, gw]


def run(procs, args, tmp):
    up_port = free_port()
    up = procs.start(nginx_conf(tmp, "upstream", f"""
    server {{
        listen {HOST}:{up_port};
        location / {{ default_type text/plain; return 200 "{BODY}"; }}
    }}"""), stderr=subprocess.DEVNULL)
    token = jwt(SECRET)
    headers = [f"Origin: {ORIGIN}", f"Authorization: Bearer {token}"]
    rows = {k: {"sat": [], "fixed": []} for k in NAMES}
    pairs = []
    # (c) and (d) are measured as one unit of the rotation, so that they sit next to each
    # other in time: see `pair_block`.
    order = ["a", "b", "cd", "e"]
    for r in range(0 if args.swap_only else args.rounds):
        # Fresh proxies each round: one process can run a steady ~10% slower or faster
        # than the next (its memory layout), so the medians span several processes.
        targets, started = start_proxies(procs, args, tmp, f"round{r}", up, up_port, headers)
        rotated = order[r % len(order):] + order[:r % len(order)]
        for key in rotated:
            if key == "cd":
                pairs += pair_block(targets, rows, args, tmp, d_first=r % 2 == 1)
                continue
            rows[key]["sat"].append(measure("sat", targets[key], args, tmp))
            rows[key]["fixed"].append(measure("fixed", targets[key], args, tmp))
        for p in started:
            procs.stop(p)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    swap = None
    if not args.no_swap:
        swap = swap_phase(procs, args, tmp, up_port, headers)
    return rows, pairs, swap


def pair_block(targets, rows, args, tmp, d_first):
    """Measures (c) and (d), the pair the first two targets compare, in two pairs of
    half-length measurements in ABBA order (c d d c, or d c c d): the machine's speed
    drifts by a third over seconds here, and a ratio of two measurements taken apart
    carries that drift, while two taken back to back mostly share it. Returns the pairs,
    each as {"c": {"sat": ..., "fixed": ...}, "d": {...}}."""
    half = argparse.Namespace(**{**vars(args), "duration": max(1, args.duration // 2)})
    first, second = ("d", "c") if d_first else ("c", "d")
    got = {"c": [], "d": []}
    for key in (first, second, second, first):
        m = {kind: measure(kind, targets[key], half, tmp) for kind in ("sat", "fixed")}
        for kind, r in m.items():
            rows[key][kind].append(r)
        got[key].append(m)
    return [{"c": c, "d": d} for c, d in zip(got["c"], got["d"])]


def swap_phase(procs, args, tmp, up_port, headers):
    """(d) with 5,000 more rules at the fixed rate, in one run of alternating 1-second
    windows: quiet ones, and ones in which a rule is toggled 4 times a second (each toggle
    rebuilds and swaps the table). Requests count in the window they started in, so the
    machine's drift hits both alike; the p99 of one condition is over all its windows."""
    gw, port = start_buntime(procs, args, tmp, "buntime-5k", up_port, extra_rules=5000)
    base = f"http://{HOST}:{port}"
    # With JWT on, admin routes want an admin token even from loopback.
    admin = {"authorization": f"Bearer {jwt(SECRET, ('admin',))}"}
    req = urllib.request.Request(f"{base}/redirects/api/rules", method="POST",
                                 data=json.dumps({"pattern": "^/toggled$", "target": f"http://{HOST}:{up_port}"}).encode(),
                                 headers={"content-type": "application/json", **admin})
    with urllib.request.urlopen(req, timeout=10) as r:
        rule_id = json.load(r)["id"]
    url = f"{base}/bench/x"
    wait_http(url, {"Authorization": headers[1].split(": ", 1)[1]})
    subprocess.run(["wrk", "-t1", "-c8", "-d1s"] + sum((["-H", h] for h in headers), []) + [url],
                   capture_output=True, timeout=30)
    start = time.time()

    def busy(t):
        return int(t - start) % 2 == 1

    swaps, failed = [0], []

    def toggler(stop):
        # This thread shares its CPU with h2load, which times the requests: at normal
        # priority its own HTTP client work (urllib: 0.6-1.8 ms of CPU a toggle) delayed
        # h2load in the busy windows only. The same client sending GETs to the upstream
        # instead, with no gateway work at all, read 0.95-1.27x (benches/README.md). At
        # nice 19 it runs in the time h2load leaves; the gateway's side is unchanged.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while not stop.is_set():
            now = time.time()
            # Not in a window's last 0.1 s: a toggle's work stays inside its window.
            if busy(now) and (now - start) % 1 < 0.9:
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                try:
                    conn.request("PATCH", f"/redirects/api/rules/{rule_id}/toggle", headers=admin)
                    r = conn.getresponse()
                    r.read()
                    if r.status != 200:
                        failed.append(f"toggling rule {rule_id} answered {r.status}")
                        return
                except OSError as e:
                    failed.append(f"toggling rule {rule_id}: {e}")
                    return
                finally:
                    conn.close()
                swaps[0] += 1
            stop.wait(0.25)

    stop = threading.Event()
    th = threading.Thread(target=toggler, args=(stop,))
    th.start()
    try:
        samples = fixed_rate_log(url, headers, args.rate, 2 * args.rounds * args.duration, tmp)
    finally:
        stop.set()
        th.join()
    if failed:
        raise SystemExit(failed[0])
    return {
        "quiet": latency_summary([s for s in samples if not busy(s[0])]),
        "busy": latency_summary([s for s in samples if busy(s[0])]),
        "spread": window_spread(samples, start),
        "swaps": swaps[0],
    }


def window_spread(samples, start, draws=200):
    """How far the busy/quiet p99 ratio moves with the luck of the windows: the ratio
    recomputed over windows drawn again with replacement (a bootstrap over whole 1-second
    windows, so a hiccup of the machine weighs as the one window it fell in), and the
    2.5th and 97.5th percentiles of those ratios. A range that holds 1.0 means this run
    cannot tell the rebuilds from the machine's noise."""
    windows = {}
    for s in samples:
        windows.setdefault(int(s[0] - start), []).append(s[1])
    busy = [w for i, w in windows.items() if i % 2 == 1]
    quiet = [w for i, w in windows.items() if i % 2 == 0]
    if not busy or not quiet:
        return None

    def p99(drawn):
        return percentile(sorted(x for w in drawn for x in w), 0.99)

    rng = random.Random(9)  # the same draws for the same samples
    ratios = sorted(p99(rng.choices(busy, k=len(busy))) / p99(rng.choices(quiet, k=len(quiet)))
                    for _ in range(draws))
    return ratios[int(draws * 0.025)], ratios[int(draws * 0.975) - 1]


def med(runs, field):
    return statistics.median(r[field] for r in runs)


def report(rows, pairs, swap, args):
    runs = (f"the rebuild phase only ({2 * args.rounds * args.duration} s)" if args.swap_only
            else f"{args.rounds} interleaved rounds of {args.duration} s, medians; (c) and (d) in each round as "
            f"two back-to-back pairs of {max(1, args.duration // 2)} s in ABBA order, their ratios the median of "
            f"the pairs' own")
    lines = [
        f"Loopback, {os.cpu_count()} CPUs, {runs}. "
        f"Saturation: wrk, 1 thread, {args.conns} connections. Fixed rate: h2load --h1, 20 clients, "
        f"{args.rate} req/s offered. CPU: the proxy's own processes (for e, the gateway only; the "
        f"worker process is not counted). buntime access log: {args.access_log}. "
        + ("Each proxy runs on CPU 1; the upstream and the load generators on CPU 0."
           if cpus()[0] is not None else "One CPU: nothing pinned."),
        "",
    ]
    if not args.swap_only:
        lines += target_table(rows)
    lines += ["", "| ratio | value | target |", "|---|---|---|"]
    if not args.swap_only:
        lines += ratio_rows(rows, pairs)
    if swap:
        q, bz = swap["quiet"]["p99"], swap["busy"]["p99"]
        spread = (f"; windows redrawn: 95% within {swap['spread'][0]:.2f}-{swap['spread'][1]:.2f}x"
                  if swap["spread"] else "")
        lines += [
            f"| (d) with 5,000 more rules, fixed-rate p99 in the 1-s windows where the table is rebuilt and "
            f"swapped ({swap['swaps']} swaps, {swap['quiet']['errors'] + swap['busy']['errors']} errors) / in the windows "
            f"between | {bz / q:.2f}x ({bz / 1e3:.2f} ms / {q / 1e3:.2f} ms{spread}) "
            f"| < 1.10x |",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is None:
        return
    with open(args.out, "w") as f:
        f.write(f"<!-- written by benches/load/run.py on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->\n")
        f.write(text)


def target_table(rows):
    lines = [
        "| target | req/s | p50 | p99 | CPU µs/req | req per CPU-s | fixed-rate p50 | fixed-rate p99 | fixed-rate CPU µs/req | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in rows.items():
        sat, fixed = r["sat"], r["fixed"]
        cpu = med(sat, "cpu_us")
        errors = sum(x["errors"] for x in sat + fixed)
        lines.append(
            f"| ({key}) {NAMES[key]} | {med(sat, 'rps'):,.0f} | {med(sat, 'p50') / 1e3:.2f} ms | {med(sat, 'p99') / 1e3:.2f} ms "
            f"| {cpu:.1f} | {1e6 / cpu:,.0f} | {med(fixed, 'p50') / 1e3:.2f} ms | {med(fixed, 'p99') / 1e3:.2f} ms "
            f"| {med(fixed, 'cpu_us'):.1f} | {errors} |"
        )
    return lines


def ratio_rows(rows, pairs):
    cpu = {k: med(rows[k]["sat"], "cpu_us") for k in "bcd"}

    def paired(ratio):
        """The median of `ratio(c, d)` over the (c)/(d) pairs, and their range."""
        values = sorted(ratio(p["c"], p["d"]) for p in pairs)
        return f"{statistics.median(values):.2f}x ({len(values)} pairs: {values[0]:.2f}-{values[-1]:.2f}x)"

    return [
        f"| (d) requests per CPU-second / (c) | {paired(lambda c, d: c['sat']['cpu_us'] / d['sat']['cpu_us'])} "
        f"| >= 0.90x |",
        f"| (d) requests per CPU-second / (c), at the fixed rate "
        f"| {paired(lambda c, d: c['fixed']['cpu_us'] / d['fixed']['cpu_us'])} | (for reference) |",
        f"| (d) fixed-rate p99 / (c) | {paired(lambda c, d: d['fixed']['p99'] / c['fixed']['p99'])} | <= 1.20x |",
        f"| (d) requests per CPU-second / nginx (b) | {cpu['b'] / cpu['d']:.2f}x | stretch >= 0.50x |",
        f"| (c) requests per CPU-second / nginx (b) | {cpu['b'] / cpu['c']:.2f}x | (bare Pingora, for reference) |",
        f"| (d) req/s / (c) at saturation | {paired(lambda c, d: d['sat']['rps'] / c['sat']['rps'])} | |",
    ]


if __name__ == "__main__":
    main()
