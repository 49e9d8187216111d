//! A continuous load of mixed commands and reads, sent as a careful client
//! sends them: every command carries an `Idempotency-Key` and is retried
//! with the same key after a 503, a 504 or a broken connection until it gets
//! a definite answer, so the test knows exactly which commands were
//! accepted even when a process dies while answering.
//!
//! What the clients see is judged as it arrives: a 500, a 503/504 without
//! problem+json, an answer slower than [`DEADLINE`], or a command that gets
//! no definite answer within [`RESOLVE_WITHIN`] is recorded as a failure.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The longest a client waits for one answer: the services' request
/// timeout (10 s) and a margin.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The longest a command may take, retries included, to get a definite answer.
pub const RESOLVE_WITHIN: Duration = Duration::from_secs(90);

/// Charges and warehouses every seeded article has.
pub const CHARGES: [&str; 2] = ["L1", "L2"];
pub const WAREHOUSES: [&str; 2] = ["W1", "W2"];

/// A command the command-service accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub stream: String,
    pub sequence: u64,
    pub event_ids: Vec<String>,
    pub at: Instant,
}

impl Accepted {
    /// Reads a 201's body; `None` when it names no events (a 200).
    pub fn of(body: &Value, at: Instant) -> Option<Self> {
        let event_ids: Vec<String> = body["event_ids"].as_array()?.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect();
        if event_ids.is_empty() {
            return None;
        }
        Some(Self { stream: body["stream"].as_str()?.to_owned(), sequence: body["sequence"].as_u64()?, event_ids, at })
    }
}

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct Ledger {
    pub accepted: Vec<Accepted>,
    /// Commands answered with a rule's 404 or 409: nothing written.
    pub refused: usize,
    /// Every status seen, transient ones included.
    pub statuses: BTreeMap<u16, usize>,
    /// Connection errors (retried).
    pub broken_connections: usize,
    pub reads: usize,
    pub failures: Vec<String>,
}

impl Ledger {
    /// The highest accepted sequence of each stream.
    pub fn heads(&self) -> BTreeMap<String, u64> {
        let mut heads = BTreeMap::new();
        for a in &self.accepted {
            let head = heads.entry(a.stream.clone()).or_insert(0);
            *head = (*head).max(a.sequence);
        }
        heads
    }

    /// Commands accepted after `t`.
    pub fn accepted_after(&self, t: Instant) -> usize {
        self.accepted.iter().filter(|a| a.at > t).count()
    }
}

/// Registers `articles` articles (`LOAD-0`, ...) with both charges and an
/// opening receipt in every charge and warehouse. Returns their ids and the
/// accepted commands.
pub async fn seed(command_url: &str, articles: usize) -> anyhow::Result<(Vec<String>, Vec<Accepted>)> {
    let http = crate::http();
    let (mut ids, mut accepted) = (Vec::new(), Vec::new());
    for i in 0..articles {
        let article = format!("LOAD-{i}");
        let category = ["bolts", "glue", "paint"][i % 3];
        let mut bodies = vec![(
            "/articles".to_owned(),
            json!({ "article": article, "name": format!("Load article {i}"), "category": category, "unit": { "code": "pcs" }, "reorder_point": 20 }),
        )];
        for charge in CHARGES {
            bodies.push((format!("/articles/{article}/charges"), json!({ "charge": charge, "production_date": "2026-11-01" })));
        }
        for charge in CHARGES {
            for warehouse in WAREHOUSES {
                let body = json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": 50 });
                bodies.push(("/stock/receipts".to_owned(), body));
            }
        }
        for (path, body) in bodies {
            let r = http.post(format!("{command_url}{path}")).json(&body).send().await?;
            anyhow::ensure!(r.status() == 201, "seeding {path}: {} {}", r.status(), r.text().await?);
            accepted.push(Accepted::of(&r.json().await?, Instant::now()).ok_or_else(|| anyhow::anyhow!("an answer without events"))?);
        }
        ids.push(article);
    }
    Ok((ids, accepted))
}

