#!/usr/bin/env bash
# Peers side by side on the same generated events, in one run: eddy, Feldera's DBSP 0.349
# and Bytewax 0.21.1 (1 and 2 workers each), same windowed-count query, same JSONL file.
# Prints one JSON line per run plus peak RSS.  Usage: benches/peers/run.sh [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000000}
FILE=${TMPDIR:-/tmp}/eddy-peers-$N.jsonl
python3 -c "import bytewax" 2>/dev/null || pip install -q bytewax==0.21.1
cargo build --release -q -p eddy-benches --bin peers
[ -f "$FILE" ] || target/release/peers gen "$FILE" "$N"
for w in 1 2; do
    /usr/bin/time -f "  peak RSS %M KB" target/release/peers eddy "$FILE" "$w"
done
(cd benches/peers/dbsp && cargo build --release -q)
for w in 1 2; do
    /usr/bin/time -f "  peak RSS %M KB" benches/peers/dbsp/target/release/eddy-peer-dbsp "$FILE" "$w"
done
for w in 1 2; do
    /usr/bin/time -f "  peak RSS %M KB" python3 benches/peers/bytewax_counts.py "$FILE" "$w"
done
