#!/usr/bin/env bash
# Load tests of the whole system (docs/loadtests/README.md): starts the
# servers (installing what is missing), builds the services and the load
# generator in release mode, runs a plan against freshly started services,
# stops everything, and writes the figures, the difference to the stored
# baseline and an HTML report with plots under docs/loadtests/<plan>/.
#
#   scripts/loadtest.sh steady [--rates 50,100,...] [--step 30]
#   scripts/loadtest.sh ramp   [--rate 2000] [--duration 5m]
#   scripts/loadtest.sh spike  [--rate 200] [--duration 2m]     (the phase after the spike)
#   scripts/loadtest.sh soak   [--rate 200] [--duration 30m]
#   scripts/loadtest.sh <plan> --save-baseline                  (store the run as the baseline)
#   scripts/loadtest.sh <plan> --help                           (every option)
#
# The generator runs on the machine's last core (taskset); the services,
# PostgreSQL, Redis and the broker on all of them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$REPO_ROOT/scripts/infra/tools.sh"
cd "$REPO_ROOT"
[ $# -ge 1 ] || die "usage: scripts/loadtest.sh steady|ramp|spike|soak [options] (--help for the options)"

"$REPO_ROOT/scripts/infra.sh" up-test
command -v taskset >/dev/null || apt_install util-linux
ensure_python_plots
trap 'stop_bg tansu-test' EXIT
export_test_env
log "building (release)"
cargo build --release --locked -p loadtest -p command-service -p projector -p query-service -p worker -p notifier

out="docs/loadtests/$1"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --out) out="${args[$((i + 1))]:-$out}" ;;
    --out=*) out="${args[$i]#--out=}" ;;
    -h | --help) exec "$REPO_ROOT/target/release/loadtest" "$@" ;;
  esac
done
last_core=$(($(nproc --all) - 1))
status=0
taskset -c "$last_core" "$REPO_ROOT/target/release/loadtest" "$@" || status=$?
if [ -f "$out/results.json" ]; then
  "$CACHE_DIR/python/bin/python" "$REPO_ROOT/loadtest/report.py" "$out"
fi
exit "$status"
