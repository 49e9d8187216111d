//! Projector throughput and freshness.
//!
//! Catch-up: a topic is preloaded with a generated history (registrations,
//! charges, receipts, issues, transfers, reservations, counts over many
//! articles, decided by the domain like the command-service does), then the
//! projector (release build, its own process, default settings) consumes it
//! into a fresh database. Measured from its first committed batch to its
//! last: events per second. In the same run:
//! - the broker's own fetch rate (a bare consumer reading the topic), to see
//!   whether the broker is the limit;
//! - the projector's apply code fed from memory (decode included, no broker);
//! - the baseline: batch upserts of the same batch size into a two-column
//!   table of the same PostgreSQL, rows per second.
//!
//! Freshness is measured in [`crate::freshness`].

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use events::*;
use futures::StreamExt;
use readmodel::Generation;
use projector::record::Incoming;
use projector::batch::Mode;
use projector::cache::StateCache;
use readmodel::Statements;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestEnv;
use testkit::events::{Streams, cloudevent};




/// Batch size of every measurement (the projector's `APP_PROJECTOR__BATCH_SIZE`).
static BATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn batch_size() -> usize {
    BATCH.load(std::sync::atomic::Ordering::Relaxed)
}

/// Lanes of every measurement (the projector's `APP_PROJECTOR__LANES`).
static LANES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// A generated history: `articles` articles with `per_article` events each
/// on average. Movements pick their article with a Zipf distribution of
/// exponent `skew` (1.0: the usual 80/20 of warehouse movements, the busiest
/// fifth of the articles gets about 84 % of them) or, with 0, round-robin
/// (every article equally busy: the worst case for batching).
pub(crate) fn history(articles: usize, per_article: usize, skew: f64) -> Vec<Envelope> {
    let now = Utc::now();
    let mut streams = Streams::default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let id = |a: usize| ArticleId::parse(format!("B-{a}")).unwrap();
    let charge = |c: u64| ChargeNo::parse(format!("L{c}")).unwrap();
    let wh = |w: u64| WarehouseId::parse(format!("W{w}")).unwrap();
    let q = |n: u64| Quantity::new(n as i64).unwrap();
    let mut all = Vec::with_capacity(articles * per_article);
    let mut open: HashMap<usize, Vec<String>> = HashMap::new();
    for a in 0..articles {
        all.extend(streams.decide(
            Command::RegisterArticle(RegisterArticle {
                article: id(a),
                name: ArticleName::parse(format!("Article {a}")).unwrap(),
                category: Category::parse(format!("cat-{}", a % 50)).unwrap(),
                unit: Unit::new("pcs", 0).unwrap(),
                reorder_point: Some(q(100)),
            }),
            now,
        ));
        for c in 0..2 {
            all.extend(streams.decide(
                Command::RegisterCharge(RegisterCharge {
                    article: id(a),
                    charge: charge(c),
                    production_date: "2026-10-01".parse().unwrap(),
                    expiry_date: None,
                    quality_status: QualityStatus::Approved,
                }),
                now,
            ));
        }
    }
    let movements = articles * per_article.saturating_sub(3);
    let weights: Vec<f64> = (1..=articles).map(|rank| 1.0 / (rank as f64).powf(skew)).collect();
    let total_weight: f64 = weights.iter().sum();
    let cdf: Vec<f64> = weights.iter().scan(0.0, |acc, w| { *acc += w / total_weight; Some(*acc) }).collect();
    for i in 0..movements {
        let round = i;
        let a = if skew == 0.0 {
            i % articles
        } else {
            let u = next(1 << 53) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|p| *p < u).min(articles - 1)
        };
        {
            let stream = StreamId::article(&id(a));
            let (c, w) = (next(2), next(3));
            let bucket = streams.state(&stream).expect("registered").bucket(&charge(c), &wh(w));
            let (available, on_hand, reserved) = (bucket.available(), bucket.on_hand, bucket.reserved);
            let roll = next(100);
            let command = if available < 20 || roll < 40 {
                Command::PostReceipt(PostReceipt { article: id(a), charge: charge(c), warehouse: wh(w), quantity: q(20 + next(30)), posted_at: None })
            } else if roll < 70 {
                Command::PostIssue(PostIssue { article: id(a), charge: charge(c), warehouse: wh(w), quantity: q(1 + next(10)), posted_at: None })
            } else if roll < 85 {
                Command::TransferStock(TransferStock {
                    article: id(a),
                    charge: charge(c),
                    from: wh(w),
                    to: wh((w + 1) % 3),
                    quantity: q(1 + next(5)),
                    posted_at: None,
                })
            } else if roll < 95 {
                let reservations = open.entry(a).or_default();
                match reservations.pop() {
                    Some(r) => Command::ReleaseReservation(ReleaseReservation {
                        article: id(a),
                        reservation: ReservationId::parse(r).unwrap(),
                        quantity: None,
                    }),
                    None => {
                        let r = format!("R{round}");
                        reservations.push(r.clone());
                        Command::ReserveStock(ReserveStock {
                            article: id(a),
                            reservation: ReservationId::parse(r).unwrap(),
                            charge: charge(c),
                            warehouse: wh(w),
                            quantity: q(1 + next(5)),
                            reference: Text::parse("order").unwrap(),
                        })
                    }
                }
            } else {
                Command::CountInventory(CountInventory {
                    article: id(a),
                    charge: charge(c),
                    warehouse: wh(w),
                    counted: Counted::new((on_hand - 1).max(reserved)).unwrap(),
                    posted_at: None,
                })
            };
            all.extend(streams.decide(command, now));
        }
    }
    all
}

