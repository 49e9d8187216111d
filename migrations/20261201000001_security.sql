-- authentication and the audit trail.

-- api keys of machine clients (scanners, erp integrations). the secret is
-- shown once at creation and kept only as its sha-256: a key is 256 random
-- bits, so a fast hash is as good as a slow one and costs nothing per
-- request. `id` is the visible part of the key (`erp_<id>_<secret>`), to
-- recognise it in lists and logs; `name` is the principal's id in the audit
-- trail (`api_key:<name>`), unique for ever so that it names one client.
create table api_keys (
    id           text        primary key,
    name         text        not null unique,
    secret_hash  bytea       not null unique,
    roles        text[]      not null,
    -- null: every warehouse.
    warehouses   text[],
    created_at   timestamptz not null default now(),
    expires_at   timestamptz,
    revoked_at   timestamptz
);

-- the event store is append-only for everyone who connects, the services'
-- own role included: a correction is a new event, never an edit. (a
-- migration that must rewrite events disables this trigger explicitly.)
create function refuse_event_change() returns trigger language plpgsql as $$
begin
    raise exception 'the event store is append-only: % on events refused', tg_op
        using errcode = 'insufficient_privilege';
end
$$;
create trigger events_append_only before update or delete or truncate on events
    for each statement execute function refuse_event_change();

-- the audit query's indexes: by actor and time, by correlation id, and by
-- time alone (brin: recorded_at grows with the table, so a block range
-- summary serves a time range for almost no upkeep per insert). by article
-- it is the primary key (stream_id, sequence).
create index events_by_actor on events (actor, recorded_at);
create index events_by_correlation on events (correlation_id);
create index events_by_recorded_at on events using brin (recorded_at);
