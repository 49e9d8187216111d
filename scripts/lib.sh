# Shared settings of the project's scripts. Sourced, not run.
# Every value can be overridden from the environment.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Pid files, logs and the broker's data of this checkout.
STATE_DIR="${ERP_STATE_DIR:-$REPO_ROOT/.run}"
# Built tools kept across checkouts (the broker takes about 20 minutes to build on two cores).
CACHE_DIR="${ERP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/erp-stock}"

TANSU_VERSION="0.6.0"
TANSU_FEATURES="postgres,libsql,dynostore"
TANSU_BIN="$CACHE_DIR/tansu-$TANSU_VERSION/bin/tansu"

PG_HOST="${ERP_PG_HOST:-127.0.0.1}"
PG_PORT="${ERP_PG_PORT:-5432}"
PG_USER="${ERP_PG_USER:-postgres}"
PG_PASSWORD="${ERP_PG_PASSWORD:-postgres}"
PG_DATABASE="${ERP_PG_DATABASE:-erp_stock}"
PG_ADMIN_URL="postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/postgres"
PG_URL="postgres://$PG_USER:$PG_PASSWORD@$PG_HOST:$PG_PORT/$PG_DATABASE"

REDIS_HOST="${ERP_REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${ERP_REDIS_PORT:-6379}"

# The broker of the running system (durable SQLite storage) ...
KAFKA_HOST="127.0.0.1"
KAFKA_PORT="${ERP_KAFKA_PORT:-9092}"
# ... and the one for tests (a fresh SQLite file per run; this port, or the
# next free one, written to $STATE_DIR/tansu-test.port).
KAFKA_TEST_PORT="${ERP_KAFKA_TEST_PORT:-19092}"
EVENTS_TOPIC="${ERP_EVENTS_TOPIC:-stock-events}"
EVENTS_PARTITIONS="${ERP_EVENTS_PARTITIONS:-4}"

# Exports where the test servers are, for the tests (testkit reads them):
# the PostgreSQL and Redis these scripts use, and the test broker that
# `scripts/infra.sh up-test` started.
export_test_env() {
  export ERP_TEST_PG_ADMIN_URL="$PG_ADMIN_URL"
  export ERP_TEST_REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT/0"
  export ERP_TEST_KAFKA_BROKERS="$KAFKA_HOST:$(cat "$STATE_DIR/tansu-test.port")"
  export ERP_PYTHON="$CACHE_DIR/python/bin/python"
}

log() { printf '\033[1m[erp]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[erp] error:\033[0m %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# Waits up to $3 seconds for host:port to accept connections.
wait_port() {
  local host=$1 port=$2 timeout=${3:-30} i
  for ((i = 0; i < timeout * 10; i++)); do
    port_open "$host" "$port" && return 0
    sleep 0.1
  done
  return 1
}

APT_UPDATED=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
  if [ -z "$APT_UPDATED" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || die "installing $* failed"
}

# Start time of process $1 in clock ticks since boot (field 22 of /proc/PID/stat).
proc_start() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

# Starts a background process whose pid (and start time) go to
# $STATE_DIR/$name.pid and whose output goes to $STATE_DIR/$name.log. Only
# processes recorded this way are ever stopped by these scripts.
start_bg() {
  local name=$1; shift
  mkdir -p "$STATE_DIR"
  nohup "$@" >"$STATE_DIR/$name.log" 2>&1 &
  echo "$! $(proc_start $!)" >"$STATE_DIR/$name.pid"
}

# True when the process recorded in $STATE_DIR/$name.pid is alive and is the
# same process (same start time), not a recycled pid.
running() {
  local pidfile="$STATE_DIR/$1.pid" pid started
  [ -f "$pidfile" ] || return 1
  read -r pid started <"$pidfile"
  kill -0 "$pid" 2>/dev/null && [ "$(proc_start "$pid")" = "$started" ]
}

# Stops the process recorded in $STATE_DIR/$name.pid (TERM, then KILL after 10 s).
stop_bg() {
  local name=$1 pidfile="$STATE_DIR/$1.pid" pid i
  [ -f "$pidfile" ] || return 0
  read -r pid _ <"$pidfile"
  if running "$name"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}
