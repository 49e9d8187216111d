//! The warehouse domain, pure: identifiers, quantities, commands, events, the
//! envelope that carries an event through PostgreSQL and Kafka, and the rules.
//!
//! Everything else in the workspace depends on this crate and it depends on no
//! I/O crate. The rules live in one function, [`decide`], which turns the state of
//! one stream and a command into events or a [`DomainError`]; [`evolve`] folds an
//! event into the state and holds no rule, so the command-service, the projector
//! and the analysts' tools all fold events with the same code.

mod command;
mod decide;
mod envelope;
mod error;
mod event;
mod ids;
mod quantity;
mod state;

pub use command::{Command, PostReceipt};
pub use decide::{MAX_BALANCE, decide};
pub use envelope::{CommandMeta, EVENT_SOURCE, Envelope, EnvelopeError, RecordedEvent};
pub use event::DecodeError;
pub use error::DomainError;
pub use event::{Event, StockReceived};
pub use ids::{MAX_ID_LEN, ArticleId, ChargeNo, IdError, StreamId, WarehouseId};
pub use quantity::{Quantity, QuantityError};
pub use state::{ArticleState, StockKey, StockLevel, evolve};
