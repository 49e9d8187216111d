//! Read-model documents: the exact bytes the query-service returns.

use serde::Serialize;

/// A document ready to be stored and served: key, version (its ETag) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// e.g. `stock:ART-1`.
    pub key: String,
    pub version: i64,
    pub body: Vec<u8>,
    /// Cache tags this document belongs to, e.g. `article:ART-1`.
    pub tags: Vec<String>,
}

/// Document key of the stock of one article.
pub fn stock_key(article: &str) -> String {
    format!("stock:{article}")
}

/// One row of `stock_levels`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StockRow {
    pub article_id: String,
    pub charge: String,
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Serialize)]
struct StockDoc<'a> {
    article: &'a str,
    version: i64,
    on_hand: i64,
    reserved: i64,
    available: i64,
    warehouses: Vec<WarehouseStock<'a>>,
    charges: Vec<ChargeStock<'a>>,
}

#[derive(Serialize)]
struct WarehouseStock<'a> {
    warehouse: &'a str,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

#[derive(Serialize)]
struct ChargeStock<'a> {
    charge: &'a str,
    warehouse: &'a str,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

/// The stock-per-article document from the article's rows, ordered by (charge, warehouse).
pub fn stock_document(article: &str, version: i64, rows: &[StockRow]) -> Document {
    let mut warehouses: Vec<WarehouseStock<'_>> = Vec::new();
    let mut by_warehouse: Vec<&StockRow> = rows.iter().collect();
    by_warehouse.sort_by(|a, b| a.warehouse.cmp(&b.warehouse));
    for row in by_warehouse {
        match warehouses.last_mut() {
            Some(w) if w.warehouse == row.warehouse => {
                w.on_hand += row.on_hand;
                w.reserved += row.reserved;
                w.available = w.on_hand - w.reserved;
            }
            _ => warehouses.push(WarehouseStock {
                warehouse: &row.warehouse,
                on_hand: row.on_hand,
                reserved: row.reserved,
                available: row.on_hand - row.reserved,
            }),
        }
    }
    let on_hand = rows.iter().map(|r| r.on_hand).sum();
    let reserved = rows.iter().map(|r| r.reserved).sum();
    let doc = StockDoc {
        article,
        version,
        on_hand,
        reserved,
        available: on_hand - reserved,
        warehouses,
        charges: rows
            .iter()
            .map(|r| ChargeStock {
                charge: &r.charge,
                warehouse: &r.warehouse,
                on_hand: r.on_hand,
                reserved: r.reserved,
                available: r.on_hand - r.reserved,
            })
            .collect(),
    };
    Document {
        key: stock_key(article),
        version,
        body: serde_json::to_vec(&doc).expect("document serialises"),
        tags: platform::redis::document_tags(&stock_key(article)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(charge: &str, warehouse: &str, on_hand: i64, reserved: i64) -> StockRow {
        StockRow { article_id: "A".into(), charge: charge.into(), warehouse: warehouse.into(), on_hand, reserved }
    }

    #[test]
    fn the_stock_document_sums_per_warehouse_and_in_total() {
        let doc = stock_document("A", 7, &[row("C1", "W2", 5, 1), row("C2", "W1", 3, 0), row("C2", "W2", 2, 2)]);
        let json: serde_json::Value = serde_json::from_slice(&doc.body).unwrap();
        assert_eq!(json["on_hand"], 10);
        assert_eq!(json["available"], 7);
        assert_eq!(json["warehouses"][0]["warehouse"], "W1");
        assert_eq!(json["warehouses"][1]["on_hand"], 7);
        assert_eq!(json["warehouses"][1]["available"], 4);
        assert_eq!(json["charges"].as_array().unwrap().len(), 3);
        assert_eq!(doc.key, "stock:A");
        assert_eq!(doc.tags, vec!["article:A"]);
    }
}
