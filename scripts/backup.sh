#!/usr/bin/env bash
# Backup and restore of the stock back end (docs/operations.md, "Backup and restore").
#
#   scripts/backup.sh dump FILE           dumps the database (pg_dump, custom format) into FILE
#   scripts/backup.sh restore FILE TOPIC  restores FILE into an empty database, republishes its
#                                         events into the new topic TOPIC and rebuilds the read
#                                         models from that topic; then start the services with
#                                         APP_KAFKA__EVENTS_TOPIC=TOPIC
#
# The database is ERP_PG_DATABASE (default erp_stock) on ERP_PG_HOST:ERP_PG_PORT, the broker
# ERP_KAFKA_BROKERS (default the one scripts/infra.sh starts), Redis ERP_REDIS_URL. A restore
# refuses a database that already holds events. Stop the services before a restore.
#
# Why a new topic: the database is the source of truth, but a dump is older than the topic.
# Events accepted after the dump are on the old topic and not in the restored event store;
# the command-service would give the next commands the same sequence numbers, and readers of
# the old topic would take them for repeats. The new topic holds exactly the restored events;
# the old one stays for inspection (`erp-replay export` shows what came after the dump).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

BIN_DIR="${ERP_BIN_DIR:-$REPO_ROOT/target/debug}"
BROKERS="${ERP_KAFKA_BROKERS:-$KAFKA_HOST:$KAFKA_PORT}"
REDIS_URL="${ERP_REDIS_URL:-redis://$REDIS_HOST:$REDIS_PORT/0}"

usage() { sed -n '2,8p' "$0" >&2; exit 2; }

need_binaries() {
  if [ ! -x "$BIN_DIR/command-service" ] || [ ! -x "$BIN_DIR/projector" ]; then
    log "building the services"
    cargo build --bins --locked -p command-service -p projector >&2
  fi
}

dump() {
  local file=$1
  command -v pg_dump >/dev/null || apt_install postgresql-client
  log "dumping $PG_DATABASE into $file"
  pg_dump --format=custom --no-owner --file="$file" "$PG_URL"
  log "done: $(du -h "$file" | cut -f1)"
}

restore() {
  local file=$1 topic=$2
  [ -r "$file" ] || die "cannot read $file"
  command -v pg_restore >/dev/null || apt_install postgresql-client
  need_binaries
  if [ "$(psql "$PG_ADMIN_URL" -qtAc "select 1 from pg_database where datname = '$PG_DATABASE'")" = 1 ]; then
    if [ "$(psql "$PG_URL" -qtAc "select to_regclass('public.events') is not null")" = t ]; then
      die "database $PG_DATABASE already holds an event store; restore into an empty or new one (ERP_PG_DATABASE)"
    fi
  else
    log "creating database $PG_DATABASE"
    psql "$PG_ADMIN_URL" -qc "create database $PG_DATABASE" >&2
  fi
  log "restoring $file into $PG_DATABASE"
  pg_restore --no-owner --exit-on-error --dbname="$PG_URL" "$file"
  local events
  events=$(psql "$PG_URL" -qtAc "select count(*) from events")
  log "restored $events events"

  export APP_DATABASE__URL="$PG_URL" APP_KAFKA__BROKERS="$BROKERS" APP_KAFKA__EVENTS_TOPIC="$topic"
  export APP_REDIS__URL="$REDIS_URL"
  log "republishing the events into topic $topic"
  "$BIN_DIR/command-service" republish --topic "$topic"
  log "rebuilding the read models from topic $topic"
  "$BIN_DIR/projector" rebuild --keep-old-secs 0
  cat >&2 <<TXT

Restored. Start the services with
  APP_DATABASE__URL=$PG_URL
  APP_KAFKA__EVENTS_TOPIC=$topic
The projector refills Redis by itself; query-services follow the rebuilt read models.
TXT
}

case "${1:-}" in
  dump) [ $# -eq 2 ] || usage; dump "$2" ;;
  restore) [ $# -eq 3 ] || usage; restore "$2" "$3" ;;
  *) usage ;;
esac
