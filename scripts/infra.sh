#!/usr/bin/env bash
# Starts (or stops) what the services need, installing what is missing.
#
#   scripts/infra.sh up        PostgreSQL, Redis and the broker of the running system
#   scripts/infra.sh up-test   PostgreSQL, Redis and a fresh broker for tests
#   scripts/infra.sh down      stops what these scripts started (pid files only)
#   scripts/infra.sh status
#   scripts/infra.sh reset     stops the broker, drops the project's database and
#                              the broker's data (the demo starts from nothing)
#
# Idempotent: what already runs is used as it is. PostgreSQL and Redis on their
# standard loopback ports are used when they answer; otherwise they are
# installed with apt-get and started. The broker is Tansu, built once with cargo
# into $CACHE_DIR and reused by every checkout.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
source "$REPO_ROOT/scripts/infra/servers.sh"
source "$REPO_ROOT/scripts/infra/broker.sh"
source "$REPO_ROOT/scripts/infra/tools.sh"

up() {
  mkdir -p "$STATE_DIR"
  ensure_postgres
  ensure_redis
  ensure_tansu
  start_broker tansu "$KAFKA_PORT" "sqlite://tansu.db" "$STATE_DIR/tansu"
  ensure_topic "$KAFKA_PORT" "$EVENTS_TOPIC" "$EVENTS_PARTITIONS"
}

up_test() {
  mkdir -p "$STATE_DIR"
  ensure_postgres
  ensure_redis
  ensure_tansu
  ensure_prometheus
  ensure_python_client
  # Every test run starts from an empty broker; tests create their own topics.
  # Storage is a fresh SQLite file: Tansu 0.6.0's memory engine keeps only the
  # first record of a multi-record batch (testkit/tests/broker.rs guards this).
  stop_bg tansu-test
  rm -rf "$STATE_DIR/tansu-test"
  # Another checkout's test broker may hold the usual port: take the next free one.
  local port=$KAFKA_TEST_PORT
  while port_open "$KAFKA_HOST" "$port"; do
    port=$((port + 1))
    [ "$port" -lt $((KAFKA_TEST_PORT + 100)) ] || die "no free port for the test broker above $KAFKA_TEST_PORT"
  done
  start_broker tansu-test "$port" "sqlite://tansu.db" "$STATE_DIR/tansu-test"
  echo "$port" >"$STATE_DIR/tansu-test.port"
}

down() {
  stop_bg tansu-test
  rm -f "$STATE_DIR/tansu-test.port"
  stop_bg tansu
  stop_bg redis
  if [ -f "$STATE_DIR/postgres.started" ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "stopping PostgreSQL $version (started by these scripts)"
    pg_ctlcluster --skip-systemctl-redirect "$version" main stop >&2 || true
    rm -f "$STATE_DIR/postgres.started"
  fi
}

reset() {
  stop_bg tansu
  rm -rf "$STATE_DIR/tansu"
  if port_open "$PG_HOST" "$PG_PORT"; then
    log "dropping database $PG_DATABASE"
    psql "$PG_ADMIN_URL" -qc "drop database if exists $PG_DATABASE with (force)" >&2
  fi
  if port_open "$REDIS_HOST" "$REDIS_PORT" && command -v redis-cli >/dev/null; then
    redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern 'erp:*' | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null
  fi
}

status() {
  local what test_port
  test_port=$(cat "$STATE_DIR/tansu-test.port" 2>/dev/null || echo "$KAFKA_TEST_PORT")
  for what in "PostgreSQL $PG_HOST $PG_PORT" "Redis $REDIS_HOST $REDIS_PORT" \
    "broker $KAFKA_HOST $KAFKA_PORT" "test-broker $KAFKA_HOST $test_port"; do
    set -- $what
    if port_open "$2" "$3"; then echo "$1: up ($2:$3)"; else echo "$1: down ($2:$3)"; fi
  done
}

case "${1:-}" in
  up) up ;;
  up-test) up_test ;;
  down) down ;;
  status) status ;;
  reset) reset ;;
  *) echo "usage: $0 up|up-test|down|status|reset" >&2; exit 2 ;;
esac
