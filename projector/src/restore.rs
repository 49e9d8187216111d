//! A stream's state restored from its stored rows (`articles`, `charges`,
//! `reservations`), for a batch that meets a stream this process does not
//! hold in memory: exactly the state the fold produced when the rows were
//! written (tested), so the projector never stores states themselves.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use events::{ArticleState, ChargeNo};
use platform::metrics::timed;
use readmodel::Statements;
use readmodel::tables::articles::{self, ArticleRow};
use readmodel::tables::charges::{self, StoredCharge};
use readmodel::tables::reservations::{self, ReservationRow};
use sqlx::PgConnection;

/// The stored rows of streams whose states are restored, by article.
#[derive(Debug, Default)]
pub struct StoredRows {
    articles: HashMap<String, ArticleRow>,
    charges: HashMap<String, Vec<StoredCharge>>,
    reservations: HashMap<String, Vec<ReservationRow>>,
}

impl StoredRows {
    /// Reads what the states of `articles` are restored from.
    pub async fn load(tx: &mut PgConnection, sql: &Statements, ids: &[&str]) -> Result<Self, sqlx::Error> {
        let mut stored = Self::default();
        for row in timed("load_articles", articles::load(&sql.articles, ids).fetch_all(&mut *tx)).await? {
            stored.articles.insert(row.article_id.clone(), row);
        }
        for (article, charge) in timed("load_charges", charges::load(&mut *tx, &sql.charges, ids)).await? {
            stored.charges.entry(article).or_default().push(charge);
        }
        for row in timed("load_reservations", reservations::load(&sql.reservations, ids).fetch_all(&mut *tx)).await? {
            stored.reservations.entry(row.article_id.clone()).or_default().push(row);
        }
        Ok(stored)
    }

    /// The state of `article` at `sequence`, from its rows (taken out).
    pub fn restore(&mut self, article: &str, sequence: u64, latest_posting: Option<DateTime<Utc>>) -> Result<ArticleState, String> {
        let row = self.articles.remove(article);
        let charges = self.charges.remove(article).unwrap_or_default();
        let reservations = self.reservations.remove(article).unwrap_or_default();
        rebuild_state(sequence, latest_posting, row.as_ref(), &charges, &reservations)
    }
}

/// A stream's state (without ledger) rebuilt from its stored rows: exactly
/// the state the fold produced when they were written (tested), so the
/// projector need not store the state itself.
pub fn rebuild_state(
    sequence: u64,
    latest_posting: Option<DateTime<Utc>>,
    article: Option<&ArticleRow>,
    charges: &[StoredCharge],
    reservations: &[ReservationRow],
) -> Result<ArticleState, String> {
    use events::{ArticleInfo, ArticleName, Bucket, Category, ChargeState, Quantity, Reservation, ReservationId, Text, Unit, WarehouseId};
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    let article = article
        .map(|a| -> Result<ArticleInfo, String> {
            Ok(ArticleInfo {
                name: ArticleName::parse(a.name.clone()).map_err(|x| e("name", &x))?,
                category: Category::parse(a.category.clone()).map_err(|x| e("category", &x))?,
                unit: Unit::new(&a.unit_code, u8::try_from(a.unit_decimals).map_err(|x| e("unit", &x))?).map_err(|x| e("unit", &x))?,
                reorder_point: a.reorder_point.map(Quantity::new).transpose().map_err(|x| e("reorder point", &x))?,
                discontinued: a.discontinued,
            })
        })
        .transpose()?;
    let mut state = ArticleState { version: sequence, article, latest_posting, ..Default::default() };
    for c in charges {
        let quality_status = serde_json::from_value(serde_json::Value::String(c.quality_status.clone()))
            .map_err(|x| e("quality status", &x))?;
        let mut stock = BTreeMap::new();
        for (w, f) in &c.warehouses {
            let bucket = Bucket { on_hand: f.on_hand, reserved: f.reserved, opening: f.on_hand, ledger: Vec::new() };
            stock.insert(WarehouseId::parse(w.clone()).map_err(|x| e("warehouse", &x))?, bucket);
        }
        let charge = ChargeState {
            production_date: c.production_date,
            expiry_date: c.expiry_date,
            quality_status,
            blocked: c.blocked_reason.clone().map(Text::parse).transpose().map_err(|x| e("blocked reason", &x))?,
            stock,
        };
        state.charges.insert(ChargeNo::parse(c.charge.clone()).map_err(|x| e("charge", &x))?, charge);
    }
    for r in reservations {
        let reservation = Reservation {
            charge: ChargeNo::parse(r.charge.clone()).map_err(|x| e("charge", &x))?,
            warehouse: WarehouseId::parse(r.warehouse.clone()).map_err(|x| e("warehouse", &x))?,
            reference: Text::parse(r.reference.clone()).map_err(|x| e("reference", &x))?,
            remaining: r.remaining,
        };
        state.reservations.insert(ReservationId::parse(r.reservation_id.clone()).map_err(|x| e("reservation", &x))?, reservation);
    }
    Ok(state)
}


#[cfg(test)]
mod tests {
    use readmodel::tables::charges::StoredCharge;
    use testkit::commands::{block, charge, move_category, receipt, register, reserve};

    use super::*;
    use crate::projection::tests::{envelopes, project};

    #[test]
    fn the_state_rebuilt_from_the_rows_is_the_state_the_fold_produced() {
        let events = envelopes(vec![
            register("A", "Bolt", "bolts", Some(10)),
            charge("A", "C1", "2026-11-01", None),
            charge("A", "C2", "2026-11-01", None),
            receipt("A", "C1", "W1", 4, None),
            receipt("A", "C2", "W2", 9, None),
            reserve("A", "R1", "C2", "W2", 3, "order 7"),
            block("A", "C1", "hold"),
            move_category("A", "screws"),
        ]);
        let changes = project(&events);
        let charges: Vec<StoredCharge> = changes
            .charges
            .iter()
            .map(|c| StoredCharge {
                charge: c.charge.clone(),
                production_date: c.production_date,
                expiry_date: c.expiry_date,
                quality_status: c.quality_status.to_owned(),
                blocked_reason: c.blocked_reason.clone(),
                warehouses: c.warehouses.clone(),
            })
            .collect();
        let rebuilt = rebuild_state(
            changes.state.version,
            changes.state.latest_posting,
            changes.article.as_ref(),
            &charges,
            &changes.reservations,
        )
        .unwrap();
        assert_eq!(rebuilt, changes.state);
        assert_eq!(rebuilt.reservations.len(), 1);
    }
}

