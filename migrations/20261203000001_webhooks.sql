-- notifications: webhook subscriptions, their deliveries and the notifier's
-- own state (docs/webhooks.md).

-- an endpoint and what it receives. event_types: stock event type names
-- (StockReceived, ...) or '*' for all of them; alerts: business alert names
-- (below_reorder_point, ...). the filters are "any of", empty means all.
create table webhook_subscriptions (
    id                   uuid        primary key,
    url                  text        not null,
    description          text        not null default '',
    event_types          text[]      not null,
    alerts               text[]      not null,
    articles             text[]      not null default '{}',
    categories           text[]      not null default '{}',
    warehouses           text[]      not null default '{}',
    expiring_within_days int         not null default 7,
    -- whsec_ + base64 of 32 random bytes; the HMAC key is the decoded bytes.
    secret               text        not null,
    owner                text        not null,
    enabled              boolean     not null default true,
    disabled_reason      text,
    disabled_at          timestamptz,
    -- the first failed attempt since the last success; cleared by a success.
    failing_since        timestamptz,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now()
);

-- one message to one endpoint. written by the notifier's intake in the
-- transaction that moves its offsets, so a crash neither loses nor
-- duplicates one; (subscription_id, message_id) is unique besides.
--   pending    to be sent at due_at (leased while an attempt is in flight)
--   delivered  a 2xx came back
--   failed     the retry schedule ran out (or the endpoint answered 410)
create table webhook_deliveries (
    id              bigint      generated always as identity primary key,
    subscription_id uuid        not null references webhook_subscriptions on delete cascade,
    -- the webhook-id header: the event id, or the alert's own id; stable across retries.
    message_id      uuid        not null,
    event_type      text        not null,
    -- deliveries with the same key go to an endpoint one after the other (the article).
    ordering_key    text        not null,
    payload         text        not null,
    traceparent     text,
    state           text        not null default 'pending' check (state in ('pending', 'delivered', 'failed')),
    attempts        int         not null default 0,
    due_at          timestamptz not null default now(),
    lease_token     uuid,
    lease_until     timestamptz,
    last_status     int,
    last_error      text,
    created_at      timestamptz not null default now(),
    finished_at     timestamptz,
    unique (subscription_id, message_id)
);
create index webhook_deliveries_due on webhook_deliveries (due_at) where state = 'pending';
create index webhook_deliveries_order on webhook_deliveries (subscription_id, ordering_key, id) where state = 'pending';
create index webhook_deliveries_log on webhook_deliveries (subscription_id, id desc);

-- every attempt at a delivery: when, how long, what came back.
create table webhook_attempts (
    delivery_id bigint      not null references webhook_deliveries on delete cascade,
    attempt     int         not null,
    started_at  timestamptz not null,
    latency_ms  int         not null,
    status      int,
    error       text,
    worker      text        not null,
    primary key (delivery_id, attempt)
);

-- where the notifier's intake stands on the events topic: the next offset
-- per partition, moved in the transaction that writes the deliveries.
create table notify_offsets (
    topic       text   not null,
    partition   int    not null,
    next_offset bigint not null,
    primary key (topic, partition)
);

-- what the business alerts are derived from, folded from the topic by the
-- intake: per article its stock and reorder point (low: available below it),
-- per charge its expiry and stock.
create table notify_articles (
    article_id    text    primary key,
    category      text    not null default '',
    reorder_point bigint,
    discontinued  boolean not null default false,
    on_hand       bigint  not null default 0,
    reserved      bigint  not null default 0,
    low           boolean not null default false
);
create table notify_charges (
    article_id  text   not null,
    charge      text   not null,
    expiry_date date,
    on_hand     bigint not null default 0,
    primary key (article_id, charge)
);

-- notifications raised outside the topic (a job finished), written in the
-- transaction that made them true and taken by the intake.
create table notify_inbox (
    id          bigint      generated always as identity primary key,
    message_id  uuid        not null,
    event_type  text        not null,
    subject     text        not null,
    owner       text        not null,
    data        jsonb       not null,
    occurred_at timestamptz not null default now()
);

-- periods of the expiry check that ran (a period is expiry_period_secs long).
create table notify_periods (
    period bigint      primary key,
    ran_at timestamptz not null default now()
);
