#!/usr/bin/env bash
# HTTP figures from wrk (Debian's `wrk`) beside the in-tree load generator: the `http` bench
# serves bare axum, nanoflow without the journal and nanoflow with it (BENCH_HOLD), and wrk
# loads each in turn with the same request, 1 thread, 32 connections (BENCH_CONNS), for $SECS
# seconds.
#   benches/wrk.sh [SECS]        (default 5; the servers run with 2 worker threads)
#   BENCH_BIN=/path/to/http benches/wrk.sh [SECS]   (a binary built before, for A/B runs)
#   BENCH_CONNS=256 benches/wrk.sh [SECS]           (wrk's connections, default 32)
#   BENCH_ROUNDS=5 benches/wrk.sh [SECS]            (rounds of the three, default 3; the
#                                                    median of the rounds' ratios is printed)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
CONNS="${BENCH_CONNS:-32}"
ROUNDS="${BENCH_ROUNDS:-3}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
bin=$(benches/http-bin.sh)
out=$(mktemp)
BENCH_HOLD=$((SECS * 3 * ROUNDS + 10)) "$bin" >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -f "$out" "$lua"' EXIT
for _ in $(seq 1 100); do [ "$(wc -l <"$out")" -ge 3 ] && break; sleep 0.1; done
lua=$(mktemp --suffix=.lua)
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"id":"o-1","customer":"ada","items":[{"sku":"apple","qty":3},{"sku":"pear","qty":2}]}'
LUA
declare -A names=([bare]="bare axum" [off]="journal off" [on]="journal on")
mapfile -t servers < <(grep '^serving' "$out")
# Each round loads the three in turn; the ratios of a round compare runs made seconds apart,
# and the median of the rounds' ratios is printed at the end (this machine's speed drifts).
ratios=()
for round in $(seq 1 "$ROUNDS"); do
    declare -A rps=()
    for line in "${servers[@]}"; do
        read -r _ key url <<<"$line"
        result=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$lua" "$url")
        r=$(echo "$result" | awk '/Requests\/sec/ {print $2}')
        p50=$(echo "$result" | awk '$1=="50%" {print $2}')
        p99=$(echo "$result" | awk '$1=="99%" {print $2}')
        rps[$key]=$r
        printf 'round %s wrk %-12s: %10s req/s   p50 %8s   p99 %8s\n' "$round" "${names[$key]}" "$r" "$p50" "$p99"
    done
    ratios+=("${rps[bare]:-0} ${rps[off]:-0} ${rps[on]:-0}")
done
printf '%s\n' "${ratios[@]}" | python3 -c '
import statistics, sys
rounds = [list(map(float, l.split())) for l in sys.stdin if l.strip()]
rounds = [r for r in rounds if r[0] > 0]
if rounds:
    off = statistics.median(r[1] / r[0] for r in rounds)
    on = statistics.median(r[2] / r[0] for r in rounds)
    print(f"wrk: journal off / bare axum {off:.2f}x   journal on / bare axum {on:.2f}x   (median of {len(rounds)} rounds)")
'