/// Produces every envelope, keyed by article, and waits for all acknowledgements.
pub(crate) async fn preload(env: &TestEnv, envelopes: &[Envelope]) -> anyhow::Result<()> {
    let producer: FutureProducer = env
        .kafka
        .client_config()
        .set("acks", "all")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let started = Instant::now();
    for chunk in envelopes.chunks(20_000) {
        let records: Vec<_> = chunk.iter().map(cloudevent).collect();
        let sends = records.iter().map(|(key, headers, value)| {
            let mut hs = rdkafka::message::OwnedHeaders::new();
            for (k, v) in headers {
                hs = hs.insert(rdkafka::message::Header { key: k, value: Some(v.as_bytes()) });
            }
            let record = FutureRecord::to(&env.kafka.events_topic).key(key).payload(value).headers(hs);
            producer.send(record, Duration::from_secs(60))
        });
        for result in futures::future::join_all(sends).await {
            result.map_err(|(e, _)| anyhow::anyhow!("preloading: {e}"))?;
        }
    }
    eprintln!("preloaded {} events in {:.0} s", envelopes.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Reads the whole topic with a bare consumer: records per second.
async fn fetch_rate(env: &TestEnv, total: usize) -> anyhow::Result<f64> {
    let consumer: StreamConsumer = env
        .kafka
        .client_config()
        .set("group.id", format!("bench-fetch-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&env.kafka.events_topic])?;
    let mut stream = consumer.stream();
    let mut seen = 0;
    let mut started = None;
    while seen < total {
        let message = tokio::time::timeout(Duration::from_secs(60), stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the topic ended"))??;
        let _ = message.payload();
        started.get_or_insert_with(Instant::now);
        seen += 1;
    }
    Ok(seen as f64 / started.map_or(1.0, |s| s.elapsed().as_secs_f64()))
}

/// The projector (release build) as its own process on the test's database,
/// topic, Redis prefix and group; the default batch size unless `batch` says.
pub(crate) fn spawn_projector(env: &TestEnv, batch: Option<usize>) -> anyhow::Result<tokio::process::Child> {
    let exe = std::env::current_exe()?.with_file_name("projector");
    anyhow::ensure!(exe.exists(), "{} is missing: build with `cargo build --release -p projector`", exe.display());
    let mut command = tokio::process::Command::new(&exe);
    command
        .env("APP_HTTP__PORT", testkit::free_port().to_string())
        .env("APP_DATABASE__URL", &env.database.url)
        .env("APP_KAFKA__BROKERS", &env.kafka.brokers)
        .env("APP_KAFKA__EVENTS_TOPIC", &env.kafka.events_topic)
        .env("APP_REDIS__URL", &env.redis.url)
        .env("APP_REDIS__KEY_PREFIX", &env.redis.key_prefix)
        .env("APP_PROJECTOR__GROUP_ID", &env.group_id)
        .env("APP_LOG__FILTER", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(batch) = batch {
        command.env("APP_PROJECTOR__BATCH_SIZE", batch.to_string());
    }
    command.env("APP_PROJECTOR__LANES", LANES.load(std::sync::atomic::Ordering::Relaxed).to_string());
    Ok(command.spawn()?)
}

/// The projector process consuming the preloaded topic into a fresh database.
async fn catch_up(env: &TestEnv, total: usize) -> anyhow::Result<f64> {
    let mut child = spawn_projector(env, Some(batch_size()))?;
    let pool = env.pool().await?;
    let consumed = || async {
        sqlx::query_scalar::<_, Option<i64>>("select sum(next_offset)::int8 from rm_1.offsets")
            .fetch_one(&pool)
            .await
            .ok()
            .flatten()
            .unwrap_or(0)
    };
    let mut first: Option<(Instant, i64)> = None;
    let mut last_print = Instant::now();
    loop {
        let done = consumed().await;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done as usize >= total {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!("  projector: {done} of {total}");
            last_print = Instant::now();
        }
        anyhow::ensure!(child.try_wait()?.is_none(), "the projector exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().await?;
    let (started, at_start) = first.expect("some progress");
    Ok((total as i64 - at_start) as f64 / started.elapsed().as_secs_f64())
}

/// The partition a record of `key` goes to among `partitions` (FNV-1a; any
/// fixed mapping does, as long as an article's records share a partition).
fn partition_of(key: &str, partitions: u64) -> i32 {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % partitions) as i32
}

/// The apply code fed from memory: decode, fold, write, in batches, each
/// applied in the projector's lanes (its records spread over four
/// partitions by article, as on the topic).
async fn from_memory(envelopes: &[Envelope], lanes: usize) -> anyhow::Result<f64> {
    let env = TestEnv::new(1).await?;
    let pool = env.pool().await?;
    platform::db::MIGRATOR.run(&pool).await?;
    let raw: Vec<_> = envelopes.iter().map(cloudevent).collect();
    let sql = std::sync::Arc::new(Statements::new(Generation::new(1)));
    let mut cache = StateCache::default();
    let mut next_offset = [0i64; 4];
    // As the projector copies records out of the consumer: owned key, headers, payload.
    let mut receive = |chunk: &[(String, Vec<(String, String)>, Vec<u8>)]| -> Vec<Incoming> {
        chunk
            .iter()
            .map(|(key, headers, value)| {
                let partition = partition_of(key, 4);
                let offset = next_offset[partition as usize];
                next_offset[partition as usize] += 1;
                Incoming::undecoded(partition, offset, None, Some(key.clone()), headers.as_slice(), value.clone())
            })
            .collect()
    };
    let started = Instant::now();
    let mut chunks = raw.chunks(batch_size());
    let mut next = chunks.next().map(&mut receive);
    while let Some(batch) = next.take() {
        let lanes = projector::lanes::split(batch, lanes);
        let applied = projector::lanes::apply(&pool, &sql, "bench", lanes, &mut cache, &Mode::Live, None, |_, _| async {
            Ok(())
        });
        // As the projector does: the next batch is received while this one is applied.
        let (applied, received) = tokio::join!(platform::metrics::timed("apply_batch (all)", async { applied.await.1 }), async {
            chunks.next().map(&mut receive)
        });
        applied?;
        next = received;
    }
    let elapsed = started.elapsed();
    print_breakdown(elapsed);
    Ok(envelopes.len() as f64 / elapsed.as_secs_f64())
}

/// Where the time of the from-memory run went, by statement (the rest is
/// decoding, folding and building rows and documents).
fn print_breakdown(elapsed: Duration) {
    let mut rows: Vec<(String, f64, u64)> = Vec::new();
    for family in platform::metrics::REGISTRY.gather() {
        if family.name() != "erp_db_query_duration_seconds" {
            continue;
        }
        for m in family.get_metric() {
            let label =
                m.get_label().iter().find(|l| l.name() == "query").map(|l| l.value().to_owned()).unwrap_or_default();
            let h = m.get_histogram();
            rows.push((label, h.get_sample_sum(), h.get_sample_count()));
        }
    }
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("  from memory, {:.1} s in all; time in PostgreSQL statements:", elapsed.as_secs_f64());
    for (label, sum, count) in rows {
        eprintln!("    {label:<22} {sum:7.2} s  {count:6} calls");
    }
}

/// Baseline: batch upserts of `batch_size()` rows (text key, bigint) in one
/// transaction each, every row a new key (the table grows to `rows` rows).
async fn baseline(rows: usize) -> anyhow::Result<f64> {
    let env = TestEnv::new(1).await?;
    let pool = env.pool().await?;
    sqlx::query("create table bench_upsert (key text primary key, value bigint not null)").execute(&pool).await?;
    let started = Instant::now();
    let mut written = 0;
    let mut i = 0u64;
    while written < rows {
        let n = batch_size().min(rows - written);
        // A key per row: the table grows to as many rows as the projector's
        // movement history does.
        let keys: Vec<String> = (0..n as u64).map(|j| format!("B-{}", i * batch_size() as u64 + j)).collect();
        let values: Vec<i64> = (0..n as i64).collect();
        let mut tx = pool.begin().await?;
        sqlx::query(
            "insert into bench_upsert (key, value) select * from unnest($1::text[], $2::int8[])
             on conflict (key) do update set value = excluded.value",
        )
        .bind(&keys)
        .bind(&values)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        written += n;
        i += 1;
    }
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(
    events: usize,
    articles: usize,
    batch: usize,
    skew: f64,
    rate: u32,
    seconds: u64,
    parts: &[String],
    lanes: usize,
) -> anyhow::Result<()> {
    BATCH.store(batch, std::sync::atomic::Ordering::Relaxed);
    LANES.store(lanes, std::sync::atomic::Ordering::Relaxed);
    let part = |p: &str| parts.iter().any(|x| x == p || x == "all");
    let per_article = (events / articles).max(4);
    eprintln!("generating {events} events over {articles} articles (skew {skew}) ...");
    let envelopes = history(articles, per_article, skew);
    let total = envelopes.len();
    let (mut kafka, mut fetch) = (None, None);
    if part("broker") {
        let env = TestEnv::new(4).await?;
        preload(&env, &envelopes).await?;
        eprintln!("broker fetch rate ...");
        fetch = Some(fetch_rate(&env, total).await?);
        eprintln!("projector catch-up ...");
        kafka = Some(catch_up(&env, total).await?);
    }
    // The baseline is measured before and after the apply code (the machine
    // is shared and noisy): the ratio is to their mean.
    eprintln!("baseline ...");
    let before = baseline(total).await?;
    eprintln!("apply from memory ...");
    let memory = from_memory(&envelopes, lanes).await?;
    eprintln!("baseline again ...");
    let after = baseline(total).await?;
    let base = (before + after) / 2.0;
    println!("\nprojector catch-up: {total} events over {articles} articles (Zipf skew {skew}), batches of {batch}, {lanes} lanes, one PostgreSQL");
    println!("baseline: batch upserts of {batch} new rows (text key, bigint) per transaction into the same PostgreSQL\n");
    println!("| measurement | per second | ratio to baseline |");
    println!("|---|---:|---:|");
    if let Some(kafka) = kafka {
        println!("| projector process, from the broker (events) | {kafka:.0} | {:.2}x |", kafka / base);
    }
    println!("| projector apply code, from memory (events) | {memory:.0} | {:.2}x |", memory / base);
    if let Some(fetch) = fetch {
        println!("| broker fetch alone, bare consumer (records) | {fetch:.0} | {:.2}x |", fetch / base);
    }
    println!("| baseline: batch upsert (rows; mean of {before:.0} before and {after:.0} after) | {base:.0} | 1.00x |");
    if part("freshness") {
        crate::freshness::freshness(rate, seconds).await?;
    }
    Ok(())
}
