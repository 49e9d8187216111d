//! What every handler can reach: the executor of commands and the pool.

use std::sync::Arc;

use sqlx::PgPool;

use crate::execute::Executor;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub executor: Arc<Executor>,
    pub pool: PgPool,
}

