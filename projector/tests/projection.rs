//! The projection against a real PostgreSQL, fed records directly (no
//! broker): batching does not change the read models, redelivery changes
//! nothing, backdated movements keep every later balance right, and poison
//! halts only its own stream until it is skipped or re-driven.

use chrono::{DateTime, Duration, Utc};
use events::*;
use projector::apply::apply_batch;
use projector::batch::{ApplyError, Mode, Outcome};
use projector::cache::StateCache;
use projector::record::Incoming;
use readmodel::{Generation, Statements};
use sqlx::PgPool;
use testkit::TestEnv;
use testkit::commands::{block, consume, count, issue, move_category, receipt, reserve, transfer};
use testkit::events::{Streams, cloudevent};

const TOPIC: &str = "events";

fn now() -> DateTime<Utc> {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

fn incoming(envelope: &Envelope, offset: i64) -> Incoming {
    let (key, headers, value) = cloudevent(envelope);
    Incoming::new(0, offset, Some(offset), Some(key), headers, value)
}

fn records(envelopes: &[Envelope]) -> Vec<Incoming> {
    envelopes.iter().enumerate().map(|(i, e)| incoming(e, i as i64)).collect()
}

async fn database() -> anyhow::Result<PgPool> {
    let env = TestEnv::new(1).await?;
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;
    Ok(pool)
}

async fn apply(pool: &PgPool, sql: &Statements, batch: &[Incoming], cache: &mut StateCache, mode: &Mode) -> anyhow::Result<Outcome> {
    let mut tx = pool.begin().await?;
    let mut outcome = apply_batch(&mut tx, sql, TOPIC, batch, cache, mode).await?;
    tx.commit().await?;
    let states = outcome.states.clone();
    cache.keep(std::mem::take(&mut outcome.states), &outcome.halted);
    outcome.states = states;
    Ok(outcome)
}

/// On hand and reserved of an article, from its stock document.
async fn stock(pool: &PgPool, article: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "select (d ->> 'on_hand')::int8, (d ->> 'reserved')::int8
         from (select convert_from(body, 'UTF8')::jsonb as d from rm_1.documents where key = 'stock:' || $1) s",
    )
    .bind(article)
    .fetch_one(pool)
    .await?)
}

async fn checksum(pool: &PgPool, generation: &Generation) -> anyhow::Result<String> {
    let mut conn = pool.acquire().await?;
    Ok(projector::rebuild::checksum(&mut conn, generation).await?)
}

/// An article with the reorder point these tests use.
fn register(id: &str, category: &str) -> Command {
    testkit::commands::register(id, &format!("Article {id}"), category, Some(20))
}

fn charge(id: &str, c: &str) -> Command {
    testkit::commands::charge(id, c, "2026-10-01", None)
}

