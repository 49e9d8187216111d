//! The projector: consumes the events topic and maintains the read models in
//! PostgreSQL and Redis.
//!
//! Each batch of records is applied in one PostgreSQL transaction together with
//! the consumed offset of every partition it covers ([`apply`]), so a crash
//! never applies a record twice or loses one; events at or below a stream's last
//! applied sequence are skipped, so redelivery is harmless. After the commit the
//! changed documents go to Redis and their tags are published for the
//! query-services' caches ([`sink`]).

pub mod apply;
pub mod consumer;
pub mod documents;
pub mod settings;
pub mod sink;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
