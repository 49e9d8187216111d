-- the read models move into generations. a generation is a schema of its own
-- (rm_1, rm_2, ...) holding every read-model table together with the kafka
-- offsets and stream positions they were built to, made by
-- create_read_model(). read_model_pointer names the generation that serves.
-- a rebuild fills a new generation from offset 0 while the active one keeps
-- serving, then moves the pointer in one transaction (blue/green, see
-- docs/projections.md). a later change of the read models redefines
-- create_read_model() in a new migration and is rolled out by a rebuild.
--
-- the tables below replace the first read side's public tables; everything in
-- them is derived from the events topic and is rebuilt from it.

drop table projection_offsets, projection_streams, stock_levels, read_documents;

-- every generation ever built, for the rebuild command and operators.
create table read_model_generations (
    generation    bigint      primary key,
    schema_name   text        not null unique,
    status        text        not null check (status in ('building', 'active', 'retired', 'dropped')),
    created_at    timestamptz not null default now(),
    activated_at  timestamptz,
    retired_at    timestamptz
);

-- the one row naming the serving generation. every projector batch reads it
-- `for share` in its transaction and a swap updates it, so a swap waits for
-- the batches in flight and every later batch sees the new generation.
create table read_model_pointer (
    id          boolean primary key default true check (id),
    generation  bigint  not null references read_model_generations
);

create function create_read_model(p_schema text) returns void
language plpgsql as $$
declare
    saved text := current_setting('search_path');
