-- appends a decided batch in one round trip and in a fixed order: lock the
-- streams' snapshot rows (in stream order), check that each stream is still
-- at the version the batch was decided on, then write events, outbox rows and
-- snapshots and notify the relay. used by both of the command-service's paths
-- (decided from its cache, or under locks it took itself), so they always
-- lock in the same order and cannot deadlock each other.
-- a stream that moved on raises serialization_failure (40001); two first
-- events of a new stream collide on the events primary key (23505).
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
    perform 1 from stream_snapshots where stream_id = any(p_streams) order by stream_id for update;
    if exists (
        select 1
        from unnest(p_streams, p_expected) as x(stream_id, expected)
        left join stream_snapshots s on s.stream_id = x.stream_id
        where coalesce(s.version, 0) <> x.expected
    ) then
        raise exception 'a stream changed concurrently' using errcode = '40001';
    end if;
    insert into events (stream_id, sequence, event_id, event_type, schema_version, posted_at,
                        recorded_at, correlation_id, causation_id, actor, data)
    select * from unnest(e_stream, e_sequence, e_id, e_type, e_schema_version, e_posted_at,
                         e_recorded_at, e_correlation, e_causation, e_actor, e_data);
    insert into outbox (stream_id, sequence) select * from unnest(e_stream, e_sequence);
    insert into stream_snapshots (stream_id, version, state)
    select * from unnest(p_streams, p_versions, p_states)
    on conflict (stream_id) do update set version = excluded.version, state = excluded.state;
    perform pg_notify('erp_outbox', '');
end
$$;
