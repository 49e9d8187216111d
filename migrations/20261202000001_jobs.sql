-- background jobs: bulk imports, reports, exports (docs/jobs.md).

-- one row per job. the command-service inserts it (status queued); a worker
-- claims it by setting a fresh lease_token and lease_until, renews the lease
-- while it runs and finishes it. every write a job makes that must happen
-- once (an import's chunk of lines, a result file) is in a transaction that
-- checks the job still holds the lease token it was claimed with, so a
-- worker that lost its lease (killed, paused, partitioned) can write nothing
-- more.
--   queued     waiting, or waiting for a retry (run_at in the future, error set)
--   running    held by a worker until lease_until
--   succeeded  done; result says what came of it
--   failed     stopped by its input (a bad file): a retry would fail the same way
--   cancelled  cancelled by its submitter or an admin
--   dead       every attempt failed on something transient: retry or discard by hand
create table jobs (
    id               uuid        primary key,
    kind             text        not null,
    params           jsonb       not null,
    status           text        not null default 'queued'
                     check (status in ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
    attempts         int         not null default 0,
    max_attempts     int         not null,
    run_at           timestamptz not null default now(),
    lease_token      uuid,
    lease_until      timestamptz,
    worker           text,
    -- progress: units done of total (lines, rows), the phase and a message.
    done             bigint      not null default 0,
    total            bigint,
    phase            text        not null default 'queued',
    message          text,
    -- where a resumable kind goes on after a lost lease (an import: the
    -- next line), written in the transaction that made it true.
    checkpoint       jsonb,
    result           jsonb,
    error            text,
    cancel_requested boolean     not null default false,
    -- the principal that submitted it, and what it may do (roles, warehouses):
    -- the job acts with the submitter's rights, not the worker's.
    submitter        text        not null,
    rights           jsonb       not null,
    idempotency_key  text,
    created_at       timestamptz not null default now(),
    started_at       timestamptz,
    -- when the current (or last) attempt started.
    attempt_started_at timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz not null default now()
);

-- the claim: the oldest due job of a kind (queued, or running with an
-- expired lease).
create index jobs_due on jobs (kind, run_at) where status in ('queued', 'running');
-- the list: by status and kind, newest first; by submitter.
create index jobs_by_status on jobs (status, created_at desc);
create index jobs_by_submitter on jobs (submitter, created_at desc);
-- a submission retried with the same idempotency-key names the same job.
create unique index jobs_by_idempotency_key on jobs (submitter, idempotency_key) where idempotency_key is not null;

-- files of a job (the uploaded input, the result), in chunks of up to 1 mib
-- so that neither side ever holds a whole file. a file is complete when its
-- row in job_files exists: the chunks and that row are written in one
-- transaction.
create table job_files (
    job_id       uuid   not null references jobs (id) on delete cascade,
    name         text   not null,
    content_type text   not null,
    bytes        bigint not null,
    chunks       int    not null,
    primary key (job_id, name)
);
create table job_file_chunks (
    job_id  uuid  not null references jobs (id) on delete cascade,
    name    text  not null,
    seq     int   not null,
    data    bytea not null,
    primary key (job_id, name, seq)
);

-- lines of an import that were refused, written in the transaction of
-- their chunk (so exactly once, like the accepted lines' events); read in
-- line order for the rejections file.
create table job_rejections (
    job_id  uuid   not null references jobs (id) on delete cascade,
    line    bigint not null,
    problem text   not null,
    field   text,
    detail  text   not null,
    primary key (job_id, line)
);

-- every attempt at a job, written when it ends (or, for a worker that died,
-- when another worker finds its lease expired): what ops and the retry test
-- read to see the backoff schedule.
create table job_attempts (
    job_id      uuid        not null references jobs (id) on delete cascade,
    attempt     int         not null,
    worker      text        not null,
    started_at  timestamptz not null,
    finished_at timestamptz not null default now(),
    outcome     text        not null,
    error       text
);
create index job_attempts_by_job on job_attempts (job_id, attempt);