/// A small deterministic generator (xorshift), one per client.
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The load while it runs.
#[derive(Debug)]
pub struct Load {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub ledger: Arc<Mutex<Ledger>>,
}

impl Load {
    /// Starts `writers` command clients against `command_url` and `readers`
    /// stock readers against `query_url`, on `articles`.
    pub fn start(command_url: &str, query_url: Option<&str>, articles: &[String], writers: usize, readers: usize) -> Self {
        let stop = CancellationToken::new();
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let http = crate::http_builder().timeout(DEADLINE).build().expect("an HTTP client");
        let mut tasks = Vec::new();
        for client in 0..writers {
            let writer = Writer {
                http: http.clone(),
                url: command_url.to_owned(),
                articles: articles.to_vec(),
                ledger: ledger.clone(),
                dice: Dice::new(),
                open: Vec::new(),
                client,
                made: 0,
            };
            tasks.push(tokio::spawn(writer.run(stop.clone())));
        }
        if let Some(query_url) = query_url {
            for _ in 0..readers {
                let (http, url, articles, ledger) = (http.clone(), query_url.to_owned(), articles.to_vec(), ledger.clone());
                tasks.push(tokio::spawn(read(http, url, articles, ledger, stop.clone())));
            }
        }
        Self { stop, tasks, ledger }
    }

    /// Stops the clients once their commands in flight are resolved; returns what they saw.
    pub async fn stop(self) -> Ledger {
        self.stop.cancel();
        for task in self.tasks {
            if let Err(e) = task.await {
                self.ledger.lock().expect("ledger").failures.push(format!("a client panicked: {e}"));
            }
        }
        std::mem::take(&mut *self.ledger.lock().expect("ledger"))
    }

    pub fn accepted(&self) -> usize {
        self.ledger.lock().expect("ledger").accepted.len()
    }

    pub fn accepted_after(&self, t: Instant) -> usize {
        self.ledger.lock().expect("ledger").accepted_after(t)
    }

    /// The highest accepted sequence of each stream so far.
    pub fn heads(&self) -> BTreeMap<String, u64> {
        self.ledger.lock().expect("ledger").heads()
    }
}

/// One command client.
struct Writer {
    http: reqwest::Client,
    url: String,
    articles: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
    dice: Dice,
    /// Reservations this client made and has not closed: (article, id).
    open: Vec<(String, String)>,
    client: usize,
    made: usize,
}

/// How a command ended.
enum Answer {
    Accepted,
    Refused,
    Failed,
}

