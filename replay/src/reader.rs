//! Reading the events topic from where an analyst asks to where they ask,
//! one record at a time (bounded memory however long the stream), with
//! progress on a terminal.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Where reading starts in every partition.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    /// The first record still in the partition.
    Beginning,
    /// The given offset per partition (inclusive); partitions not named start at the beginning.
    Offsets(BTreeMap<i32, i64>),
    /// Around the first record appended at or after the time (a few minutes
    /// earlier, see [`SEEK_MARGIN`]); the caller filters by recording time.
    Time(DateTime<Utc>),
}

/// Where reading ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The end of every partition when reading started.
    Snapshot,
    /// The given offset per partition (exclusive); partitions not named are read to the snapshot end.
    Offsets(BTreeMap<i32, i64>),
    /// Never: wait for new records until interrupted.
    Follow,
}

/// One record as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// What [`TopicReader::next`] found.
#[derive(Debug)]
pub enum Next {
    Record(Record),
    /// Nothing new for a while (a moment to flush output).
    Idle,
    /// Every partition is read to its end.
    End,
}

/// Reads a topic partition by partition, in offset order within each.
pub struct TopicReader {
    consumer: BaseConsumer,
    topic: String,
    starts: BTreeMap<i32, i64>,
    /// Exclusive end per partition; `None` when following.
    ends: Option<BTreeMap<i32, i64>>,
    positions: BTreeMap<i32, i64>,
    progress: Progress,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicReader").field("topic", &self.topic).field("ends", &self.ends).finish_non_exhaustive()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// How much earlier than asked a time-based start seeks.
const SEEK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

impl TopicReader {
    /// Connects, checks that the topic exists, and positions every partition.
    pub fn open(brokers: &str, topic: &str, start: &Start, end: &End) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("erp-replay-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("broker.address.family", "v4")
            .create()?;
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| anyhow::anyhow!("cannot reach the broker at {brokers}: {e}"))?;
        let found = metadata.topics().first().filter(|t| t.error().is_none() && !t.partitions().is_empty());
        let Some(found) = found else {
            let all = consumer.fetch_metadata(None, TIMEOUT).map(|m| {
                m.topics().iter().map(|t| t.name().to_owned()).filter(|n| !n.starts_with("__")).collect::<Vec<_>>()
            });
            let known = all.map(|names| names.join(", ")).unwrap_or_default();
            anyhow::bail!("the topic {topic} does not exist on {brokers} (topics there: {known})");
        };
        let mut starts = BTreeMap::new();
        let mut snapshot = BTreeMap::new();
        for p in found.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), TIMEOUT)?;
            snapshot.insert(p.id(), high);
            starts.insert(p.id(), low);
        }
        match start {
            Start::Beginning => {}
            Start::Offsets(offsets) => {
                for (p, o) in offsets {
                    anyhow::ensure!(starts.contains_key(p), "--from-offset names partition {p}; {topic} has {}", starts.len());
                    starts.insert(*p, (*o).max(starts[p]));
                }
            }
            Start::Time(t) => {
                // Kafka's timestamps are when the relay appended a record,
                // a little after it was recorded, on another machine's clock:
                // seek a margin earlier; the caller filters exactly.
                let seek = (*t - SEEK_MARGIN).timestamp_millis().max(0);
                let mut query = TopicPartitionList::new();
                for p in starts.keys() {
                    query.add_partition_offset(topic, *p, Offset::Offset(seek))?;
                }
                let found = consumer.offsets_for_times(query, TIMEOUT)?;
                for e in found.elements() {
                    let offset = match e.offset() {
                        Offset::Offset(o) => o,
                        // No record at or after the time: nothing to read there.
                        _ => snapshot[&e.partition()],
                    };
                    starts.insert(e.partition(), offset);
                }
            }
        }
        let ends = match end {
            End::Snapshot => Some(snapshot),
            End::Offsets(offsets) => {
                let mut ends = snapshot;
                for (p, o) in offsets {
                    anyhow::ensure!(ends.contains_key(p), "--to-offset names partition {p}; {topic} has {}", ends.len());
                    ends.insert(*p, *o);
                }
                Some(ends)
            }
            End::Follow => None,
        };
        let mut assignment = TopicPartitionList::new();
        for (p, o) in &starts {
            assignment.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        consumer.assign(&assignment)?;
        let total = ends.as_ref().map(|e| e.iter().map(|(p, end)| (end - starts[p]).max(0)).sum());
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            positions: starts.clone(),
            starts,
            ends,
            progress: Progress::new(total),
        })
    }

    /// Whether every partition is read to its end (never when following).
    fn done(&self) -> bool {
        self.ends.as_ref().is_some_and(|ends| ends.iter().all(|(p, end)| self.positions[p] >= *end))
    }

    /// The next record; [`Next::Idle`] when none arrived for half a second
    /// (while following, the end never comes).
    pub fn next(&mut self) -> anyhow::Result<Next> {
        loop {
            if self.done() {
                self.progress.finish(self.done_offsets());
                return Ok(Next::End);
            }
            let Some(message) = self.consumer.poll(Duration::from_millis(500)) else {
                return Ok(Next::Idle);
            };
            let m = message?;
            let (partition, offset) = (m.partition(), m.offset());
            self.positions.insert(partition, offset + 1);
            if self.ends.as_ref().is_some_and(|ends| offset >= ends[&partition]) {
                // Past this partition's end: stop reading it.
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, partition);
                self.consumer.pause(&tpl).ok();
                continue;
            }
            self.progress.tick(self.done_offsets());
            return Ok(Next::Record(Record {
                partition,
                offset,
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: platform::kafka::string_headers(&m),
                payload: m.payload().unwrap_or_default().to_vec(),
            }));
        }
    }

    fn done_offsets(&self) -> i64 {
        self.positions.iter().map(|(p, pos)| (pos - self.starts[p]).max(0)).sum()
    }
}

/// Progress on standard error, only when it is a terminal: offsets done of
/// the end offsets, records per second.
struct Progress {
    terminal: bool,
    total: Option<i64>,
    started: Instant,
    last: Instant,
    records: u64,
}

impl Progress {
    fn new(total: Option<i64>) -> Self {
        let now = Instant::now();
        Self { terminal: std::io::stderr().is_terminal(), total, started: now, last: now, records: 0 }
    }

    fn tick(&mut self, done: i64) {
        self.records += 1;
        if self.terminal && self.last.elapsed() > Duration::from_millis(250) {
            self.last = Instant::now();
            self.show(done);
        }
    }

    fn show(&self, done: i64) {
        let rate = self.records as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let line = match self.total {
            Some(total) if total > 0 => {
                format!("{done} of {total} offsets ({:.1} %), {rate:.0} records/s", 100.0 * done as f64 / total as f64)
            }
            _ => format!("{done} offsets, {rate:.0} records/s"),
        };
        let _ = write!(std::io::stderr(), "\r{line}   ");
    }

    fn finish(&mut self, done: i64) {
        if self.terminal && self.records > 0 {
            self.show(done);
            eprintln!();
            self.records = 0;
        }
    }
}
