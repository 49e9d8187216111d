//! `Idempotency-Key`: a retry with the same key and body returns the original
//! response and appends nothing; the same key with another body is a 422.
//!
//! A middleware looks the key up before the handler runs and answers a known
//! key itself. A new key travels with the command into the transaction that
//! appends its events, which claims the key first and records the response
//! with the events: of two requests with one key that race, only the first
//! claims it; the second answers with the first one's recorded response. Only
//! accepted commands are recorded; a refused one (4xx) can be retried with the
//! same key.

pub mod key;
pub mod middleware;
