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

ensure_postgres() {
  if port_open "$PG_HOST" "$PG_PORT"; then
    log "PostgreSQL answers on $PG_HOST:$PG_PORT"
  else
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      apt_install postgresql postgresql-client
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || pg_ctlcluster "$version" main start >&2
    touch "$STATE_DIR/postgres.started"
    wait_port "$PG_HOST" "$PG_PORT" 30 || die "PostgreSQL did not come up on $PG_HOST:$PG_PORT"
    # A fresh cluster authenticates TCP clients by password: give postgres the
    # project's default one (a developer machine's trust setup ignores it).
    su postgres -c "psql -q -c \"alter user $PG_USER password '$PG_PASSWORD'\"" >&2
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  local i
  for ((i = 0; i < 50; i++)); do
    psql "$PG_ADMIN_URL" -qtAc 'select 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  if [ "$(psql "$PG_ADMIN_URL" -qtAc "select 1 from pg_database where datname = '$PG_DATABASE'")" != 1 ]; then
    log "creating database $PG_DATABASE"
    psql "$PG_ADMIN_URL" -qc "create database $PG_DATABASE" >&2
  fi
}

ensure_redis() {
  if port_open "$REDIS_HOST" "$REDIS_PORT"; then
    log "Redis answers on $REDIS_HOST:$REDIS_PORT"
    return
  fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis on $REDIS_HOST:$REDIS_PORT"
  start_bg redis redis-server --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$STATE_DIR"
  wait_port "$REDIS_HOST" "$REDIS_PORT" 20 || die "Redis did not come up; see $STATE_DIR/redis.log"
}

ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then
    return
  fi
  command -v cargo >/dev/null || die "cargo is needed to build the broker"
  command -v cc >/dev/null || apt_install build-essential
  log "building the Tansu broker $TANSU_VERSION once into $CACHE_DIR (takes 15-25 minutes)"
  mkdir -p "$CACHE_DIR"
  cargo install tansu --version "$TANSU_VERSION" --locked --features "$TANSU_FEATURES" \
    --root "$CACHE_DIR/tansu-$TANSU_VERSION" --target-dir "$CACHE_DIR/tansu-build" >&2 \
    || die "building Tansu failed"
  rm -rf "$CACHE_DIR/tansu-build"
}

# start_broker NAME PORT STORAGE-URL WORKDIR
start_broker() {
  local name=$1 port=$2 storage=$3 workdir=$4
  if running "$name" && port_open "$KAFKA_HOST" "$port"; then
    log "broker $name answers on $KAFKA_HOST:$port"
    return
  fi
  port_open "$KAFKA_HOST" "$port" && die "port $port is taken by a process these scripts did not start"
  mkdir -p "$workdir"
  log "starting broker $name on $KAFKA_HOST:$port ($storage)"
  # Tansu resolves a sqlite:// path against its working directory.
  (cd "$workdir" && start_bg "$name" "$TANSU_BIN" broker \
    --listener-url "tcp://$KAFKA_HOST:$port" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$port" \
    --storage-engine "$storage")
  wait_port "$KAFKA_HOST" "$port" 30 || die "broker $name did not come up; see $STATE_DIR/$name.log"
  index_headers "$workdir/tansu.db"
}

# Tansu 0.6.0's SQLite schema has no index on the record headers, so each
# fetched record scans every header row: reading a topic gets quadratically
# slower (a 20,000-record partition took minutes). Every event carries 13
# CloudEvents headers. An index on the lookup columns makes fetches linear.
index_headers() {
  local db=$1 i
  command -v sqlite3 >/dev/null || apt_install sqlite3
  for ((i = 0; i < 50; i++)); do
    sqlite3 "$db" "create index if not exists header_by_record on header (topition, offset_id)" 2>/dev/null && return 0
    sleep 0.1
  done
  die "cannot index the broker's headers in $db"
}

ensure_topic() {
  local port=$1 topic=$2 partitions=$3
  if "$TANSU_BIN" topic list --broker "tcp://$KAFKA_HOST:$port" 2>/dev/null | grep -q "\"name\":\"$topic\""; then
    return
  fi
  log "creating topic $topic with $partitions partitions, keeping its records for good"
  # Only retention is set, never cleanup.policy: Tansu 0.6.0 deletes from a
  # topic only when cleanup.policy names delete, and then treats -1 as 0.
  "$TANSU_BIN" topic create --broker "tcp://$KAFKA_HOST:$port" --partitions "$partitions" \
    --config retention.ms=-1 --config retention.bytes=-1 "$topic" >&2
}

up() {
  mkdir -p "$STATE_DIR"
  ensure_postgres
  ensure_redis
  ensure_tansu
  start_broker tansu "$KAFKA_PORT" "sqlite://tansu.db" "$STATE_DIR/tansu"
  ensure_topic "$KAFKA_PORT" "$EVENTS_TOPIC" "$EVENTS_PARTITIONS"
}

# promtool (checks of deploy/prometheus) and prometheus (the scrape test) come
# with Debian's prometheus package; its service is not started.
ensure_prometheus() {
  command -v promtool >/dev/null && command -v prometheus >/dev/null && return
  apt_install prometheus
}

# A Python with the test tools from PyPI, kept in $CACHE_DIR/python:
# confluent-kafka for the test of the analysts' example
# (docs/examples/read_events.py), schemathesis for the API contract test
# (pinned: a new release brings new checks, to be adopted on purpose).
SCHEMATHESIS_VERSION="4.32.5"
ensure_python_client() {
  local venv="$CACHE_DIR/python"
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import confluent_kafka' 2>/dev/null \
    && [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" = "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
    return
  fi
  command -v python3 >/dev/null || apt_install python3 python3-venv
  if ! python3 -m venv "$venv" >&2 2>/dev/null; then
    apt_install python3-venv
    python3 -m venv "$venv" >&2
  fi
  log "installing confluent-kafka and schemathesis $SCHEMATHESIS_VERSION into $venv"
  "$venv/bin/python" -m pip install -q confluent-kafka "schemathesis==$SCHEMATHESIS_VERSION" >&2 \
    || die "installing the Python test tools failed"
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
  local what
  for what in "PostgreSQL $PG_HOST $PG_PORT" "Redis $REDIS_HOST $REDIS_PORT" \
    "broker $KAFKA_HOST $KAFKA_PORT" "test-broker $KAFKA_HOST $KAFKA_TEST_PORT"; do
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
