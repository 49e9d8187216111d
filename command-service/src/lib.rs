//! The command-service: the HTTP write API of the stock back end.
//!
//! A command is validated, decided against the current state of its article
//! stream with [`events::decide`], and its events are appended together with
//! their outbox rows in one PostgreSQL transaction ([`store`]). The outbox
//! [`relay`] then publishes them to Kafka in commit order; [`republish`]
//! rebuilds a lost topic from the event store.

pub mod bulk;
pub mod error;
pub mod execute;
pub mod idempotency;
pub mod import;
pub mod jobs;
pub mod relay;
pub mod republish;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;
pub mod webhooks;

pub use settings::Settings;
pub use startup::{Application, router};
pub use state::AppState;
