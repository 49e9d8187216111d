//! The notifier: delivers the stock events and the business alerts derived
//! from them to webhook subscribers (docs/webhooks.md).
//!
//! - [`intake`]: a consumer of the events topic of its own, writing what is
//!   to be delivered together with its offsets in one transaction;
//! - [`messages`]: what is delivered — the events as CloudEvents, and the
//!   alerts folded from them;
//! - [`deliver`]: claims due deliveries, sends them signed ([`sign`]) to
//!   addresses the [`guard`] lets through, retries on a schedule;
//! - [`subscriptions`]: the subscriptions and the delivery log, for the
//!   command-service's admin API.

pub mod deliver;
pub mod guard;
pub mod intake;
pub mod messages;
pub mod metrics;
pub mod settings;
pub mod sign;
pub mod startup;
pub mod subscriptions;

pub use settings::{Settings, WebhookSettings};
pub use startup::Application;
