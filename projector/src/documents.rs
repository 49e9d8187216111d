//! Read-model documents: the exact bytes the query-service returns, built
//! once per change here (JSON only; keys and tags come from
//! [`readmodel::keys`], storage from [`readmodel::tables::documents`]) so
//! that a read does no computation.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use events::ArticleState;
use readmodel::keys;
use readmodel::tables::categories::CategoryRow;
use readmodel::tables::charges::quality_status;
use readmodel::tables::documents::Document;
use serde::Serialize;


#[derive(Serialize)]
struct StockDoc<'a> {
    article: &'a str,
    version: u64,
    name: &'a str,
    category: &'a str,
    unit: &'a events::Unit,
    reorder_point: Option<i64>,
    discontinued: bool,
    on_hand: i64,
    reserved: i64,
    available: i64,
    warehouses: Vec<Figures<'a>>,
    charges: Vec<ChargeStock<'a>>,
}

#[derive(Serialize, Default)]
struct Figures<'a> {
    warehouse: &'a str,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

#[derive(Serialize)]
struct ChargeStock<'a> {
    charge: &'a str,
    production_date: NaiveDate,
    expiry_date: Option<NaiveDate>,
    quality_status: &'static str,
    blocked: bool,
    on_hand: i64,
    reserved: i64,
    available: i64,
    warehouses: Vec<Figures<'a>>,
}

/// The stock-per-article document: totals, per warehouse, and per charge with
/// its dates and per warehouse. Warehouses and charges without stock (nothing
/// on hand, nothing reserved) are left out. Its version is the stream's sequence.
///
/// # Panics
/// When the article is not registered (the projector only builds it for registered ones).
pub fn stock_document(article: &str, state: &ArticleState) -> Document {
    let info = state.article.as_ref().expect("a stock document is built for a registered article");
    let mut warehouses: BTreeMap<&str, Figures<'_>> = BTreeMap::new();
    let mut charges = Vec::new();
    for (no, charge) in &state.charges {
        let per_warehouse: Vec<Figures<'_>> = charge
            .stock
            .iter()
            .filter(|(_, b)| b.on_hand != 0 || b.reserved != 0)
            .map(|(w, b)| Figures { warehouse: w.as_str(), on_hand: b.on_hand, reserved: b.reserved, available: b.available() })
            .collect();
        if per_warehouse.is_empty() {
            continue;
        }
        for f in &per_warehouse {
            let total = warehouses.entry(f.warehouse).or_insert_with(|| Figures { warehouse: f.warehouse, ..Default::default() });
            total.on_hand += f.on_hand;
            total.reserved += f.reserved;
            total.available += f.available;
        }
        let (on_hand, reserved) = per_warehouse.iter().fold((0, 0), |(o, r), f| (o + f.on_hand, r + f.reserved));
        charges.push(ChargeStock {
            charge: no.as_str(),
            production_date: charge.production_date,
            expiry_date: charge.expiry_date,
            quality_status: quality_status(charge.quality_status),
            blocked: charge.blocked.is_some(),
            on_hand,
            reserved,
            available: on_hand - reserved,
            warehouses: per_warehouse,
        });
    }
    let (on_hand, reserved) = charges.iter().fold((0, 0), |(o, r), c| (o + c.on_hand, r + c.reserved));
    let doc = StockDoc {
        article,
        version: state.version,
        name: info.name.as_str(),
        category: info.category.as_str(),
        unit: &info.unit,
        reorder_point: info.reorder_point.map(|q| q.get()),
        discontinued: info.discontinued,
        on_hand,
        reserved,
        available: on_hand - reserved,
        warehouses: warehouses.into_values().collect(),
        charges,
    };
    Document {
        key: keys::stock(article),
        version: state.version as i64,
        body: {
            // Sized for a few charges and warehouses: growing the buffer copied it again and again.
            let mut body = Vec::with_capacity(256 + 256 * state.charges.len());
            serde_json::to_writer(&mut body, &doc).expect("document serialises");
            body
        },
        tags: vec![keys::article_tag(article)],
    }
}

/// The charges-per-category summary document; its version counts the events
/// that changed it.
pub fn category_document(row: &CategoryRow) -> Document {
    Document {
        key: keys::category(&row.category),
        version: row.version,
        body: serde_json::to_vec(row).expect("document serialises"),
        tags: vec![keys::category_tag(&row.category)],
    }
}

#[cfg(test)]
mod tests {
    use events::{ArticleInfo, ArticleName, Bucket, Category, ChargeNo, ChargeState, QualityStatus, Unit, WarehouseId};

    use super::*;

    #[test]
    fn the_stock_document_sums_per_warehouse_and_in_total_and_leaves_out_empty_stock() {
        let bucket = |on_hand, reserved| Bucket { on_hand, reserved, opening: on_hand, ledger: vec![] };
        let charge = |stock: Vec<(&str, Bucket)>| ChargeState {
            production_date: "2026-11-01".parse().unwrap(),
            expiry_date: None,
            quality_status: QualityStatus::Approved,
            blocked: None,
            stock: stock.into_iter().map(|(w, b)| (WarehouseId::parse(w).unwrap(), b)).collect(),
        };
        let state = ArticleState {
            version: 7,
            article: Some(ArticleInfo {
                name: ArticleName::parse("Bolt").unwrap(),
                category: Category::parse("bolts").unwrap(),
                unit: Unit::new("pcs", 0).unwrap(),
                reorder_point: None,
                discontinued: false,
            }),
            charges: [
                (ChargeNo::parse("C1").unwrap(), charge(vec![("W2", bucket(5, 1))])),
                (ChargeNo::parse("C2").unwrap(), charge(vec![("W1", bucket(3, 0)), ("W2", bucket(2, 2))])),
                (ChargeNo::parse("C3").unwrap(), charge(vec![("W1", bucket(0, 0))])),
            ]
            .into(),
            ..Default::default()
        };
        let doc = stock_document("A", &state);
        let json: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(json["on_hand"], 10);
        assert_eq!(json["available"], 7);
        assert_eq!(json["warehouses"][0]["warehouse"], "W1");
        assert_eq!(json["warehouses"][1]["on_hand"], 7);
        assert_eq!(json["warehouses"][1]["available"], 4);
        assert_eq!(json["charges"].as_array().unwrap().len(), 2, "C3 holds nothing");
        assert_eq!(json["charges"][1]["warehouses"].as_array().unwrap().len(), 2);
        assert_eq!(json["charges"][0]["production_date"], "2026-11-01");
        assert_eq!((doc.key.as_str(), doc.version), ("stock:A", 7));
        assert_eq!(doc.tags, vec!["article:A"]);
    }
}
