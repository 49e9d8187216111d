-- how far `command-service republish` got in copying the event store to a
-- topic, per target topic: the last event the broker confirmed, by its
-- primary key (events are republished in (stream_id, sequence) order). a
-- run resumes after it; one row per topic is the whole of its state.
create table republish_progress (
    topic       text        primary key,
    stream_id   text        not null,
    sequence    bigint      not null,
    published   bigint      not null,
    started_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);
