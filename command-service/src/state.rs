//! What every handler can reach: the executor of commands, the pool and
//! the limits of job submissions.

use std::sync::Arc;

use sqlx::PgPool;

use crate::execute::Executor;
use crate::settings::JobsSettings;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub executor: Arc<Executor>,
    pub pool: PgPool,
    /// Limits of job submissions.
    pub jobs: Arc<JobsSettings>,
    /// Whether webhook URLs may name private addresses.
    pub webhooks: Arc<crate::settings::WebhooksSettings>,
}

