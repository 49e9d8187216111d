//! Every statement of every table file against a real generation schema.
//!
//! The read side cannot use sqlx's `query!` macros: they check a statement
//! against one schema known at build time, and every read-model table lives
//! in the schema of a generation (`rm_{n}`) named at run time. Instead, this
//! test creates a generation with the migrations' `create_read_model()` and
//! prepares every writer and reader statement (each variant of the
//! paginated ones) against it: a column renamed in the DDL, a type that no
//! longer matches or a typo fails here, not in production. COPY cannot be
//! prepared, so a row is copied in and read back.

use chrono::{TimeZone, Utc};
use readmodel::tables::{self, movements::MovementRow};
use readmodel::{Generation, Statements};
use sqlx::{Executor, PgPool};

async fn generation() -> anyhow::Result<(PgPool, Generation)> {
    let env = testkit::TestEnv::new(1).await?;
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;
    let generation = Generation::new(7);
    sqlx::query("select create_read_model($1)").bind(&generation.schema).execute(&pool).await?;
    Ok((pool, generation))
}

#[tokio::test]
async fn every_writer_and_reader_statement_prepares_against_a_generation() -> anyhow::Result<()> {
    let (pool, generation) = generation().await?;
    let s = generation.schema.as_str();
    let writers = Statements::new(generation.clone());
    let mut statements: Vec<(&str, String)> = [
        writers.streams.all(),
        writers.articles.all(),
        writers.low_stock.all(),
        writers.charges.all(),
        writers.reservations.all(),
        writers.movements.all(),
        writers.categories.all(),
        writers.documents.all(),
        writers.offsets.all(),
        writers.dead_letters.all(),
        writers.redis_outbox.all(),
    ]
    .into_iter()
    .flatten()
    .map(|(name, sql)| (name, sql.to_owned()))
    .collect();
    for readers in [
        tables::streams::readers(s),
        tables::articles::readers(s),
        tables::low_stock::readers(s),
        tables::charges::readers(s),
        tables::reservations::readers(s),
        tables::movements::readers(s),
        tables::categories::readers(s),
        tables::documents::readers(s),
        tables::offsets::readers(s),
        readmodel::reports::readers(s),
        tables::dead_letters::readers(s),
        tables::redis_outbox::readers(s),
        readmodel::exports::readers(s),
    ] {
        statements.extend(readers);
    }
    assert!(statements.len() > 40, "every table contributes: {}", statements.len());
    let mut conn = pool.acquire().await?;
    for (name, sql) in &statements {
        assert!(sql.contains(&format!("{s}.")), "{name} names the generation's schema: {sql}");
        if let Err(e) = conn.prepare(sql.as_str()).await {
            panic!("{name} does not prepare: {e}\n{sql}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_movement_copied_in_binary_is_read_back_as_written() -> anyhow::Result<()> {
    let (pool, generation) = generation().await?;
    let writers = Statements::new(generation.clone());
    let s = generation.schema.as_str();
    sqlx::query(&format!(
        "insert into {s}.charges (article_id, charge, category, production_date, quality_status, on_hand, reserved, warehouses)
         values ('ART-1', 'L1', 'c', '2026-11-01', 'approved', 7, 0, '{{\"W1\": {{\"on_hand\": 7, \"reserved\": 0}}}}')"
    ))
    .execute(&pool)
    .await?;
    let posted = Utc.with_ymd_and_hms(2026, 11, 2, 9, 30, 0).unwrap();
    let row = MovementRow {
        article_id: "ART-1".into(),
        charge: "L1".into(),
        warehouse: "W1".into(),
        posted_at: posted,
        sequence: 4,
        leg: 0,
        kind: "receipt",
        delta: 7,
        balance: 7,
        recorded_at: posted,
        event_id: uuid::Uuid::from_u128(9),
        reservation_id: Some("R1".into()),
        backdated: false,
    };
    let mut conn = pool.acquire().await?;
    tables::movements::copy(&mut conn, &writers.movements, &[&row]).await?;
    let read = tables::movements::history(&pool, s, ("ART-1", "L1"), None, None, 10).await?.expect("the charge exists");
    assert_eq!(read.len(), 1);
    let m = &read[0];
    assert_eq!(
        (m.posted_at, m.sequence, m.leg, m.kind.as_str(), m.warehouse.as_str(), m.delta, m.balance),
        (posted, 4, 0, "receipt", "W1", 7, 7)
    );
    assert_eq!((m.reservation.as_deref(), m.event_id), (Some("R1"), row.event_id));
    sqlx::query(&format!(
        "insert into {s}.articles (article_id, name, name_fold, category, unit_code, unit_decimals, discontinued)
         values ('ART-1', 'n', 'n', 'c', 'pcs', 0, false)"
    ))
    .execute(&pool)
    .await?;
    let balances = tables::movements::balances_at(&pool, s, "ART-1", posted).await?;
    assert_eq!(balances, Some(vec![("L1".to_owned(), "W1".to_owned(), 7)]));
    let before = tables::movements::balances_at(&pool, s, "ART-1", posted - chrono::Duration::seconds(1)).await?;
    assert_eq!(before, Some(vec![]));
    Ok(())
}
