//! The warehouse domain, pure: identifiers, quantities, commands, events, the
//! envelope that carries an event through PostgreSQL and Kafka, and the rules.
//!
//! Everything else in the workspace depends on this crate and it depends on no
//! I/O crate. The rules live in one function, [`decide`], which turns the state
//! of one article stream and a command into events or a [`DomainError`];
//! [`evolve`] folds an event into the state and holds no rule, so the
//! command-service, the projector and the analysts' tools all fold events with
//! the same code. See `docs/domain.md`.

mod command;
mod decide;
mod envelope;
mod error;
mod event;
mod ids;
mod moment;
mod policy;
mod quantity;
mod state;
mod values;

pub use command::*;
pub use decide::{MAX_BALANCE, decide};
pub use envelope::{AUTH_TYPES, CommandMeta, EVENT_SOURCE, Envelope, EnvelopeError, RecordedEvent, auth_id, auth_type};
pub use error::DomainError;
pub use event::*;
pub use ids::{
    ArticleId, ArticleName, Category, ChargeNo, IdError, MAX_ID_LEN, MAX_TEXT_LEN, ReservationId, StreamId, Text,
    TextError, WarehouseId,
};
pub use moment::parse_moment;
pub use policy::{Context, FUTURE_TOLERANCE, Policy, Scope};
pub use quantity::{Counted, Quantity, QuantityError};
pub use state::{
    ArticleInfo, ArticleState, Bucket, ChargeState, LedgerEntry, POSTING_WINDOW, Reservation, Unfoldable, check_foldable, evolve,
    try_evolve,
};
pub use values::{DecimalError, DecimalValue, Measurement, QualityStatus, Unit, UnitCode, UnitError};
