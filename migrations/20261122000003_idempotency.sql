-- idempotency keys of the command-service: a retried request with the same key
-- and body gets the original response and appends nothing. written in the same
-- transaction as the events the request appended.
create table idempotency_keys (
    key          text        primary key,
    -- method, route and body of the first request; another body is a 422.
    fingerprint  text        not null,
    status       smallint    not null,
    response     jsonb       not null,
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null
);

-- serves pruning of expired keys.
create index idempotency_keys_expiry on idempotency_keys (expires_at);
