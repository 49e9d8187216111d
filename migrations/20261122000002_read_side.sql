-- the read side, written by the projector and read by the query-service.

-- the kafka position each projection has applied, per partition, written in the
-- same transaction as the read models it produced (exactly-once effect).
create table projection_offsets (
    projection   text    not null,
    topic        text    not null,
    partition    integer not null,
    next_offset  bigint  not null,
    updated_at   timestamptz not null default now(),
    primary key (projection, topic, partition)
);

-- the last sequence applied per stream: redelivered events at or below it are
-- skipped, and the query-service waits on it for read-your-writes.
create table projection_streams (
    projection  text    not null,
    stream_id   text    not null,
    sequence    bigint  not null,
    primary key (projection, stream_id)
);

-- stock of one charge in one warehouse. serves the stock-per-article document
-- (lookup by article_id through the primary key's prefix).
create table stock_levels (
    article_id   text        not null,
    charge       text        not null,
    warehouse    text        not null,
    on_hand      bigint      not null,
    reserved     bigint      not null default 0,
    updated_at   timestamptz not null,
    primary key (article_id, charge, warehouse)
);

-- read-model documents as the exact bytes the query-service returns, with the
-- version that becomes their etag. serves every single-document read by key.
create table read_documents (
    key         text        primary key,
    version     bigint      not null,
    body        bytea       not null,
    updated_at  timestamptz not null default now()
);
