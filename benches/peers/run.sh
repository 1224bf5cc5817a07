#!/usr/bin/env bash
# Peers side by side on the same generated events, in one run: eddy, Feldera's DBSP 0.349,
# Bytewax 0.21.1 and PyFlink 1.20.3 SQL (1 and 2 workers each), same windowed-count query,
# same JSONL file. Prints one JSON line per run, with its peak RSS (`peak_rss_kb`, GNU time:
# the largest process waited for; for PyFlink that may not be its JVM).
#   benches/peers/run.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000000}
FILE=${TMPDIR:-/tmp}/eddy-peers-$N.jsonl
TIMEFILE=$(mktemp)
trap 'rm -f "$TIMEFILE"' EXIT
[ -x /usr/bin/time ] || { apt-get update -q && apt-get install -y -q time; } >&2
python3 -c "import bytewax" 2>/dev/null || pip install -q bytewax==0.21.1 >&2
python3 -c "import pyflink" 2>/dev/null || pip install -q apache-flink==1.20.3 >&2
cargo build --release -q -p eddy-benches --bin peers
(cd benches/peers/dbsp && cargo build --release -q)
[ -f "$FILE" ] || target/release/peers gen "$FILE" "$N" >&2

# measure CMD...: the command's JSON line with "peak_rss_kb" added.
measure() {
    local line
    line=$(/usr/bin/time -f "%M" -o "$TIMEFILE" "$@")
    echo "${line%\}},\"peak_rss_kb\":$(tail -1 "$TIMEFILE")}"
}
for w in 1 2; do measure target/release/peers eddy "$FILE" "$w"; done
for w in 1 2; do measure benches/peers/dbsp/target/release/eddy-peer-dbsp "$FILE" "$w"; done
for w in 1 2; do measure python3 benches/peers/bytewax_counts.py "$FILE" "$w"; done
for w in 1 2; do measure python3 benches/peers/pyflink_counts.py "$FILE" "$w"; done
