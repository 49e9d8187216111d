-- W3C trace context (docs/operations.md#traces): the `traceparent` of the
-- request that caused an event (or a job) is kept with it, so that the relay
-- puts it on the Kafka record (`ce_traceparent`, the CloudEvents
-- distributed-tracing extension) and the projector, the notifier and the
-- worker continue the same trace. Null for events written before (the
-- command-service starts a trace for a request that brings none).
alter table events add column traceparent text;
alter table jobs add column traceparent text;
alter table notify_inbox add column traceparent text;

drop function append_batch(boolean, text[], bigint[], bigint[], text[], text[], bigint[], uuid[], text[], int[],
                           timestamptz[], timestamptz[], text[], uuid[], text[], text[]);

-- as before (20261129000001_event_data_as_json.sql), with each event's traceparent.
create function append_batch(
    p_notify         boolean,
    p_streams        text[],
    p_expected       bigint[],
    p_versions       bigint[],
    p_states         text[],
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
    e_data           text[],
    e_traceparent    text[]
) returns void
language plpgsql
set plan_cache_mode = force_generic_plan
as $$
declare
    moved bigint;
begin
    with wanted as (
        select * from unnest(p_streams, p_expected, p_versions) as u(stream_id, expected, version)
        where expected > 0
        order by stream_id
    ), updated as (
        update event_streams e set version = w.version
        from wanted w
        where e.stream_id = w.stream_id and e.version = w.expected
        returning 1
    )
    select (select count(*) from wanted) - (select count(*) from updated) into moved;
    if moved > 0 then
        raise exception 'a stream changed concurrently' using errcode = '40001';
    end if;
    if array_position(p_expected, 0::bigint) is not null then
        insert into event_streams (stream_id, version)
        select stream_id, version from unnest(p_streams, p_expected, p_versions) as u(stream_id, expected, version)
        where expected = 0
        order by stream_id
        on conflict (stream_id) do nothing;
    end if;
    with appended as (
        insert into events (stream_id, sequence, event_id, event_type, schema_version, posted_at,
                            recorded_at, correlation_id, causation_id, actor, data, traceparent)
        select s, q, i, t, v, p, r, c, ca, a, d::json, tp
        from unnest(e_stream, e_sequence, e_id, e_type, e_schema_version, e_posted_at,
                    e_recorded_at, e_correlation, e_causation, e_actor, e_data, e_traceparent)
             as u(s, q, i, t, v, p, r, c, ca, a, d, tp)
        returning stream_id, sequence
    )
    insert into outbox (stream_id, sequence) select stream_id, sequence from appended;
    if cardinality(array_remove(p_states, null)) > 0 then
        insert into stream_snapshots (stream_id, version, state)
        select stream_id, version, state::json
        from unnest(p_streams, p_versions, p_states) as s(stream_id, version, state) where state is not null
        on conflict (stream_id) do update set version = excluded.version, state = excluded.state;
    end if;
    if p_notify then
        perform pg_notify('erp_outbox', '');
    end if;
end
$$;
