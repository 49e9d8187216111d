//! The query-service: serves the read models the projector maintains.
//!
//! Documents are stored pre-serialised, so a request does no computation: the
//! bytes come from memory, from Redis, or from PostgreSQL, and are returned
//! as they are; lists are computed from indexed rows once and then served
//! from memory until the projector announces a change. See docs/queries.md.

pub mod cache;
pub mod coalesce;
pub mod consistency;
pub mod cursor;
pub mod end_offsets;
pub mod error;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod state;
pub mod store;

pub use settings::Settings;
pub use startup::{Application, router};
pub use state::AppState;
