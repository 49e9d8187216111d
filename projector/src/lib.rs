//! The projector: consumes the events topic and maintains the read models in
//! PostgreSQL and Redis.
//!
//! Instances share the topic's partitions through PostgreSQL advisory locks
//! ([`ownership`]), so a crashed instance's partitions are taken over at
//! once on any broker; readiness says whether the instance is doing its job
//! ([`progress`]).
//!
//! Each batch of records is applied in one PostgreSQL transaction together with
//! the consumed offset of every partition it covers ([`apply`]), so a crash
//! never applies a record twice or loses one; events at or below a stream's last
//! applied sequence are skipped, so redelivery is harmless. Every read model is
//! derived from the stream states the domain's own fold produces
//! ([`projection`]); states this process does not hold are restored from the
//! stored rows ([`restore`]); the tables and their SQL are
//! [`readmodel::tables`].
//! After the commit the changed documents go to Redis and their tags are
//! published for the query-services' caches ([`sink`]). Poison records are
//! parked and halt only their stream ([`dead_letters`]); the read models are
//! rebuilt blue/green into a new generation ([`rebuild`]).
//! See docs/projections.md.

pub mod apply;
pub mod batch;
pub mod cache;
pub mod consumer;
pub mod dead_letters;
pub mod documents;
pub mod lanes;
pub mod ownership;
pub mod progress;
pub mod projection;
pub mod rebuild;
pub mod record;
pub mod restore;
pub mod settings;
pub mod sink;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
