#!/usr/bin/env bash
# Sets up everything and runs the whole system with demo data.
#
# Starts PostgreSQL, Redis and the broker (installing what is missing), builds
# the services, starts them in the background, posts a small demo data
# set and prints where everything is. `scripts/stop.sh` stops it all again.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

"$REPO_ROOT/scripts/infra.sh" up
command -v curl >/dev/null || apt_install curl ca-certificates

log "building the services"
cargo build --workspace --bins --locked

export APP_DATABASE__URL="$PG_URL"
export APP_KAFKA__BROKERS="$KAFKA_HOST:$KAFKA_PORT"
export APP_KAFKA__EVENTS_TOPIC="$EVENTS_TOPIC"
export APP_KAFKA__PARTITIONS="$EVENTS_PARTITIONS"
export APP_REDIS__URL="redis://$REDIS_HOST:$REDIS_PORT/0"

COMMAND_URL="http://127.0.0.1:${APP_COMMAND_PORT:-8081}"
QUERY_URL="http://127.0.0.1:${APP_QUERY_PORT:-8082}"
PROJECTOR_URL="http://127.0.0.1:${APP_PROJECTOR_PORT:-8083}"
WORKER_URL="http://127.0.0.1:${APP_WORKER_PORT:-8084}"
NOTIFIER_URL="http://127.0.0.1:${APP_NOTIFIER_PORT:-8085}"

start_service() {
  local name=$1 port=$2
  stop_bg "$name"
  log "starting $name on port $port (log: $STATE_DIR/$name.log)"
  APP_HTTP__PORT=$port start_bg "$name" "$REPO_ROOT/target/debug/$name"
}

wait_ready() {
  local name=$1 url=$2 i
  for ((i = 0; i < 300; i++)); do
    curl -fsS "$url/health/ready" >/dev/null 2>&1 && return 0
    running "$name" || die "$name exited; see $STATE_DIR/$name.log"
    sleep 0.1
  done
  die "$name is not ready after 30 s; see $STATE_DIR/$name.log"
}

start_service command-service "${COMMAND_URL##*:}"
start_service projector "${PROJECTOR_URL##*:}"
start_service query-service "${QUERY_URL##*:}"
start_service worker "${WORKER_URL##*:}"
start_service notifier "${NOTIFIER_URL##*:}"
wait_ready command-service "$COMMAND_URL"
wait_ready projector "$PROJECTOR_URL"
wait_ready query-service "$QUERY_URL"
wait_ready worker "$WORKER_URL"
wait_ready notifier "$NOTIFIER_URL"

# API keys (docs/security.md): kept in the state directory and reused while
# they are valid; a key's name stays taken, so each new one gets a fresh name.
demo_key() {
  local file=$STATE_DIR/$1.key; shift
  umask 077
  if [[ -s $file ]] && curl -sS -H "authorization: Bearer $(cat "$file")" "$QUERY_URL/projection/status" -o /dev/null -w '%{http_code}' 2>/dev/null | grep -qE '200|403'; then
    cat "$file"
    return
  fi
  "$REPO_ROOT/target/debug/command-service" keys create --name "$(basename "$file" .key)-$(date +%Y%m%d%H%M%S)-$RANDOM" "$@" \
    | sed -E 's/.*"key":"([^"]+)".*/\1/' >"$file"
  cat "$file"
}
log "creating API keys"
DEMO_KEY=$(demo_key demo-admin --role reader --role writer --role master-data --role analyst --role admin)
SCANNER_KEY=$(demo_key demo-scanner --role writer --role reader --warehouse WH-NORTH)

log "posting demo data"
DEMO_KEY="$DEMO_KEY" DEMO_QUERY_URL="$QUERY_URL" "$REPO_ROOT/scripts/demo-data.sh" "$COMMAND_URL"

cat <<TXT

