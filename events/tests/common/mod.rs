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

// The commands, on article `A`, built by testkit's builders.
use testkit::commands as c;

pub fn register() -> Command {
    c::register(A, "Bolt M8", "fasteners", Some(10))
}

pub fn register_charge(charge: &str, expiry: Option<&str>) -> Command {
    c::charge(A, charge, "2026-01-01", expiry)
}

pub fn receipt(charge: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    c::receipt(A, charge, w, n, at)
}

pub fn issue(charge: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    c::issue(A, charge, w, n, at)
}

pub fn transfer(charge: &str, from: &str, to: &str, n: i64) -> Command {
    c::transfer(A, charge, from, to, n, None)
}

pub fn count(charge: &str, w: &str, n: i64, at: Option<DateTime<Utc>>) -> Command {
    c::count(A, charge, w, n, at)
}

pub fn reserve(r: &str, charge: &str, w: &str, n: i64) -> Command {
    c::reserve(A, r, charge, w, n, "order 4711")
}

pub fn release(r: &str, n: Option<i64>) -> Command {
    c::release(A, r, n)
}

pub fn consume(r: &str, n: Option<i64>) -> Command {
    c::consume(A, r, n, None)
}

pub fn block(charge: &str) -> Command {
    c::block(A, charge, "mould found")
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
