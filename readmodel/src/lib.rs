//! The read models, one home per table: what each row holds, the statements
//! the projector writes it with, the queries the query-service reads it
//! with, and where its DDL is ([`tables`]); the keys of stored documents and
//! the cache tags a change invalidates ([`keys`]); and the generations the
//! tables live in ([`generation`]).
//!
//! Every table is created per generation (schema `rm_{n}`) by the SQL
//! function `create_read_model()` of the migration
//! `migrations/20261122000006_read_model_generations.sql`, so every
//! statement names its schema at run time. That is also why the read side
//! does not use sqlx's `query!` macros, which check a statement against one
//! fixed schema at build time: `tests/schema.rs` instead creates a
//! generation and prepares every statement of every table against it.
//!
//! Statements are handed out bound and not executed here: the caller runs
//! them (timed, in its own transaction). No axum, no rdkafka: the projector
//! and the query-service both depend on this crate, it on neither.

pub mod audit;
pub mod exports;
pub mod generation;
pub mod keys;
pub mod reports;
pub mod tables;

pub use generation::{Generation, active, serving};
pub use tables::Statements;
