//! `erp-replay`: export the events topic, or compute the stock as of a
//! moment. `erp-replay --help` and docs/analysts.md say how.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use events::RecordedEvent;
use replay::asof::AsOf;
use replay::filter::Filter;
use replay::output::{Format, Writer};
use replay::reader::{End, Next, Record, Start, TopicReader};
use replay::{parse_offsets, parse_time};

/// mimalloc: far less time in the allocator than glibc's malloc under this
/// workload (see the commit that introduced it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Read the stock back end's events topic: export it, or fold it into the
/// stock as of any moment. The events are the system of record; every
/// article's events are in order on one partition.
#[derive(Parser)]
#[command(name = "erp-replay", version)]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, env = "APP_KAFKA__BROKERS", default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    /// The events topic.
    #[arg(long, env = "APP_KAFKA__EVENTS_TOPIC", default_value = "stock-events", global = true)]
    topic: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write events as NDJSON or CSV, in per-article order, from where and to
    /// where you say (default: the whole topic as it is now).
    Export(Export),
    /// The stock as of a moment, per article, warehouse and charge, by folding
    /// the events: movements count by posting time (backdated ones included).
    StockAsOf(StockAsOf),
}

#[derive(Args)]
struct Range {
    /// Start at these offsets (inclusive), `partition:offset,...`; other partitions start at the beginning.
    #[arg(long, value_parser = parse_offsets, conflicts_with = "from_time")]
    from_offset: Option<std::collections::BTreeMap<i32, i64>>,
    /// Only events recorded at or after this time (RFC 3339 or a date); reading
    /// starts at the first record appended at or after it.
    #[arg(long, value_parser = parse_time)]
    from_time: Option<DateTime<Utc>>,
    /// Stop before these offsets (exclusive), `partition:offset,...`.
    #[arg(long, value_parser = parse_offsets, conflicts_with = "follow")]
    to_offset: Option<std::collections::BTreeMap<i32, i64>>,
    /// Only events recorded at or before this time.
    #[arg(long, value_parser = parse_time, conflicts_with = "follow")]
    to_time: Option<DateTime<Utc>>,
    /// Keep reading new events until interrupted, instead of stopping at the end.
    #[arg(long)]
    follow: bool,
}

#[derive(Args)]
struct Export {
    #[command(flatten)]
    range: Range,
    /// Only events of these articles (repeat the option or separate with commas).
    #[arg(long, value_delimiter = ',')]
    article: Vec<String>,
    /// Only events naming these charges.
    #[arg(long, value_delimiter = ',')]
    charge: Vec<String>,
    /// Only events in these warehouses (either side of a transfer).
    #[arg(long, value_delimiter = ',')]
    warehouse: Vec<String>,
    /// Only events of these types, e.g. StockReceived,StockIssued.
    #[arg(long = "type", value_delimiter = ',')]
    types: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "ndjson")]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