The stock back end is running.

  command-service  $COMMAND_URL   (write API)
  query-service    $QUERY_URL   (read API)
  projector        $PROJECTOR_URL   (health)
  worker           $WORKER_URL   (background jobs; health)
  notifier         $NOTIFIER_URL   (webhooks; health)
  logs             $STATE_DIR/*.log

Every API call needs an API key (docs/security.md). Two were made for the
demo (kept in $STATE_DIR/*.key):

  KEY=$DEMO_KEY          # every role
  SCANNER=$SCANNER_KEY   # writer and reader, WH-NORTH only

Try:

  curl -s $QUERY_URL/articles/ART-1000/stock -H "Authorization: Bearer \$KEY"

  curl -s -X POST $COMMAND_URL/stock/receipts -H "Authorization: Bearer \$SCANNER" -H 'content-type: application/json' \\
       -d '{"article":"ART-1000","charge":"L-2026-11-A","warehouse":"WH-NORTH","quantity":25}'
  # the scanner may not post in WH-SOUTH: 403, rule warehouse-not-permitted
  curl -s -X POST $COMMAND_URL/stock/receipts -H "Authorization: Bearer \$SCANNER" -H 'content-type: application/json' \\
       -d '{"article":"ART-1000","charge":"L-2026-11-A","warehouse":"WH-SOUTH","quantity":25}'

  # read your own write: pass the consistency_token the command answered with
  curl -s $QUERY_URL/articles/ART-1000/stock -H "Authorization: Bearer \$KEY" -H 'X-Consistency-Token: article:ART-1000@10'

  # the read models (docs/queries.md)
  curl -s $QUERY_URL/categories/fasteners -H "Authorization: Bearer \$KEY"
  curl -s '$QUERY_URL/categories/fasteners/charges?limit=2' -H "Authorization: Bearer \$KEY"
  curl -s $QUERY_URL/articles/ART-1000/charges/L-2026-11-A -H "Authorization: Bearer \$KEY"
  curl -s $QUERY_URL/articles/ART-1000/charges/L-2026-11-A/movements -H "Authorization: Bearer \$KEY"
  curl -s '$QUERY_URL/articles?name_prefix=hex' -H "Authorization: Bearer \$KEY"
  curl -s $QUERY_URL/low-stock -H "Authorization: Bearer \$KEY"
  curl -s "$QUERY_URL/articles/ART-1000/stock/as-of?at=\$(date -u +%Y-%m-%dT%H:%M:%SZ)" -H "Authorization: Bearer \$KEY"
  curl -s $QUERY_URL/projection/status -H "Authorization: Bearer \$KEY"

  # background jobs (docs/jobs.md): a bulk import, a report as a spreadsheet
  printf '%s\n' 'type,article,charge,warehouse,quantity' 'receipt,ART-1000,L-2026-11-A,WH-NORTH,5' > /tmp/receipts.csv
  curl -s -X POST '$COMMAND_URL/jobs/imports?format=csv' -H "Authorization: Bearer \$KEY" --data-binary @/tmp/receipts.csv
  curl -s -X POST $COMMAND_URL/jobs/reports -H "Authorization: Bearer \$KEY" -H 'content-type: application/json' \\
       -d '{"report":"stock","format":"xlsx"}'
  curl -s '$COMMAND_URL/jobs?limit=5' -H "Authorization: Bearer \$KEY"     # then GET /jobs/{id}, /jobs/{id}/result

  # webhooks (docs/webhooks.md): the subscriptions; POST /webhooks subscribes a public https endpoint
  curl -s $COMMAND_URL/webhooks -H "Authorization: Bearer \$KEY"

  # who did what (docs/security.md)
  curl -s '$QUERY_URL/audit?limit=5' -H "Authorization: Bearer \$KEY"

  # API keys
  APP_DATABASE__URL=$APP_DATABASE__URL target/debug/command-service keys list

  # the event stream (docs/analysts.md)
  APP_KAFKA__BROKERS=$APP_KAFKA__BROKERS target/debug/erp-replay export --format csv
  APP_KAFKA__BROKERS=$APP_KAFKA__BROKERS target/debug/erp-replay stock-as-of --at \$(date -u +%Y-%m-%d)

  curl -s $COMMAND_URL/openapi.json      # the write API (docs/commands.md)
  curl -s $QUERY_URL/openapi.json        # the read API
  curl -s $QUERY_URL/cache/stats -H "Authorization: Bearer \$KEY"   # the read side's cache tiers (admin)
  curl -s $COMMAND_URL/metrics            # Prometheus metrics (every service)
  APP_DATABASE__URL=$APP_DATABASE__URL target/debug/projector dead-letters list   # docs/projections.md

Stop everything with: scripts/stop.sh
TXT
