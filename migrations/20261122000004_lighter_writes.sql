-- lighter writes on the command path, measured with scripts/bench.sh commands.

-- event ids derive from (command id, index) and a command appends once (per
-- idempotency key); the primary key (stream_id, sequence) is the guarantee.
-- the unique index on event_id cost an index insert per event; a plain index
-- would serve lookups by id, but none of the write side's queries needs one.
alter table events drop constraint events_event_id_key;

-- an outbox row is written in the same statement as its event, so the foreign
-- key only cost a lookup per row.
alter table outbox drop constraint outbox_stream_id_sequence_fkey;

-- snapshots are rewritten on every command; skip pglz compression of large ones.
alter table stream_snapshots alter column state set storage external;
