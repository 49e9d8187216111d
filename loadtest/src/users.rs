//! The users of the system, each arrival one action of one kind of user:
//!
//! - **read clients**: the stock of an article (Zipf over the catalogue),
//!   one charge, a category's summary, a page of a category's charges, a
//!   charge's movement history, the low-stock list; every read clients have
//!   read before is revalidated with `If-None-Match` (as an HTTP cache does);
//! - **write clients**: receipts, issues (some refused for want of stock),
//!   transfers, counts, reservations and their release or consumption; each
//!   with an `Idempotency-Key`, retried with the same key after a 503, a 429
//!   or a broken connection, as a careful client does;
//! - **read-your-writes users**: a receipt or an issue, then the article's
//!   stock with the consistency token it returned (the read must show it);
//! - **analysts**: the stock of an article as of a moment of the last four
//!   weeks, now and then an export of the catalogue.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::catalogue::{Catalogue, WAREHOUSES};
use crate::dice::{Dice, Zipf};
use crate::record::{Recorder, Status};
use crate::sampler::Probe;

/// The operations, in the order of [`OPS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    Stock,
    Charge,
    Category,
    CategoryCharges,
    Movements,
    LowStock,
    Receipt,
    Issue,
    Transfer,
    Count,
    Reserve,
    Release,
    Consume,
    ReadYourWrite,
    AsOf,
    Export,
    /// An arrival the generator could not send (too many in flight).
    NotSent,
}

/// Names of the operations in reports.
pub(crate) const OPS: [&str; 17] = [
    "read stock", "read charge", "read category", "read category charges", "read movements", "read low stock", "write receipt",
    "write issue", "write transfer", "write count", "write reserve", "write release", "write consume", "read-your-write",
    "analyst as-of", "analyst export", "not sent",
];

/// The kinds of user and how often each arrives.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Mix {
    pub(crate) read: u32,
    pub(crate) write: u32,
    pub(crate) read_your_writes: u32,
    pub(crate) analyst: u32,
}

impl Default for Mix {
    /// 80 % reads, 14 % writes, 3 % read-your-writes (so 17 % of arrivals
    /// write), 3 % analysts: a warehouse's screens and scanners look things up
    /// far more often than they book, and analysts are few.
    fn default() -> Self {
        Self { read: 80, write: 14, read_your_writes: 3, analyst: 3 }
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `read=80,write=14,ryw=3,analyst=3`
    fn from_str(s: &str) -> Result<Self, String> {
        let mut mix = Self { read: 0, write: 0, read_your_writes: 0, analyst: 0 };
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("{part:?}: expected name=weight"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| format!("{part:?}: the weight is not a whole number"))?;
            match name.trim() {
                "read" => mix.read = weight,
                "write" => mix.write = weight,
                "ryw" | "read-your-writes" => mix.read_your_writes = weight,
                "analyst" => mix.analyst = weight,
                other => return Err(format!("unknown user kind {other:?} (read, write, ryw, analyst)")),
            }
        }
        if mix.read + mix.write + mix.read_your_writes + mix.analyst == 0 {
            return Err("every weight is 0".into());
        }
        Ok(mix)
    }
}

/// API keys by role: requests are spread over several keys, as many clients
/// would send them (the per-principal rate limits apply to each).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) readers: Vec<String>,
    pub(crate) writers: Vec<String>,
    pub(crate) analysts: Vec<String>,
}

/// What the write clients saw accepted.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// The highest accepted sequence of each stream.
    pub(crate) heads: HashMap<String, u64>,
    pub(crate) accepted: u64,
    /// Refused by a rule (404, 409, 422): nothing written.
    pub(crate) refused: u64,
}

/// Everything the users share.
#[derive(Debug)]
pub(crate) struct World {
    pub(crate) http: reqwest::Client,
    pub(crate) command_url: String,
    pub(crate) query_url: String,
    pub(crate) keys: Keys,
    pub(crate) catalogue: Catalogue,
    pub(crate) mix: Mix,
    pub(crate) zipf: Zipf,
    pub(crate) recorder: Recorder,
    pub(crate) ledger: Mutex<Ledger>,
    etags: Mutex<HashMap<String, String>>,
    reservations: Mutex<Vec<(String, String)>>,
    made: AtomicU64,
    /// Set by the freshness prober when it wants the next accepted command.
    armed: Arc<AtomicBool>,
    probes: mpsc::Sender<Probe>,
}

/// The most URLs whose ETag the read clients remember.
const ETAGS: usize = 50_000;

