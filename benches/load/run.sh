#!/usr/bin/env bash
# Builds the release binaries and runs the side-by-side load benchmark (benches/README.md).
# Needs nginx, wrk and h2load (Debian: nginx-light wrk nghttp2-client) and python3.
# Everything runs on 127.0.0.1 and stops by itself; options go to run.py (--help).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -j2 --bin buntime --example bare-proxy
exec python3 benches/load/run.py "$@"