/// A history with transfers, reservations, a count, a category change and
/// backdated movements, over two articles.
fn history() -> Vec<Envelope> {
    let mut s = Streams::default();
    let t = |days: i64| Some(now() - Duration::days(days));
    let mut all = Vec::new();
    let mut run = |c: Command| all.extend(s.decide(c, now()));
    run(register("A", "bolts"));
    run(charge("A", "C1"));
    run(charge("A", "C2"));
    run(register("B", "glue"));
    run(charge("B", "G1"));
    run(receipt("A", "C1", "W1", 10, t(5)));
    run(receipt("B", "G1", "W1", 100, t(4)));
    run(issue("A", "C1", "W1", 4, t(2)));
    run(receipt("A", "C1", "W1", 5, t(3)));
    run(transfer("A", "C1", "W1", "W2", 3, t(1)));
    run(reserve("A", "R1", "C1", "W2", 2, "order 1"));
    run(receipt("A", "C2", "W1", 7, None));
    run(count("B", "G1", "W1", 90, t(3)));
    run(move_category("B", "adhesives"));
    run(consume("A", "R1", Some(1), None));
    run(block("A", "C2", "damaged"));
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn one_batch_or_one_record_at_a_time_from_stored_rows_builds_the_same_read_models() -> anyhow::Result<()> {
    let pool = database().await?;
    let whole = Statements::new(Generation::new(1));
    let single = Generation::new(2);
    sqlx::query("select create_read_model('rm_2')").execute(&pool).await?;
    let batch = records(&history());
    apply(&pool, &whole, &batch, &mut StateCache::default(), &Mode::Live).await?;
    let one_by_one = Statements::new(single.clone());
    for record in &batch {
        // No cache: every state is rebuilt from the stored rows.
        apply(&pool, &one_by_one, std::slice::from_ref(record), &mut StateCache::default(), &Mode::Live).await?;
    }
    assert_eq!(checksum(&pool, &Generation::new(1)).await?, checksum(&pool, &single).await?);

    // And a few figures, so that "equal" is not "equally empty".
    let (on_hand, reserved) = stock(&pool, "A").await?;
    assert_eq!((on_hand, reserved), (10 - 4 + 5 + 7 - 1, 1));
    let glue: Option<(i64,)> = sqlx::query_as("select charges from rm_1.categories where category = 'glue'").fetch_optional(&pool).await?;
    let adhesives: (i64, i64) =
        sqlx::query_as("select charges, on_hand from rm_1.categories where category = 'adhesives'").fetch_one(&pool).await?;
    assert_eq!(glue, Some((0,)), "B's charge left glue");
    assert_eq!(adhesives, (1, 90));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backdated_movement_shifts_the_balance_of_every_later_movement_of_its_bucket() -> anyhow::Result<()> {
    let pool = database().await?;
    let sql = Statements::new(Generation::new(1));
    let history = history();
    // Apply in two batches, so that the backdated receipt meets rows already stored.
    let (first, rest) = history.split_at(8);
    let mut cache = StateCache::default();
    apply(&pool, &sql, &records(first), &mut cache, &Mode::Live).await?;
    let rest: Vec<Incoming> = rest.iter().enumerate().map(|(i, e)| incoming(e, 100 + i as i64)).collect();
    apply(&pool, &sql, &rest, &mut cache, &Mode::Live).await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "select kind, delta, balance from rm_1.movements
         where article_id = 'A' and charge = 'C1' and warehouse = 'W1' order by posted_at, sequence, leg",
    )
    .fetch_all(&pool)
    .await?;
    // Posted on days -5 (+10), -3 (+5, recorded last), -2 (-4), -1 (transfer out 3).
    let expected = [("receipt", 10, 10), ("receipt", 5, 15), ("issue", -4, 11), ("transfer_out", -3, 8)];
    let rows: Vec<(&str, i64, i64)> = rows.iter().map(|(k, d, b)| (k.as_str(), *d, *b)).collect();
    assert_eq!(rows, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_batch_is_skipped_and_changes_nothing() -> anyhow::Result<()> {
    let pool = database().await?;
    let sql = Statements::new(Generation::new(1));
    let batch = records(&history());
    apply(&pool, &sql, &batch, &mut StateCache::default(), &Mode::Live).await?;
    let before = checksum(&pool, &Generation::new(1)).await?;
    // A fresh cache: the states are read back from PostgreSQL.
    let again = apply(&pool, &sql, &batch, &mut StateCache::default(), &Mode::Live).await?;
    assert_eq!((again.applied, again.duplicates), (0, batch.len()));
    assert_eq!(checksum(&pool, &Generation::new(1)).await?, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_halts_only_its_stream_until_an_operator_skips_it() -> anyhow::Result<()> {
    let pool = database().await?;
    let sql = Statements::new(Generation::new(1));
    let mut s = Streams::default();
    let mut a = Vec::new();
    for c in [register("A", "bolts"), charge("A", "C1"), receipt("A", "C1", "W1", 5, None), receipt("A", "C1", "W1", 6, None)] {
        a.extend(s.decide(c, now()));
    }
    let mut b = Vec::new();
    for c in [register("B", "bolts"), charge("B", "C1"), receipt("B", "C1", "W1", 3, None)] {
        b.extend(s.decide(c, now()));
    }
    // A's first receipt names a charge A does not have: it cannot be folded.
    let mut poison = a[2].clone();
    if let Event::StockReceived(e) = &mut poison.event {
        e.charge = ChargeNo::parse("C9").unwrap();
    }
    let batch = vec![
        incoming(&a[0], 0),
        incoming(&a[1], 1),
        incoming(&poison, 2),
        incoming(&b[0], 3),
        incoming(&a[3], 4),
        incoming(&b[1], 5),
        incoming(&b[2], 6),
    ];
    let outcome = apply(&pool, &sql, &batch, &mut StateCache::default(), &Mode::Live).await?;
    assert_eq!(outcome.applied, 5, "A's first two and all of B's");
    let parked: Vec<(i64, String, String)> =
        sqlx::query_as("select \"offset\", reason, status from rm_1.dead_letters order by \"offset\"").fetch_all(&pool).await?;
    assert_eq!(parked, vec![(2, "unfoldable".into(), "parked".into()), (4, "halted".into(), "parked".into())]);
    let halted: Vec<(String, bool)> = sqlx::query_as("select stream_id, halted from rm_1.streams order by 1").fetch_all(&pool).await?;
    assert_eq!(halted, vec![("article:A".into(), true), ("article:B".into(), false)]);
    assert_eq!(stock(&pool, "B").await?.0, 3);

    // A later record of A waits too, even in another batch.
    let a5 = s.decide(receipt("A", "C1", "W1", 1, None), now());
    let later = apply(&pool, &sql, &[incoming(&a5[0], 7)], &mut StateCache::default(), &Mode::Live).await?;
    assert_eq!((later.applied, later.parked.len()), (0, 1));

    // The operator skips the poison; what waited behind it is applied in order.
    let report = projector::dead_letters::skip_in(&pool, &Generation::new(1), TOPIC, "article:A").await?;
    assert_eq!((report.skipped, report.applied, report.still_parked), (1, 2, 0));
    let (on_hand, _) = stock(&pool, "A").await?;
    assert_eq!(on_hand, 6 + 1, "the skipped receipt of 5 is not counted");
    let statuses: Vec<(String,)> = sqlx::query_as("select status from rm_1.dead_letters order by \"offset\"").fetch_all(&pool).await?;
    assert_eq!(statuses, vec![("skipped".into(),), ("redriven".into(),), ("redriven".into(),)]);
    let (halted,): (bool,) = sqlx::query_as("select halted from rm_1.streams where stream_id = 'article:A'").fetch_one(&pool).await?;
    assert!(!halted);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gap_is_parked_and_redriven_once_the_missing_event_arrives() -> anyhow::Result<()> {
    let pool = database().await?;
    let sql = Statements::new(Generation::new(1));
    let mut s = Streams::default();
    let mut a = Vec::new();
    for c in [register("A", "bolts"), charge("A", "C1"), receipt("A", "C1", "W1", 5, None), receipt("A", "C1", "W1", 6, None)] {
        a.extend(s.decide(c, now()));
    }
    // Event 3 is missing from the topic at first, and arrives after event 4.
    let batch = vec![incoming(&a[0], 0), incoming(&a[1], 1), incoming(&a[3], 2), incoming(&a[2], 3)];
    let outcome = apply(&pool, &sql, &batch, &mut StateCache::default(), &Mode::Live).await?;
    assert_eq!(outcome.applied, 2);
    let reasons: Vec<(String,)> = sqlx::query_as("select reason from rm_1.dead_letters order by \"offset\"").fetch_all(&pool).await?;
    assert_eq!(reasons, vec![("gap".into(),), ("halted".into(),)]);

    let report = projector::dead_letters::redrive_in(&pool, &Generation::new(1), TOPIC, "article:A").await?;
    assert_eq!((report.applied, report.still_parked), (2, 0), "{report:?}");
    let (on_hand, _) = stock(&pool, "A").await?;
    assert_eq!(on_hand, 11);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_moved_by_another_writer_fails_the_batch_and_its_retry_is_exact() -> anyhow::Result<()> {
    let pool = database().await?;
    let sql = Statements::new(Generation::new(1));
    let history = history();
    let (first, rest) = history.split_at(8);
    let (second, third) = rest.split_at(rest.len() / 2);
    // This instance holds A's state after the first part.
    let mut mine = StateCache::default();
    apply(&pool, &sql, &records(first), &mut mine, &Mode::Live).await?;
    // Another writer (say an instance during a rebalance) applies the second part.
    let second: Vec<Incoming> = second.iter().enumerate().map(|(i, e)| incoming(e, 100 + i as i64)).collect();
    apply(&pool, &sql, &second, &mut StateCache::default(), &Mode::Live).await?;
    let before = checksum(&pool, &Generation::new(1)).await?;
    // This instance's cached state is behind: the third part must not be folded onto it.
    let third: Vec<Incoming> = third.iter().enumerate().map(|(i, e)| incoming(e, 200 + i as i64)).collect();
    let mut tx = pool.begin().await?;
    let failed = apply_batch(&mut tx, &sql, TOPIC, &third, &mut mine, &Mode::Live).await;
    assert!(matches!(failed, Err(ApplyError::Conflict)), "{failed:?}");
    tx.rollback().await?;
    assert_eq!(checksum(&pool, &Generation::new(1)).await?, before, "nothing of the failed batch stays");
    // Applied again, from the stored rows: the same read models as in one go.
    apply(&pool, &sql, &third, &mut mine, &Mode::Live).await?;
    let at_once = database().await?;
    apply(&at_once, &sql, &records(&history), &mut StateCache::default(), &Mode::Live).await?;
    assert_eq!(checksum(&pool, &Generation::new(1)).await?, checksum(&at_once, &Generation::new(1)).await?);
    Ok(())
}
