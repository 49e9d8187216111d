# PostgreSQL and Redis: used as they are when they answer on their ports,
# installed with apt-get and started otherwise. Sourced by scripts/infra.sh.

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
