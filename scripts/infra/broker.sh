# The Kafka-protocol broker (Tansu): built once with cargo into $CACHE_DIR,
# started with SQLite storage, its schema patched with a header index, and
# its topics created to keep their records for good. Sourced by
# scripts/infra.sh.

ensure_tansu() {
  if [ -x "$TANSU_BIN" ]; then
    return
  fi
  command -v cargo >/dev/null || die "cargo is needed to build the broker"
  command -v cc >/dev/null || apt_install build-essential
  log "building the Tansu broker $TANSU_VERSION once into $CACHE_DIR (11 to 20 minutes on two cores)"
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
