#!/usr/bin/env python3
"""Instructions per request under callgrind: a stable figure (unlike CPU time on a shared
2-core machine) for before/after comparisons of the request path (benches/README.md).

Starts an nginx upstream on 127.0.0.1, then the bare Pingora proxy (c) and buntime with
every feature on (d) under `valgrind --tool=callgrind`; sends 2,000 warm-up requests,
zeroes the counters, sends 10,000 more and reads the program total. Writes each profile
to --keep DIR when given (open it with callgrind_annotate --inclusive=yes).
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import tempfile

import run

WARM, MEASURED = 2000, 10000


def h2load(url, headers, n):
    argv = ["h2load", "--h1", "-c", "4", "-n", str(n)]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=600).stdout
    if f"{n} succeeded" not in out:
        raise SystemExit(f"requests to {url} failed:\n{out}")


def profile(name, argv, env, url, headers, tmp, keep):
    out = os.path.join(tmp, f"{name}.callgrind")
    procs = run.Procs()
    try:
        p = procs.start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + argv,
                        env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run.wait_http(url, {h.split(": ", 1)[0]: h.split(": ", 1)[1] for h in headers}, timeout=120)
        h2load(url, headers, WARM)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], capture_output=True, check=True)
        h2load(url, headers, MEASURED)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
    finally:
        procs.stop_all()
    dumps = sorted(glob.glob(out + ".*"))
    text = subprocess.run(["callgrind_annotate", dumps[-1]], capture_output=True, text=True).stdout
    total = int(re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text).group(1).replace(",", ""))
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(dumps[-1], os.path.join(keep, f"{name}.callgrind"))
    return total // MEASURED


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--buntime", default="target/release/buntime")
    ap.add_argument("--bare", default="target/release/examples/bare-proxy")
    ap.add_argument("--keep", help="copy the callgrind profiles into this folder")
    args = ap.parse_args()
    buntime, bare = os.path.abspath(args.buntime), os.path.abspath(args.bare)
    procs = run.Procs()
    tmp = tempfile.mkdtemp(prefix="buntime-instr-")
    try:
        up_port = run.free_port()
        procs.start(run.nginx_conf(tmp, "upstream", f"""
    server {{
        listen {run.HOST}:{up_port};
        location / {{ default_type text/plain; return 200 "{run.BODY}"; }}
    }}"""), stderr=subprocess.DEVNULL)
        run.wait_http(f"http://{run.HOST}:{up_port}/")
        headers = [f"Origin: {run.ORIGIN}", f"Authorization: Bearer {run.jwt(run.SECRET)}"]
        port = run.free_port()
        c = profile("bare", [bare, f"{run.HOST}:{port}", f"{run.HOST}:{up_port}", "1"], None,
                    f"http://{run.HOST}:{port}/bench/x", headers, tmp, args.keep)
        d_dir = os.path.join(tmp, "d")
        os.makedirs(d_dir)
        config = os.path.join(d_dir, "buntime.yaml")
        with open(config, "w") as f:
            f.write(f'{{"plugins": {{"proxy": {{"rules": [{{"pattern": "^/bench(/.*)?$", '
                    f'"target": "http://{run.HOST}:{up_port}"}}]}}}}}}')
        port = run.free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PORT": str(port),
            "RUNTIME_THREADS": "1",
            "RUNTIME_DATA_DIR": os.path.join(d_dir, "data"),
            "RUNTIME_WORKER_DIRS": os.path.join(d_dir, "apps"),
            "RUNTIME_PLUGIN_DIRS": os.path.join(d_dir, "plugins"),
            "RUNTIME_ACCESS_LOG": "off",
            "RUNTIME_LOG_LEVEL": "warn",
            "GATEWAY_CORS_ORIGIN": f"https://admin.example.org,{run.ORIGIN},https://*.example.net",
            "GATEWAY_RATE_LIMIT_REQUESTS": "1000000000",
            "AUTH_JWT_SECRET": run.SECRET,
        }
        d = profile("buntime", [buntime, "serve", "--config", config], env,
                    f"http://{run.HOST}:{port}/bench/x", headers, d_dir, args.keep)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"instructions per request: bare Pingora (c) {c:,}, buntime (d) {d:,} ({d / c:.2f}x)")


if __name__ == "__main__":
    main()
