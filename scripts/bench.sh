#!/usr/bin/env bash
# Runs a benchmark (release build) and prints its figures next to the
# baseline measured in the same run.
#
#   scripts/bench.sh commands [--seconds N] [--clients 16,64] [--articles N]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
"$REPO_ROOT/scripts/infra.sh" up-test
trap 'stop_bg tansu-test' EXIT
export ERP_TEST_PG_ADMIN_URL="$PG_ADMIN_URL"
export ERP_TEST_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/0"
export ERP_TEST_KAFKA_BROKERS="$KAFKA_HOST:$(cat "$STATE_DIR/tansu-test.port")"
log "building (release)"
cargo build --release --locked -p bench -p command-service -p projector -p query-service
exec "$REPO_ROOT/target/release/bench" "$@"