impl World {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        http: reqwest::Client,
        command_url: String,
        query_url: String,
        keys: Keys,
        catalogue: Catalogue,
        mix: Mix,
        recorder: Recorder,
        (armed, probes): (Arc<AtomicBool>, mpsc::Sender<Probe>),
    ) -> Self {
        let zipf = Zipf::new(catalogue.articles, 1.0);
        Self {
            http,
            command_url,
            query_url,
            keys,
            catalogue,
            mix,
            zipf,
            recorder,
            ledger: Mutex::default(),
            etags: Mutex::default(),
            reservations: Mutex::default(),
            made: AtomicU64::new(0),
            armed,
            probes,
        }
    }

    /// One arrival: a user of a kind drawn by the mix does one thing.
    /// `scheduled` is when the arrival was due: latency counts from there, so
    /// time spent waiting for the generator counts too.
    pub(crate) async fn act(&self, dice: &mut Dice, scheduled: Instant) {
        let m = self.mix;
        let (op, status) = match dice.weighted(&[m.read, m.write, m.read_your_writes, m.analyst]) {
            0 => self.read(dice).await,
            1 => self.write(dice).await,
            2 => self.read_your_write(dice).await,
            _ => self.analyse(dice).await,
        };
        self.recorder.record(op, scheduled, status);
    }

    fn key<'a>(dice: &mut Dice, keys: &'a [String]) -> &'a str {
        &keys[dice.below(keys.len() as u64) as usize]
    }

    fn article(&self, dice: &mut Dice) -> usize {
        self.zipf.sample(dice)
    }

    /// An article (Zipf) and one of its charges (uniformly).
    fn charge(&self, dice: &mut Dice) -> (String, &'static str) {
        let i = self.article(dice);
        let charges = self.catalogue.charges_of(i);
        (self.catalogue.article(i), charges[dice.below(charges.len() as u64) as usize])
    }

    async fn read(&self, dice: &mut Dice) -> (Op, Status) {
        let (article, charge) = self.charge(dice);
        let category = self.catalogue.categories()[dice.below(self.catalogue.categories().len() as u64) as usize];
        let (op, path) = match dice.weighted(&[55, 10, 10, 10, 10, 5]) {
            0 => (Op::Stock, format!("/articles/{article}/stock")),
            1 => (Op::Charge, format!("/articles/{article}/charges/{charge}")),
            2 => (Op::Category, format!("/categories/{category}")),
            3 => (Op::CategoryCharges, format!("/categories/{category}/charges?limit=50")),
            4 => (Op::Movements, format!("/articles/{article}/charges/{charge}/movements?limit=20")),
            _ => (Op::LowStock, "/low-stock?limit=50".to_owned()),
        };
        let key = Self::key(dice, &self.keys.readers);
        let url = format!("{}{path}", self.query_url);
        let known = self.etags.lock().expect("etags").get(&path).cloned();
        let mut request = self.http.get(&url).bearer_auth(key);
        if let Some(etag) = &known {
            request = request.header("if-none-match", etag);
        }
        let status = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                if let Some(etag) = response.headers().get("etag").and_then(|v| v.to_str().ok()) {
                    let mut etags = self.etags.lock().expect("etags");
                    if etags.len() < ETAGS || etags.contains_key(&path) {
                        etags.insert(path, etag.to_owned());
                    }
                }
                match response.bytes().await {
                    Ok(_) => Status::Http(status),
                    Err(_) => Status::Transport,
                }
            }
            Err(_) => Status::Transport,
        };
        (op, status)
    }

    async fn write(&self, dice: &mut Dice) -> (Op, Status) {
        let (article, charge) = self.charge(dice);
        let warehouse = WAREHOUSES[dice.below(3) as usize];
        let quantity = 1 + dice.below(12);
        let key = Self::key(dice, &self.keys.writers).to_owned();
        let (op, path, body) = match dice.weighted(&[25, 25, 15, 5, 15, 15]) {
            0 => (Op::Receipt, "/stock/receipts".to_owned(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": quantity })),
            1 => (Op::Issue, "/stock/issues".to_owned(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": quantity })),
            2 => {
                let to = WAREHOUSES[(dice.below(2) as usize + 1 + WAREHOUSES.iter().position(|w| *w == warehouse).unwrap_or(0)) % 3];
                (Op::Transfer, "/stock/transfers".to_owned(), json!({ "article": article, "charge": charge, "from": warehouse, "to": to, "quantity": quantity }))
            }
            3 => (Op::Count, "/stock/inventory-counts".to_owned(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "counted": 20 + dice.below(200) })),
            4 => {
                let id = format!("R-{}", self.made.fetch_add(1, Ordering::Relaxed));
                let body = json!({ "reservation": id, "charge": charge, "warehouse": warehouse, "quantity": 1 + quantity / 3, "reference": "sales order" });
                let status = self.command(&key, &format!("/articles/{article}/reservations"), &body).await;
                if matches!(status, Status::Http(200 | 201)) {
                    self.reservations.lock().expect("reservations").push((article, id));
                }
                return (Op::Reserve, status);
            }
            _ => {
                let open = {
                    let mut open = self.reservations.lock().expect("reservations");
                    let n = open.len() as u64;
                    (n > 0).then(|| open.swap_remove(dice.below(n) as usize))
                };
                let Some((article, id)) = open else {
                    // Nothing to release yet: a receipt instead.
                    let body = json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": quantity });
                    return (Op::Receipt, self.command(&key, "/stock/receipts", &body).await);
                };
                let (op, action) = if dice.below(2) == 0 { (Op::Release, "release") } else { (Op::Consume, "consume") };
                return (op, self.command(&key, &format!("/articles/{article}/reservations/{id}/{action}"), &json!({})).await);
            }
        };
        (op, self.command(&key, &path, &body).await)
    }

    async fn read_your_write(&self, dice: &mut Dice) -> (Op, Status) {
        let (article, charge) = self.charge(dice);
        let warehouse = WAREHOUSES[dice.below(3) as usize];
        let path = if dice.below(2) == 0 { "/stock/receipts" } else { "/stock/issues" };
        let body = json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": 1 + dice.below(5) });
        let key = Self::key(dice, &self.keys.writers).to_owned();
        let (status, answer) = self.command_answer(&key, path, &body).await;
        let Some((token, sequence)) = answer.as_ref().and_then(|a| Some((a["consistency_token"].as_str()?.to_owned(), a["sequence"].as_u64()?))) else {
            return (Op::ReadYourWrite, status);
        };
        let response = self.http.get(format!("{}/articles/{article}/stock", self.query_url)).bearer_auth(&key).header("x-consistency-token", token).send().await;
        let status = match response {
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(doc) if doc["version"].as_u64().is_some_and(|v| v >= sequence) => Status::Http(200),
                Ok(_) => Status::Stale,
                Err(_) => Status::Transport,
            },
            Ok(r) => Status::Http(r.status().as_u16()),
            Err(_) => Status::Transport,
        };
        (Op::ReadYourWrite, status)
    }

    async fn analyse(&self, dice: &mut Dice) -> (Op, Status) {
        let key = Self::key(dice, &self.keys.analysts).to_owned();
        let (op, url) = if dice.below(20) == 0 {
            (Op::Export, format!("{}/exports/catalogue?format=ndjson", self.query_url))
        } else {
            let article = self.catalogue.article(self.article(dice));
            let span = (chrono::Utc::now() - self.catalogue.since).num_seconds().max(1) as u64;
            let at = self.catalogue.since + chrono::Duration::seconds(dice.below(span) as i64);
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            (Op::AsOf, format!("{}/articles/{article}/stock/as-of?at={}", self.query_url, at.replace('+', "%2B")))
        };
        let status = match self.http.get(url).bearer_auth(key).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                if r.bytes().await.is_ok() { Status::Http(status) } else { Status::Transport }
            }
            Err(_) => Status::Transport,
        };
        (op, status)
    }

    async fn command(&self, key: &str, path: &str, body: &Value) -> Status {
        self.command_answer(key, path, body).await.0
    }

    /// Posts a command until it has a definite answer (at most four tries,
    /// the same idempotency key each time); notes what was accepted.
    async fn command_answer(&self, key: &str, path: &str, body: &Value) -> (Status, Option<Value>) {
        let idempotency_key = uuid::Uuid::new_v4().to_string();
        let mut status = Status::Transport;
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
            }
            let response = self
                .http
                .post(format!("{}{path}", self.command_url))
                .bearer_auth(key)
                .header("idempotency-key", &idempotency_key)
                .json(body)
                .send()
                .await;
            let Ok(response) = response else { continue };
            let code = response.status().as_u16();
            status = Status::Http(code);
            let Ok(text) = response.text().await else {
                status = Status::Transport;
                continue;
            };
            match code {
                200 | 201 => {
                    let answer: Option<Value> = serde_json::from_str(&text).ok();
                    self.accepted(answer.as_ref());
                    return (status, answer);
                }
                429 | 503 => continue,
                404 | 409 | 422 => {
                    self.ledger.lock().expect("ledger").refused += 1;
                    return (status, None);
                }
                _ => return (status, None),
            }
        }
        (status, None)
    }

    fn accepted(&self, answer: Option<&Value>) {
        let Some((stream, sequence)) = answer.and_then(|a| Some((a["stream"].as_str()?, a["sequence"].as_u64()?))) else { return };
        let mut ledger = self.ledger.lock().expect("ledger");
        ledger.accepted += 1;
        let head = ledger.heads.entry(stream.to_owned()).or_insert(0);
        *head = (*head).max(sequence);
        drop(ledger);
        if self.armed.swap(false, Ordering::Relaxed) {
            let article = stream.strip_prefix("article:").unwrap_or(stream).to_owned();
            let _ = self.probes.try_send((article, sequence, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Mix;

    #[test]
    fn a_mix_is_read_from_names_and_weights() {
        let mix: Mix = "read=90, write=5,ryw=5".parse().unwrap();
        assert_eq!((mix.read, mix.write, mix.read_your_writes, mix.analyst), (90, 5, 5, 0));
        assert!("reads=1".parse::<Mix>().unwrap_err().contains("unknown user kind"));
        assert!("read=x".parse::<Mix>().unwrap_err().contains("whole number"));
        assert!("read=0".parse::<Mix>().is_err());
    }
}
