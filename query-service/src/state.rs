//! The state every handler reaches: the document store (Redis and
//! PostgreSQL), the in-process cache, the settings handlers read, and the
//! broker's end offsets for the projection status.

use std::sync::Arc;

use crate::cache::DocumentCache;
use crate::end_offsets::EndOffsets;
use crate::settings::{ConsistencySettings, PageSettings};
use crate::store::DocumentStore;

/// What every handler can reach. One reference count per request: axum
/// clones the state into every handler.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<Shared>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<DocumentStore>,
    pub cache: Arc<DocumentCache>,
    pub consistency: ConsistencySettings,
    pub pages: PageSettings,
    pub end_offsets: Arc<EndOffsets>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

