//! The catalogue a run starts from: articles in categories, each with two or
//! three charges, stocked in three warehouses with a history of receipts,
//! transfers and issues spread over the last four weeks (so that as-of queries
//! and movement histories have something to show). Loaded through the bulk
//! import (`POST /jobs/imports`), as an operator would load opening stock.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

pub(crate) const WAREHOUSES: [&str; 3] = ["WH-NORTH", "WH-SOUTH", "WH-EAST"];

const CATEGORIES: [&str; 12] = [
    "fasteners", "adhesives", "paints", "cables", "bearings", "seals", "hoses", "filters", "tools", "packaging", "lubricants",
    "electrics",
];

/// What the users of a run know about the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Catalogue {
    pub(crate) articles: usize,
    /// When the history starts (as-of queries ask for moments after it).
    pub(crate) since: DateTime<Utc>,
}

impl Catalogue {
    pub(crate) fn new(articles: usize) -> Self {
        Self { articles, since: Utc::now() - chrono::Duration::days(28) }
    }

    pub(crate) fn article(&self, i: usize) -> String {
        format!("LT-{i:05}")
    }

    pub(crate) fn category_of(&self, i: usize) -> &'static str {
        CATEGORIES[i % CATEGORIES.len()]
    }

    pub(crate) fn categories(&self) -> &'static [&'static str] {
        &CATEGORIES
    }

    /// Charges of article `i`: two, and a third for every fourth article.
    pub(crate) fn charges_of(&self, i: usize) -> &'static [&'static str] {
        if i.is_multiple_of(4) { &["C1", "C2", "C3"] } else { &["C1", "C2"] }
    }

    /// The import file: one JSON object per line (docs/jobs.md).
    pub(crate) fn ndjson(&self) -> String {
        let mut out = String::with_capacity(self.articles * 1200);
        // Postings in time order per article (the rules refuse nothing for
        // that, but it is how a history arrives), inside the 30-day posting window.
        let at = |i: usize, k: i64| {
            let t = self.since + chrono::Duration::days((i % 5) as i64) + chrono::Duration::hours(k * 30);
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let mut line = |v: Value| {
            let _ = writeln!(out, "{v}");
        };
        for i in 0..self.articles {
            let article = self.article(i);
            line(json!({
                "type": "article", "article": article, "name": format!("Load article {i}"), "category": self.category_of(i),
                "unit": { "code": "pcs" }, "reorder_point": 40
            }));
            for (c, charge) in self.charges_of(i).iter().enumerate() {
                let produced = (self.since - chrono::Duration::days(60 - c as i64 * 20)).date_naive();
                let mut body = json!({ "type": "charge", "article": article, "charge": charge, "production_date": produced.to_string() });
                if i % 3 == 0 {
                    body["expiry_date"] = json!((produced + chrono::Duration::days(400)).to_string());
                }
                line(body);
                let k = c as i64 * 4;
                let quantity = 150 + (i * 37 + c * 11) % 250;
                line(json!({ "type": "receipt", "article": article, "charge": charge, "warehouse": WAREHOUSES[0], "quantity": quantity, "posted_at": at(i, k) }));
                line(json!({ "type": "receipt", "article": article, "charge": charge, "warehouse": WAREHOUSES[1], "quantity": quantity / 2 + 20, "posted_at": at(i, k + 1) }));
                line(json!({ "type": "transfer", "article": article, "charge": charge, "from": WAREHOUSES[0], "to": WAREHOUSES[2], "quantity": quantity / 4, "posted_at": at(i, k + 2) }));
                line(json!({ "type": "issue", "article": article, "charge": charge, "warehouse": WAREHOUSES[1], "quantity": 10 + i % 15, "posted_at": at(i, k + 3) }));
            }
        }
        out
    }
}

/// Imports the catalogue through `command_url` and waits for the job to succeed.
/// Returns the number of lines and how long the import took.
pub(crate) async fn load(http: &reqwest::Client, command_url: &str, key: &str, catalogue: &Catalogue) -> anyhow::Result<(usize, Duration)> {
    let body = catalogue.ndjson();
    let lines = body.lines().count();
    let started = Instant::now();
    let response = http
        .post(format!("{command_url}/jobs/imports?format=ndjson"))
        .bearer_auth(key)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "the import was refused: {} {}", response.status(), response.text().await?);
    let job: Value = response.json().await?;
    let id = job["id"].as_str().ok_or_else(|| anyhow::anyhow!("no job id in {job}"))?.to_owned();
    loop {
        let job: Value = http.get(format!("{command_url}/jobs/{id}")).bearer_auth(key).send().await?.error_for_status()?.json().await?;
        match job["status"].as_str() {
            Some("succeeded") => {
                let rejected = job["result"]["rejected"].as_u64().unwrap_or(0);
                anyhow::ensure!(rejected == 0, "{rejected} catalogue lines were refused: {job}");
                return Ok((lines, started.elapsed()));
            }
            Some("failed" | "dead" | "cancelled") => anyhow::bail!("the catalogue import ended {job}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Catalogue;

    #[test]
    fn every_charge_has_stock_left_in_every_warehouse() {
        let catalogue = Catalogue::new(40);
        let text = catalogue.ndjson();
        let mut stock = std::collections::BTreeMap::<(String, String, String), i64>::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = |w: &str| (v["article"].as_str().unwrap().to_owned(), v["charge"].as_str().unwrap().to_owned(), w.to_owned());
            let q = v["quantity"].as_i64().unwrap_or(0);
            match v["type"].as_str().unwrap() {
                "receipt" => *stock.entry(key(v["warehouse"].as_str().unwrap())).or_default() += q,
                "issue" => *stock.entry(key(v["warehouse"].as_str().unwrap())).or_default() -= q,
                "transfer" => {
                    *stock.entry(key(v["from"].as_str().unwrap())).or_default() -= q;
                    *stock.entry(key(v["to"].as_str().unwrap())).or_default() += q;
                }
                _ => {}
            }
        }
        let charges: usize = (0..40).map(|i| catalogue.charges_of(i).len()).sum();
        // Inside the 30-day posting window, and in time order per article.
        let mut last: std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>> = Default::default();
        let window = chrono::Utc::now() - chrono::Duration::days(29);
        for v in text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()) {
            let Some(at) = v["posted_at"].as_str() else { continue };
            let at = chrono::DateTime::parse_from_rfc3339(at).unwrap().to_utc();
            assert!(at > window && at < chrono::Utc::now(), "{v}");
            let previous = last.insert(v["article"].as_str().unwrap().to_owned(), at);
            assert!(previous.is_none_or(|p| p <= at), "{v}");
        }
        assert_eq!(stock.len(), charges * 3);
        assert!(stock.values().all(|q| *q > 0), "{stock:?}");
    }
}
