//! Commands built tersely from plain values, for tests at every level (the
//! domain's rules, the projection, the end-to-end runs). Each panics on a
//! value its type refuses: tests pass valid ones.

use chrono::{DateTime, NaiveDate, Utc};
use events::*;

fn article(id: &str) -> ArticleId {
    ArticleId::parse(id).expect("a valid article id")
}

fn charge_no(c: &str) -> ChargeNo {
    ChargeNo::parse(c).expect("a valid charge number")
}

fn warehouse(w: &str) -> WarehouseId {
    WarehouseId::parse(w).expect("a valid warehouse id")
}

fn quantity(n: i64) -> Quantity {
    Quantity::new(n).expect("a valid quantity")
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("valid text")
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("a date such as 2026-11-01")
}

/// Registers an article counted in pieces.
pub fn register(id: &str, name: &str, category: &str, reorder_point: Option<i64>) -> Command {
    Command::RegisterArticle(RegisterArticle {
        article: article(id),
        name: ArticleName::parse(name).expect("a valid name"),
        category: Category::parse(category).expect("a valid category"),
        unit: Unit::new("pcs", 0).expect("a valid unit"),
        reorder_point: reorder_point.map(quantity),
    })
}

/// Registers an approved charge produced on `production_date`.
pub fn charge(id: &str, c: &str, production_date: &str, expiry_date: Option<&str>) -> Command {
    Command::RegisterCharge(RegisterCharge {
        article: article(id),
        charge: charge_no(c),
        production_date: date(production_date),
        expiry_date: expiry_date.map(date),
        quality_status: QualityStatus::Approved,
    })
}

pub fn receipt(id: &str, c: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::PostReceipt(PostReceipt { article: article(id), charge: charge_no(c), warehouse: warehouse(w), quantity: quantity(n), posted_at: at })
}

pub fn issue(id: &str, c: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::PostIssue(PostIssue { article: article(id), charge: charge_no(c), warehouse: warehouse(w), quantity: quantity(n), posted_at: at })
}

pub fn transfer(id: &str, c: &str, from: &str, to: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::TransferStock(TransferStock {
        article: article(id),
        charge: charge_no(c),
        from: warehouse(from),
        to: warehouse(to),
        quantity: quantity(n),
        posted_at: at,
    })
}

pub fn count(id: &str, c: &str, w: &str, counted: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::CountInventory(CountInventory {
        article: article(id),
        charge: charge_no(c),
        warehouse: warehouse(w),
        counted: Counted::new(counted).expect("a valid count"),
        posted_at: at,
    })
}

pub fn reserve(id: &str, r: &str, c: &str, w: &str, n: i64, reference: &str) -> Command {
    Command::ReserveStock(ReserveStock {
        article: article(id),
        reservation: ReservationId::parse(r).expect("a valid reservation id"),
        charge: charge_no(c),
        warehouse: warehouse(w),
        quantity: quantity(n),
        reference: text(reference),
    })
}

pub fn release(id: &str, r: &str, n: Option<i64>) -> Command {
    Command::ReleaseReservation(ReleaseReservation {
        article: article(id),
        reservation: ReservationId::parse(r).expect("a valid reservation id"),
        quantity: n.map(quantity),
    })
}

pub fn consume(id: &str, r: &str, n: Option<i64>, at: Option<DateTime<Utc>>) -> Command {
    Command::ConsumeReservation(ConsumeReservation {
        article: article(id),
        reservation: ReservationId::parse(r).expect("a valid reservation id"),
        quantity: n.map(quantity),
        posted_at: at,
    })
}

pub fn block(id: &str, c: &str, reason: &str) -> Command {
    Command::BlockCharge(BlockCharge { article: article(id), charge: charge_no(c), reason: text(reason) })
}

pub fn move_category(id: &str, category: &str) -> Command {
    Command::ChangeArticleCategory(ChangeArticleCategory {
        article: article(id),
        category: Category::parse(category).expect("a valid category"),
    })
}

pub fn discontinue(id: &str) -> Command {
    Command::DiscontinueArticle(DiscontinueArticle { article: article(id) })
}