struct StockAsOf {
    /// The moment (RFC 3339 or a date, which means its start in UTC).
    #[arg(long, value_parser = parse_time)]
    at: DateTime<Utc>,
    /// Count only events recorded at or before this time: the stock as of
    /// `--at` as it was known then (later backdated movements left out).
    #[arg(long, value_parser = parse_time)]
    known_at: Option<DateTime<Utc>>,
    /// Only these articles.
    #[arg(long, value_delimiter = ',')]
    article: Vec<String>,
    /// Only this warehouse in the output.
    #[arg(long)]
    warehouse: Option<String>,
    /// Only this charge in the output.
    #[arg(long)]
    charge: Option<String>,
    /// Fold an NDJSON export (`-` for standard input) instead of reading the topic.
    #[arg(long)]
    input: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Export(args) => export(&cli.brokers, &cli.topic, args),
        Command::StockAsOf(args) => stock_as_of(&cli.brokers, &cli.topic, args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("erp-replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn open(brokers: &str, topic: &str, range: &Range) -> anyhow::Result<TopicReader> {
    let start = match (&range.from_offset, range.from_time) {
        (Some(offsets), _) => Start::Offsets(offsets.clone()),
        (None, Some(t)) => Start::Time(t),
        (None, None) => Start::Beginning,
    };
    let end = match (&range.to_offset, range.follow) {
        (_, true) => End::Follow,
        (Some(offsets), false) => End::Offsets(offsets.clone()),
        (None, false) => End::Snapshot,
    };
    TopicReader::open(brokers, topic, &start, &end)
}

fn recorded_event(r: &Record) -> Result<RecordedEvent, String> {
    let header = |name: &str| r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    RecordedEvent::from_cloudevent(header, &r.payload).map_err(|e| e.to_string())
}

fn export(brokers: &str, topic: &str, args: Export) -> anyhow::Result<()> {
    let filter = Filter {
        articles: args.article,
        charges: args.charge,
        warehouses: args.warehouse,
        types: args.types.iter().map(|t| t.trim_start_matches("erp.stock.").to_owned()).collect(),
        since: args.range.from_time,
        until: args.range.to_time,
    };
    let mut reader = open(brokers, topic, &args.range)?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer::new(BufWriter::new(out), args.format)?;
    let mut unreadable = 0u64;
    loop {
        match reader.next()? {
            Next::Record(r) => match recorded_event(&r) {
                Ok(e) if filter.matches(&e) => writer.write(r.partition, r.offset, &e)?,
                Ok(_) => {}
                Err(why) => {
                    unreadable += 1;
                    eprintln!("erp-replay: partition {} offset {} is not an event, left out: {why}", r.partition, r.offset);
                }
            },
            Next::Idle => writer.flush()?,
            Next::End => break,
        }
    }
    writer.flush()?;
    if unreadable > 0 {
        eprintln!("erp-replay: {unreadable} records were not events (see above)");
    }
    Ok(())
}

fn stock_as_of(brokers: &str, topic: &str, args: StockAsOf) -> anyhow::Result<()> {
    let mut asof = AsOf::new(args.at, args.known_at);
    let wanted = |article: &str| args.article.is_empty() || args.article.iter().any(|a| a == article);
    let mut refused = 0u64;
    let mut fold = |e: RecordedEvent, place: &str| {
        if !wanted(e.kafka_key()) {
            return;
        }
        let result = e.into_envelope().map_err(|x| x.to_string()).and_then(|env| asof.add(&env));
        if let Err(why) = result {
            refused += 1;
            eprintln!("erp-replay: {place}: left out: {why}");
        }
    };
    match &args.input {
        Some(path) => {
            let input: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(BufReader::new(File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?))
            };
            for (n, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<RecordedEvent>(&line) {
                    Ok(e) => fold(e, &format!("line {}", n + 1)),
                    Err(why) => anyhow::bail!("line {} of {} is not an exported event: {why}", n + 1, path.display()),
                }
            }
        }
        None => {
            let range = Range { from_offset: None, from_time: None, to_offset: None, to_time: None, follow: false };
            let mut reader = open(brokers, topic, &range)?;
            loop {
                match reader.next()? {
                    Next::Record(r) => match recorded_event(&r) {
                        Ok(e) => fold(e, &format!("partition {} offset {}", r.partition, r.offset)),
                        Err(why) => {
                            eprintln!("erp-replay: partition {} offset {} is not an event, left out: {why}", r.partition, r.offset)
                        }
                    },
                    Next::Idle => {}
                    Next::End => break,
                }
            }
        }
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    for mut stock in asof.all() {
        if !wanted(&stock.article) {
            continue;
        }
        if args.warehouse.is_some() || args.charge.is_some() {
            stock.charges.retain(|c| {
                args.warehouse.as_ref().is_none_or(|w| *w == c.warehouse) && args.charge.as_ref().is_none_or(|x| *x == c.charge)
            });
            stock.warehouses.retain(|w| args.warehouse.as_ref().is_none_or(|x| *x == w.warehouse));
            if args.charge.is_some() {
                // Per-warehouse totals of the chosen charge only.
                let mut per: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
                for c in &stock.charges {
                    *per.entry(c.warehouse.clone()).or_default() += c.on_hand;
                }
                stock.warehouses =
                    per.into_iter().map(|(warehouse, on_hand)| replay::asof::WarehouseStock { warehouse, on_hand }).collect();
            }
            stock.on_hand = stock.warehouses.iter().map(|w| w.on_hand).sum();
        }
        serde_json::to_writer(&mut out, &stock)?;
        writeln!(out)?;
    }
    out.flush()?;
    if refused > 0 {
        eprintln!("erp-replay: {refused} events did not fit their article and were left out (see above)");
    }
    Ok(())
}
