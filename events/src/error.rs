//! Why a command was refused. Each variant is one rule and carries its numbers.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::{ArticleId, ChargeNo, ReservationId, WarehouseId};

/// A command that breaks a rule of the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum DomainError {
    #[error("article {article} is not registered")]
    UnknownArticle { article: ArticleId },
    #[error("article {article} is already registered")]
    ArticleAlreadyRegistered { article: ArticleId },
    #[error("article {article} is discontinued; it can no longer be received")]
    ArticleDiscontinued { article: ArticleId },
    #[error("charge {charge} of article {article} is not registered")]
    UnknownCharge { article: ArticleId, charge: ChargeNo },
    #[error("charge {charge} of article {article} is already registered")]
    ChargeAlreadyRegistered { article: ArticleId, charge: ChargeNo },
    #[error("expiry date {expiry_date} is before production date {production_date}")]
    ExpiryBeforeProduction { production_date: NaiveDate, expiry_date: NaiveDate },
    #[error("a quality result needs at least one measurement")]
    NoMeasurements,
    #[error("charge {charge} is blocked: {reason}")]
    ChargeBlocked { charge: ChargeNo, reason: String },
    #[error("charge {charge} expired on {expiry_date}; cannot be used on {on}")]
    ChargeExpired { charge: ChargeNo, expiry_date: NaiveDate, on: NaiveDate },
    #[error("only {available} of charge {charge} available in {warehouse}, {requested} requested")]
    InsufficientStock { charge: ChargeNo, warehouse: WarehouseId, available: i64, requested: i64 },
    #[error(
        "posting at {posted_at} would make the balance of charge {charge} in {warehouse} {balance} at {at}"
    )]
    LaterBalanceNegative {
        charge: ChargeNo,
        warehouse: WarehouseId,
        posted_at: DateTime<Utc>,
        at: DateTime<Utc>,
        balance: i64,
    },
    #[error("posting time {posted_at} is before {earliest}, the start of the open posting window")]
    BackdatedTooFar { posted_at: DateTime<Utc>, earliest: DateTime<Utc> },
    #[error("posting time {posted_at} is in the future (now {now})")]
    PostedInFuture { posted_at: DateTime<Utc>, now: DateTime<Utc> },
    #[error("source and destination are both {warehouse}")]
    SameWarehouse { warehouse: WarehouseId },
    #[error("counted {counted} of charge {charge} in {warehouse}, but {reserved} is reserved; release reservations first")]
    CountBelowReserved { charge: ChargeNo, warehouse: WarehouseId, counted: i64, reserved: i64 },
    #[error("reservation {reservation} does not exist or is closed")]
    UnknownReservation { reservation: ReservationId },
    #[error("reservation {reservation} already exists")]
    ReservationExists { reservation: ReservationId },
    #[error("reservation {reservation} holds {remaining}, {requested} requested")]
    ReservationExceeded { reservation: ReservationId, remaining: i64, requested: i64 },
    #[error("the balance of charge {charge} in {warehouse} would exceed {max}")]
    BalanceOverflow { charge: ChargeNo, warehouse: WarehouseId, max: i64 },
    /// The sender may act only in some warehouses, and this command would
    /// change stock or reservations in another one.
    #[error("the credential is not permitted to act in warehouse {warehouse}")]
    WarehouseNotPermitted { warehouse: WarehouseId },
}

impl DomainError {
    /// A short, stable, machine-readable name of the rule (used in problem+json).
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::UnknownArticle { .. } => "unknown-article",
            DomainError::ArticleAlreadyRegistered { .. } => "article-already-registered",
            DomainError::ArticleDiscontinued { .. } => "article-discontinued",
            DomainError::UnknownCharge { .. } => "unknown-charge",
            DomainError::ChargeAlreadyRegistered { .. } => "charge-already-registered",
            DomainError::ExpiryBeforeProduction { .. } => "expiry-before-production",
            DomainError::NoMeasurements => "no-measurements",
            DomainError::ChargeBlocked { .. } => "charge-blocked",
            DomainError::ChargeExpired { .. } => "charge-expired",
            DomainError::InsufficientStock { .. } => "insufficient-stock",
            DomainError::LaterBalanceNegative { .. } => "later-balance-negative",
            DomainError::BackdatedTooFar { .. } => "backdated-too-far",
            DomainError::PostedInFuture { .. } => "posted-in-future",
            DomainError::SameWarehouse { .. } => "same-warehouse",
            DomainError::CountBelowReserved { .. } => "count-below-reserved",
            DomainError::UnknownReservation { .. } => "unknown-reservation",
            DomainError::ReservationExists { .. } => "reservation-exists",
            DomainError::ReservationExceeded { .. } => "reservation-exceeded",
            DomainError::BalanceOverflow { .. } => "balance-overflow",
            DomainError::WarehouseNotPermitted { .. } => "warehouse-not-permitted",
        }
    }

    /// True when the command names something that does not exist (HTTP 404),
    /// rather than breaking a rule about something that does (HTTP 409).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            DomainError::UnknownArticle { .. } | DomainError::UnknownCharge { .. } | DomainError::UnknownReservation { .. }
        )
    }

    /// True when the sender lacks the right (HTTP 403) rather than the
    /// command breaking a rule of the stock.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, DomainError::WarehouseNotPermitted { .. })
    }
}
