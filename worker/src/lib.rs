//! The worker: claims the jobs the command-service queues in PostgreSQL
//! (`platform::jobs`) and runs them — bulk imports ([`import`]), reports
//! ([`report`]) and the self-test ([`selftest`]) — with a lease it renews
//! while it works ([`runner`]). Any number of workers may run; a job has one
//! at a time, and one that dies hands its job on when its lease runs out.
//! Serves `/health`, `/ready` and `/metrics` (default port 8084).

pub mod import;
pub mod report;
pub mod runner;
pub mod selftest;
pub mod settings;
pub mod startup;

pub use settings::Settings;
pub use startup::Application;
