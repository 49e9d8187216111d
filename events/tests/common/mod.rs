//! Given/when/then helpers: build commands tersely, fold accepted commands into
//! a state, and decide one more.
#![allow(dead_code, unreachable_pub)]

use chrono::{DateTime, Duration, NaiveDate, Utc};
use events::*;

pub const A: &str = "ART-1";

pub fn now() -> DateTime<Utc> {
    "2026-11-22T12:00:00Z".parse().unwrap()
}

pub fn days_ago(n: i64) -> DateTime<Utc> {
    now() - Duration::days(n)
}

pub fn article() -> ArticleId {
    ArticleId::parse(A).unwrap()
}
pub fn charge(c: &str) -> ChargeNo {
    ChargeNo::parse(c).unwrap()
}
pub fn wh(w: &str) -> WarehouseId {
    WarehouseId::parse(w).unwrap()
}
pub fn q(n: i64) -> Quantity {
    Quantity::new(n).unwrap()
}
pub fn rid(r: &str) -> ReservationId {
    ReservationId::parse(r).unwrap()
}
pub fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

pub fn register() -> Command {
    Command::RegisterArticle(RegisterArticle {
        article: article(),
        name: ArticleName::parse("Bolt M8").unwrap(),
        category: Category::parse("fasteners").unwrap(),
        unit: Unit::new("pcs", 0).unwrap(),
        reorder_point: Some(q(10)),
    })
}

pub fn register_charge(c: &str, expiry: Option<&str>) -> Command {
    Command::RegisterCharge(RegisterCharge {
        article: article(),
        charge: charge(c),
        production_date: date("2026-01-01"),
        expiry_date: expiry.map(date),
        quality_status: QualityStatus::Approved,
    })
}

pub fn receipt(c: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::PostReceipt(PostReceipt { article: article(), charge: charge(c), warehouse: wh(w), quantity: q(n), posted_at: at })
}

pub fn issue(c: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::PostIssue(PostIssue { article: article(), charge: charge(c), warehouse: wh(w), quantity: q(n), posted_at: at })
}

pub fn transfer(c: &str, from: &str, to: &str, n: i64) -> Command {
    Command::TransferStock(TransferStock {
        article: article(),
        charge: charge(c),
        from: wh(from),
        to: wh(to),
        quantity: q(n),
        posted_at: None,
    })
}

pub fn count(c: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    Command::CountInventory(CountInventory {
        article: article(),
        charge: charge(c),
        warehouse: wh(w),
        counted: Counted::new(n).unwrap(),
        posted_at: at,
    })
}

pub fn reserve(r: &str, c: &str, w: &str, n: i64) -> Command {
    Command::ReserveStock(ReserveStock {
        article: article(),
        reservation: rid(r),
        charge: charge(c),
        warehouse: wh(w),
        quantity: q(n),
        reference: Text::parse("order 4711").unwrap(),
    })
}

pub fn release(r: &str, n: Option<i64>) -> Command {
    Command::ReleaseReservation(ReleaseReservation { article: article(), reservation: rid(r), quantity: n.map(q) })
}

pub fn consume(r: &str, n: Option<i64>) -> Command {
    Command::ConsumeReservation(ConsumeReservation {
        article: article(),
        reservation: rid(r),
        quantity: n.map(q),
        posted_at: None,
    })
}

pub fn block(c: &str) -> Command {
    Command::BlockCharge(BlockCharge { article: article(), charge: charge(c), reason: Text::parse("mould found").unwrap() })
}

/// A registered article with charge `C1` (no expiry) and the given commands accepted.
pub fn given(commands: Vec<Command>) -> ArticleState {
    given_with(&Policy::default(), [register(), register_charge("C1", None)].into_iter().chain(commands).collect())
}

pub fn given_with(policy: &Policy, commands: Vec<Command>) -> ArticleState {
    commands.into_iter().fold(ArticleState::default(), |s, c| {
        let name = c.name();
        let events = decide(&s, c, &Context { now: now(), policy })
            .unwrap_or_else(|e| panic!("given {name} must be accepted: {e}"));
        events.iter().fold(s, evolve)
    })
}

pub fn when(state: &ArticleState, command: Command) -> Result<Vec<Event>, DomainError> {
    decide(state, command, &Context { now: now(), policy: &Policy::default() })
}

pub fn when_with(policy: &Policy, state: &ArticleState, command: Command) -> Result<Vec<Event>, DomainError> {
    decide(state, command, &Context { now: now(), policy })
}
