-- append_batch, cheaper per call (measured with scripts/bench.sh commands):
-- - it notifies only when asked to. a notify makes every commit take the
--   database-wide notification lock, one commit after another (half the
--   commits per second at 8 clients); the command-service now wakes its own
--   relay in process and asks for a notify only while another instance's
--   relay leads (docs/commands.md).
-- - the version rows are checked and moved in one update, one primary-key
--   probe per stream (in stream order, so writers lock in the same order).
--   the planner used to hash-join the whole of event_streams for the check:
--   a sequential scan per call, growing with the number of articles.
-- - events and their outbox rows are written by one statement.

drop function append_batch(text[], bigint[], bigint[], jsonb[], text[], bigint[], uuid[], text[], int[],
                           timestamptz[], timestamptz[], text[], uuid[], text[], jsonb[]);

-- as before: move the streams' versions from the expected ones to the new
-- ones (serialization_failure, 40001, when a stream moved on; a stream's
-- first append inserts its row, and two first appends collide on the events'
-- primary key, 23505), write events and their outbox rows and the snapshots
-- that are due; then notify the relay only if p_notify. planned once per
-- session (generic plans): the arrays' sizes change nothing in the plans.
create function append_batch(
    p_notify         boolean,
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
                            recorded_at, correlation_id, causation_id, actor, data)
        select * from unnest(e_stream, e_sequence, e_id, e_type, e_schema_version, e_posted_at,
                             e_recorded_at, e_correlation, e_causation, e_actor, e_data)
        returning stream_id, sequence
    )
    insert into outbox (stream_id, sequence) select stream_id, sequence from appended;
    if cardinality(array_remove(p_states, null)) > 0 then
        insert into stream_snapshots (stream_id, version, state)
        select * from unnest(p_streams, p_versions, p_states) as s(stream_id, version, state) where state is not null
        on conflict (stream_id) do update set version = excluded.version, state = excluded.state;
    end if;
    if p_notify then
        perform pg_notify('erp_outbox', '');
    end if;
end
$$;
