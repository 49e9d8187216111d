//! One module per read-model table. Each holds the table's row type, the
//! statements that write it (built once per generation, with their bind
//! code) and the queries that read it (plain `async fn`s). The DDL of every
//! table is in `create_read_model()`
//! (`migrations/20261122000006_read_model_generations.sql`), which says for
//! each index which query it serves.

pub mod articles;
pub mod categories;
pub mod charges;
pub mod dead_letters;
pub mod documents;
pub mod low_stock;
pub mod movements;
pub mod offsets;
pub mod redis_outbox;
pub mod reservations;
pub mod streams;

use crate::Generation;

/// A statement bound to its arguments, for the caller to execute.
pub type Query<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// The projector's statements for one generation, every table's, built once
/// (the schema is part of every table name).
#[derive(Debug, Clone)]
pub struct Statements {
    pub generation: Generation,
    pub streams: streams::Statements,
    pub articles: articles::Statements,
    pub low_stock: low_stock::Statements,
    pub charges: charges::Statements,
    pub reservations: reservations::Statements,
    pub movements: movements::Statements,
    pub categories: categories::Statements,
    pub documents: documents::Statements,
    pub offsets: offsets::Statements,
    pub dead_letters: dead_letters::Statements,
    pub redis_outbox: redis_outbox::Statements,
}

impl Statements {
    pub fn new(generation: Generation) -> Self {
        let s = generation.schema.as_str();
        Self {
            streams: streams::Statements::new(s),
            articles: articles::Statements::new(s),
            low_stock: low_stock::Statements::new(s),
            charges: charges::Statements::new(s),
            reservations: reservations::Statements::new(s),
            movements: movements::Statements::new(s),
            categories: categories::Statements::new(s),
            documents: documents::Statements::new(s),
            offsets: offsets::Statements::new(s),
            dead_letters: dead_letters::Statements::new(s),
            redis_outbox: redis_outbox::Statements::new(s),
            generation,
        }
    }
}
