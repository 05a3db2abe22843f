#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: bare axum against nanoflow without
# the journal, in the `http` bench's process, on the same request. Unlike req/s on this shared
# 2-core machine, the count does not drift from run to run, so that a change of a few hundred
# instructions shows. Counts only user space: the kernel's share of a request (about 60 % of
# its time here, the same for both servers) is not in it.
#   benches/instructions.sh [REQUESTS]              (default 2000, after 200 to warm up)
#   BENCH_BIN=/path/to/http benches/instructions.sh  (a binary built before, for A/B runs)
# Needs valgrind (Debian: `apt-get install valgrind`) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
bin=$(benches/http-bin.sh)
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
BENCH_HOLD=3600 valgrind --tool=callgrind --callgrind-out-file="$dir/cg.%p" "$bin" >"$dir/out" 2>"$dir/valgrind.log" &
pid=$!
for _ in $(seq 1 600); do [ "$(grep -c '^serving' "$dir/out" 2>/dev/null)" -ge 3 ] && break; sleep 0.5; done
# Keep-alive POSTs, one at a time over 4 connections, each answer checked.
send() {
    python3 - "$1" "$2" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
body = '{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3},{"sku":"pear","qty":2}]}'
conns = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(n):
    c = conns[i % 4]
    c.request("POST", "/orders", body, {"content-type": "application/json"})
    r = c.getresponse()
    data = r.read()
    assert r.status == 200, (r.status, data)
PY
}
declare -A count
for key in bare off; do
    port=$(grep "^serving $key " "$dir/out" | sed 's#.*:\([0-9]*\)/orders#\1#')
    send "$port" 200
    callgrind_control -z "$pid" >/dev/null 2>&1
    send "$port" "$N"
    callgrind_control -d "$key" "$pid" >/dev/null 2>&1
    file=$(grep -l "^desc: Trigger: dump $key" "$dir"/cg.* | head -1)
    count[$key]=$(awk '/^totals:/ {print $2}' "$file")
    python3 -c "print(f'$key: {${count[$key]} / $N:,.0f} instructions per request')"
done
python3 -c "print(f'journal off / bare axum: {${count[off]} / ${count[bare]}:.3f}x the instructions per request')"
