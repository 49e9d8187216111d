//! The query-service: serves the read models the projector maintains.
//!
//! Documents are stored pre-serialised, so a request does no computation: the
//! bytes come from Redis, or from PostgreSQL when Redis does not have them, and
//! are returned as they are.

pub mod cache;
pub mod consistency;
pub mod documents;
pub mod error;
pub mod routes;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::{AppState, Application, router};
