#!/usr/bin/env bash
# Runs a benchmark (release build) and prints its figures next to the
# baseline measured in the same run.
#
#   scripts/bench.sh commands [--seconds N] [--clients 16,64] [--articles N]
#   scripts/bench.sh imports [--lines N] [--articles N] [--clients N] [--seconds N] [--rounds N] [--report]
#   scripts/bench.sh projector [--events N] [--articles N] [--batch-size N] [--skew S]
#   scripts/bench.sh queries [--events N] [--hot N] [--seconds N] [--connections N]
#   scripts/bench.sh webhooks [--events N] [--articles N] [--concurrency N] [--seconds N] [--skew S]
#   scripts/bench.sh <benchmark> --help
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/scripts/infra.sh" up-test
# The query benchmark's load generator, and pinning to cores.
command -v wrk >/dev/null || apt_install wrk
command -v taskset >/dev/null || apt_install util-linux
# The import benchmark uploads its file with curl.
command -v curl >/dev/null || apt_install curl ca-certificates
trap 'stop_bg tansu-test' EXIT
export_test_env
log "building (release)"
cargo build --release --locked -p bench -p command-service -p projector -p query-service -p worker -p notifier
exec "$REPO_ROOT/target/release/bench" "$@"
