#!/usr/bin/env bash
# The fault-injection suite at full length: every case of e2e/tests/faults.rs
# with 30 s of load before and after its fault (scripts/test.sh runs them
# with 3 s), then a table of the recovery times.
#
#   scripts/faults.sh [seconds of load per phase, default 30] [test-name filter]
#
# Takes about 20 minutes at 30 s. Reports: .run/faults.jsonl (one JSON line per case).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/infra.sh" up-test
trap 'stop_bg tansu-test' EXIT

export_test_env
export ERP_FAULT_SECS="${1:-30}"
export ERP_FAULT_REPORT="$STATE_DIR/faults.jsonl"
rm -f "$ERP_FAULT_REPORT"

log "building the workspace"
cargo build --workspace --bins --tests --locked
log "running the fault cases with $ERP_FAULT_SECS s of load before and after each fault"
cargo nextest run --locked -p e2e --test faults --no-fail-fast --test-threads 1 ${2:+"$2"}

python3 - "$ERP_FAULT_REPORT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"\n{'case':<32} {'recovery':>9} {'accepted':>9} {'refused':>8} {'503':>5} {'504':>5} {'broken':>7}  details")
for r in rows:
    s = r["statuses"]
    print(f"{r['case']:<32} {r['recovery_ms']/1000:>8.1f}s {r['accepted']:>9} {r['refused']:>8} {s.get('503', 0):>5} {s.get('504', 0):>5} {r['broken_connections']:>7}  {json.dumps(r['details'])}")
PY
