//! Structured logging with `tracing`.

use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, fmt};

/// How a service logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSettings {
    /// `pretty` for people at a terminal, `json` for log collectors.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `info,projector=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self { format: LogFormat::Pretty, filter: "info".into() }
    }
}

/// Output format of the logs.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Installs the global subscriber. Call once, first thing in `main`. Logs go
/// to standard error: standard output is what an admin command prints
/// (reports, JSON lines) for other programs to read.
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let builder = fmt().with_env_filter(filter).with_target(true).with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
