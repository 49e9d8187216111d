//! Run-time building blocks shared by the command-service, the projector and the
//! query-service: typed settings from the environment, logging, shutdown, HTTP
//! serving with health endpoints and problem+json errors, and the settings and
//! clients of PostgreSQL, Kafka and Redis.
//!
//! Nothing here knows the warehouse domain; that is the `events` crate.

pub mod auth;
pub mod csv;
pub mod db;
pub mod health;
pub mod http;
pub mod jobs;
pub mod kafka;
pub mod metrics;
pub mod openapi;
pub mod ownership;
pub mod problem;
pub mod redis;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