begin
    execute format('create schema %I', p_schema);
    perform set_config('search_path', quote_ident(p_schema), true);

    -- the next kafka offset to consume per partition, written in the same
    -- transaction as the read models (exactly-once effect). last_timestamp is
    -- the kafka time of the last applied record, for the lag in seconds.
    create table offsets (
        topic           text        not null,
        partition       integer     not null,
        next_offset     bigint      not null,
        last_timestamp  timestamptz,
        updated_at      timestamptz not null default now(),
        primary key (topic, partition)
    );

    -- per article stream: the last applied sequence (redelivered events at or
    -- below it are skipped; read-your-writes waits on it), whether it waits
    -- behind a parked event, and the latest posting time (for backdating). the
    -- stream's folded state is rebuilt from this row, its article, charges and
    -- reservations. rewritten by every batch: narrow, and with room for
    -- updates in place (fillfactor).
    create table streams (
        stream_id       text        primary key,
        sequence        bigint      not null,
        halted          boolean     not null default false,
        latest_posting  timestamptz
    ) with (fillfactor = 70);
    -- serves the count of halted streams (a metric) and re-driving them all.
    create index streams_halted on streams (stream_id) where halted;

    -- the article catalogue: written when an article's name, category, unit,
    -- reorder point or status change (not by stock movements). name_fold is
    -- the lower-cased name in byte order, for case-insensitive prefix search.
    create table articles (
        article_id     text    primary key,
        name           text    not null,
        name_fold      text    collate "C" not null,
        category       text    collate "C" not null,
        unit_code      text    not null,
        unit_decimals  smallint not null,
        reorder_point  bigint,
        discontinued   boolean not null
    );
    -- serves the catalogue filtered by category (and name prefix), in name order, keyset-paginated.
    create index articles_by_category_name on articles (category, name_fold, article_id);
    -- serves the catalogue filtered by name prefix alone.
    create index articles_by_name on articles (name_fold, article_id);

    -- the low-stock list: exactly the articles (not discontinued) whose
    -- available stock is below their reorder point, with their figures. a row
    -- comes and goes as an article crosses its reorder point. the primary key
    -- serves the list by article id, keyset-paginated.
    create table low_stock (
        article_id     text   primary key,
        name           text   not null,
        category       text   not null,
        reorder_point  bigint not null,
        on_hand        bigint not null,
        reserved       bigint not null
    ) with (fillfactor = 70);

    -- one row per charge (lot) with its stock in total and per warehouse
    -- ({"WH-1": {"on_hand": 5, "reserved": 2}}, every warehouse it was ever in).
    create table charges (
        article_id       text    not null,
        charge           text    not null,
        category         text    collate "C" not null,
        production_date  date    not null,
        expiry_date      date,
        quality_status   text    not null,
        blocked_reason   text,
        on_hand          bigint  not null,
        reserved         bigint  not null,
        warehouses       jsonb   not null,
        primary key (article_id, charge)
    ) with (fillfactor = 70);
    -- serves the charges of a category, newest production date first, keyset-paginated.
    create index charges_by_category on charges (category, production_date desc, article_id desc, charge desc);
    -- serves the charges of an article by production date, keyset-paginated.
    create index charges_by_article on charges (article_id, production_date desc, charge desc);

    -- charges per category: the summary document's figures. version counts
    -- the events that changed them, so it is the same however events were batched.
    create table categories (
        category          text   collate "C" primary key,
        charges           bigint not null,
        charges_in_stock  bigint not null,
        on_hand           bigint not null,
        blocked           bigint not null,
        version           bigint not null
    ) with (fillfactor = 70);

    -- open reservations; a reservation's row goes when it is used up or released.
    create table reservations (
        article_id      text        not null,
        reservation_id  text        not null,
        charge          text        not null,
        warehouse       text        not null,
        reference       text        not null,
        remaining       bigint      not null,
        reserved_at     timestamptz not null,
        primary key (article_id, reservation_id)
    );
    -- serves the open reservations of a charge (charge detail).
    create index reservations_by_charge on reservations (article_id, charge);

    -- every stock movement, a transfer as two legs, with the balance of the
    -- charge in the warehouse right after it in posting-time order (kept
    -- right when a backdated movement is inserted before it). the one table
    -- that grows by a row per event, so it has one index: the primary key, in
    -- bucket and posting-time order. it serves the movement history of a
    -- charge (per warehouse, merged across warehouses), keyset-paginated; the
    -- balance of a charge in a warehouse as of a time (the last movement at
    -- or before it); and the shift of later balances by a backdated movement.
    create table movements (
        article_id      text        not null,
        charge          text        not null,
        warehouse       text        not null,
        posted_at       timestamptz not null,
        sequence        bigint      not null,
        leg             smallint    not null,
        kind            text        not null,
        delta           bigint      not null,
        balance         bigint      not null,
        recorded_at     timestamptz not null,
        event_id        uuid        not null,
        reservation_id  text,
        primary key (article_id, charge, warehouse, posted_at, sequence, leg)
    );

    -- documents as the exact bytes the query-service returns, with the version
    -- that becomes their etag. serves every read of a document by key.
    create table documents (
        key      text   primary key,
        version  bigint not null,
        body     bytea  not null
    ) with (fillfactor = 70);

    -- documents committed here but not yet confirmed in redis: a row per
    -- batch, deleted once redis has them, replayed after a crash or outage.
    create table redis_outbox (
        id          bigint generated always as identity primary key,
        keys        text[]      not null,
        created_at  timestamptz not null default now()
    );

    -- records the projector could not apply (poison) and the later records
    -- of their streams that wait behind them (reason 'halted').
    create table dead_letters (
        id           bigint generated always as identity primary key,
        topic        text        not null,
        partition    integer     not null,
        "offset"     bigint      not null,
        stream_id    text,
        sequence     bigint,
        event_type   text,
        key          text,
        headers      jsonb       not null,
        payload      bytea       not null,
        reason       text        not null check (reason in ('undecodable', 'unfoldable', 'gap', 'halted')),
        error        text        not null,
        status       text        not null default 'parked' check (status in ('parked', 'redriven', 'skipped')),
        parked_at    timestamptz not null default now(),
        resolved_at  timestamptz,
        unique (topic, partition, "offset")
    );
    -- serves the parked records of a stream, in offset order (re-drive).
    create index dead_letters_parked on dead_letters (stream_id, "offset") where status = 'parked';

    perform set_config('search_path', saved, true);
end
$$;

-- generation 1, empty: the projector fills it from offset 0.
select create_read_model('rm_1');
insert into read_model_generations (generation, schema_name, status, activated_at) values (1, 'rm_1', 'active', now());
insert into read_model_pointer (generation) values (1);
