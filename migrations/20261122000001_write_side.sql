-- the write side of the command-service: the event store, stream snapshots and
-- the transactional outbox.

-- every accepted event, kept for good. the primary key (stream_id, sequence) is
-- the optimistic-concurrency check: of two commands that decided on the same
-- stream version, only the first to commit can insert its sequence.
create table events (
    stream_id       text        not null,
    sequence        bigint      not null check (sequence > 0),
    event_id        uuid        not null unique,
    event_type      text        not null,
    schema_version  integer     not null,
    posted_at       timestamptz not null,
    recorded_at     timestamptz not null,
    correlation_id  text        not null,
    causation_id    uuid        not null,
    actor           text        not null,
    data            jsonb       not null,
    primary key (stream_id, sequence)
);

-- the folded state of each stream at its last event, written in the same
-- transaction as the events, so a command loads one row instead of replaying.
create table stream_snapshots (
    stream_id  text    primary key,
    version    bigint  not null,
    state      jsonb   not null
);

-- events waiting to be relayed to kafka. txid is the writing transaction's id:
-- the relay only reads rows whose transaction is older than every transaction
-- still running, so a transaction that commits late is never skipped.
create table outbox (
    position    bigint generated always as identity primary key,
    txid        xid8        not null default pg_current_xact_id(),
    stream_id   text        not null,
    sequence    bigint      not null,
    relayed_at  timestamptz,
    foreign key (stream_id, sequence) references events (stream_id, sequence)
);

-- serves the relay's scan: pending rows in transaction order.
create index outbox_pending on outbox (txid, position) where relayed_at is null;
-- serves pruning of relayed rows past their retention.
create index outbox_relayed on outbox (relayed_at) where relayed_at is not null;
