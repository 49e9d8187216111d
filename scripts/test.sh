#!/usr/bin/env bash
# Sets up what the tests need and runs every test of the workspace.
#
#   scripts/test.sh [extra arguments for the test runner]
#
# Starts PostgreSQL and Redis if they are not running (installing them if
# needed) and a fresh Kafka-protocol broker (a new SQLite file) on port 19092
# or the next free one (scripts/infra.sh up-test), builds the workspace and
# runs the tests with cargo-nextest (cargo test without it). Exits non-zero
# on any failure.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/infra.sh" up-test
trap 'stop_bg tansu-test' EXIT

# Databases left behind by earlier runs' tests.
leftovers=$(psql "$PG_ADMIN_URL" -qtAc "select datname from pg_database where datname like 'erp\_test\_%'")
for db in $leftovers; do
  psql "$PG_ADMIN_URL" -qc "drop database if exists $db with (force)" >/dev/null
done

export_test_env

log "building the workspace"
cargo build --workspace --bins --tests --locked

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  log "cargo-nextest not found; using cargo test"
  cargo test --workspace --locked --no-fail-fast "$@"
fi
