#!/usr/bin/env bash
# Prints the path of the `http` bench's binary: $BENCH_BIN when set (a binary built before, to
# compare two builds in turn), else the one `cargo bench` builds (bench profile). Used by
# `wrk.sh` and `instructions.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${BENCH_BIN:-}" ]; then
    echo "$BENCH_BIN"
    exit 0
fi
cargo bench -p nanoflow --bench http --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "http" and m.get("executable"):
        print(m["executable"])'
