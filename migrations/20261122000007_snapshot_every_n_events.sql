-- the write path stops rewriting a stream's whole folded state on every
-- command (measured with scripts/bench.sh commands: the state holds a month
-- of postings per bucket, so every command wrote kilobytes). a narrow row per
-- stream now carries the version that writers lock and check; the folded
-- state is snapshotted every so many events, and a stream is loaded as its
-- latest snapshot plus the events after it.

-- one row per stream: its current version. writers of a stream lock it (for
-- update, in stream order) and append only if it is still at the version they
-- decided on. rewritten by every command: narrow, with room for updates in
-- place.
create table event_streams (
    stream_id  text   primary key,
    version    bigint not null
) with (fillfactor = 70);

insert into event_streams (stream_id, version) select stream_id, version from stream_snapshots;

-- stream_snapshots keeps the folded state at some version (not necessarily
-- the current one); a loader folds the events after it (served by the
-- events primary key).

drop function append_batch(text[], bigint[], bigint[], jsonb[], text[], bigint[], uuid[], text[], int[],
                           timestamptz[], timestamptz[], text[], uuid[], text[], jsonb[]);

-- appends a decided batch in one round trip and in a fixed order: lock the
-- streams' version rows (in stream order), check that each stream is still
-- at the version the batch was decided on, then write events, outbox rows,
-- versions and the snapshots that are due (a null state: none due), and
-- notify the relay. a stream that moved on raises serialization_failure
-- (40001); two first events of a new stream collide on the events primary
-- key (23505).
create function append_batch(
    p_streams        text[],
    p_expected       bigint[],
    p_versions       bigint[],
    p_states         jsonb[],
    e_stream         text[],
    e_sequence       bigint[],
    e_id             uuid[],
    e_type           text[],
    e_schema_version int[],
    e_posted_at      timestamptz[],
    e_recorded_at    timestamptz[],
    e_correlation    text[],
    e_causation      uuid[],
    e_actor          text[],
    e_data           jsonb[]
) returns void
language plpgsql as $$
begin
    perform 1 from event_streams where stream_id = any(p_streams) order by stream_id for update;
    if exists (
        select 1
        from unnest(p_streams, p_expected) as x(stream_id, expected)
        left join event_streams s on s.stream_id = x.stream_id
        where coalesce(s.version, 0) <> x.expected
    ) then
        raise exception 'a stream changed concurrently' using errcode = '40001';
    end if;
    insert into events (stream_id, sequence, event_id, event_type, schema_version, posted_at,
                        recorded_at, correlation_id, causation_id, actor, data)
    select * from unnest(e_stream, e_sequence, e_id, e_type, e_schema_version, e_posted_at,
                         e_recorded_at, e_correlation, e_causation, e_actor, e_data);
    insert into outbox (stream_id, sequence) select * from unnest(e_stream, e_sequence);
    insert into event_streams (stream_id, version)
    select * from unnest(p_streams, p_versions)
    on conflict (stream_id) do update set version = excluded.version;
    insert into stream_snapshots (stream_id, version, state)
    select * from unnest(p_streams, p_versions, p_states) as s(stream_id, version, state) where state is not null
    on conflict (stream_id) do update set version = excluded.version, state = excluded.state;
    perform pg_notify('erp_outbox', '');
end
$$;