impl Writer {
    async fn run(mut self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            let (path, body, reservation) = self.next_command();
            match self.send(&path, &body).await {
                Answer::Accepted => {
                    if let Some(r) = reservation {
                        self.open.push(r);
                    }
                }
                Answer::Refused | Answer::Failed => {}
            }
        }
    }

    /// The next command of the mix: receipts 25 %, issues 25 % (some are
    /// refused for want of stock), transfers 15 %, counts 5 %, reservations
    /// 15 %, releases and consumptions 15 %.
    fn next_command(&mut self) -> (String, Value, Option<(String, String)>) {
        let d = &mut self.dice;
        let article = d.pick(&self.articles).clone();
        let charge = *d.pick(&CHARGES);
        let warehouse = *d.pick(&WAREHOUSES);
        let roll = d.below(100);
        let quantity = 1 + d.below(15) as i64;
        if roll >= 85
            && !self.open.is_empty()
        {
            let (article, id) = self.open.swap_remove(d.below(self.open.len() as u64) as usize);
            let action = if d.below(2) == 0 { "release" } else { "consume" };
            let body = if d.below(2) == 0 { json!({}) } else { json!({ "quantity": 1 }) };
            return (format!("/articles/{article}/reservations/{id}/{action}"), body, None);
        }
        match roll {
            0..25 => ("/stock/receipts".into(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": quantity }), None),
            25..50 => ("/stock/issues".into(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "quantity": quantity }), None),
            50..65 => {
                let to = if warehouse == WAREHOUSES[0] { WAREHOUSES[1] } else { WAREHOUSES[0] };
                let body = json!({ "article": article, "charge": charge, "from": warehouse, "to": to, "quantity": quantity });
                ("/stock/transfers".into(), body, None)
            }
            65..70 => {
                let counted = d.below(60) as i64;
                ("/stock/inventory-counts".into(), json!({ "article": article, "charge": charge, "warehouse": warehouse, "counted": counted }), None)
            }
            _ => {
                self.made += 1;
                let id = format!("R-{}-{}", self.client, self.made);
                let body = json!({ "reservation": id, "charge": charge, "warehouse": warehouse, "quantity": 1 + quantity / 3, "reference": "order" });
                (format!("/articles/{article}/reservations"), body, Some((article, id)))
            }
        }
    }

    /// Sends a command until it gets a definite answer.
    async fn send(&self, path: &str, body: &Value) -> Answer {
        let key = Uuid::new_v4().to_string();
        let started = Instant::now();
        let fail = |what: String| {
            self.ledger.lock().expect("ledger").failures.push(format!("POST {path}: {what}"));
            Answer::Failed
        };
        loop {
            if started.elapsed() > RESOLVE_WITHIN {
                return fail(format!("no definite answer within {RESOLVE_WITHIN:?}"));
            }
            let sent = Instant::now();
            let response = self.http.post(format!("{}{path}", self.url)).header("idempotency-key", &key).json(body).send().await;
            let response = match response {
                Ok(r) => r,
                Err(e) if e.is_timeout() => return fail(format!("no answer within {DEADLINE:?} (sent {:?} ago)", sent.elapsed())),
                Err(_) => {
                    self.ledger.lock().expect("ledger").broken_connections += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let problem = is_problem(&response);
            *self.ledger.lock().expect("ledger").statuses.entry(status).or_default() += 1;
            let text = match response.text().await {
                Ok(t) => t,
                Err(_) => {
                    self.ledger.lock().expect("ledger").broken_connections += 1;
                    continue;
                }
            };
            match status {
                200 | 201 => {
                    let Ok(body) = serde_json::from_str::<Value>(&text) else { return fail(format!("{status} {text}")) };
                    match Accepted::of(&body, Instant::now()) {
                        Some(accepted) => self.ledger.lock().expect("ledger").accepted.push(accepted),
                        None if status == 200 => {}
                        None => return fail(format!("{status} {text}")),
                    }
                    return Answer::Accepted;
                }
                404 | 409 if problem => {
                    self.ledger.lock().expect("ledger").refused += 1;
                    return Answer::Refused;
                }
                503 | 504 if problem => tokio::time::sleep(Duration::from_millis(200)).await,
                _ => return fail(format!("{status} {text}")),
            }
        }
    }
}

fn is_problem(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/problem+json"))
}

/// One stock reader: any answer but a 500, a 503/504 without problem+json
/// or a timeout is fine while a fault lasts.
async fn read(http: reqwest::Client, url: String, articles: Vec<String>, ledger: Arc<Mutex<Ledger>>, stop: CancellationToken) {
    let mut dice = Dice::new();
    while !stop.is_cancelled() {
        let article = dice.pick(&articles);
        let path = format!("/articles/{article}/stock");
        match http.get(format!("{url}{path}")).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let problem = is_problem(&r);
                let mut ledger = ledger.lock().expect("ledger");
                ledger.reads += 1;
                *ledger.statuses.entry(status).or_default() += 1;
                if !(matches!(status, 200 | 304 | 404) || (matches!(status, 503 | 504) && problem)) {
                    ledger.failures.push(format!("GET {path}: {status}"));
                }
            }
            Err(e) if e.is_timeout() => ledger.lock().expect("ledger").failures.push(format!("GET {path}: no answer within {DEADLINE:?}")),
            Err(_) => {
                ledger.lock().expect("ledger").broken_connections += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
