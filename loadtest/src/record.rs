//! Every arrival's outcome: which operation, when it was due, how long from
//! then until its answer, and the answer's status. Kept whole (16 bytes
//! each) and summarised afterwards, so percentiles are exact.

use std::sync::Mutex;
use std::time::Instant;

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// An HTTP answer (the last one, after a client's retries).
    Http(u16),
    /// No answer: a broken connection or the client's timeout.
    Transport,
    /// A read-your-write read that did not show the write.
    Stale,
    /// Not sent: the generator already had its most requests in flight
    /// (the system is far behind; counted as an error, never left out).
    Dropped,
}

impl Status {
    pub(crate) fn code(self) -> u16 {
        match self {
            Self::Http(code) => code,
            Self::Transport => 0,
            Self::Stale => 2,
            Self::Dropped => 1,
        }
    }

    /// A failure of the system: a 5xx, no answer, a stale read, a dropped
    /// arrival, a 429 the client's retries did not get past. A refusal by a
    /// rule (404, 409, 422) is the system working.
    pub(crate) fn is_error(code: u16) -> bool {
        code < 100 || code == 429 || code >= 500
    }

    pub(crate) fn name(code: u16) -> String {
        match code {
            0 => "no answer".into(),
            1 => "dropped".into(),
            2 => "stale read".into(),
            code => code.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it was due, in seconds since the run started.
    pub(crate) due: f32,
    pub(crate) latency_us: u32,
    pub(crate) status: u16,
    pub(crate) op: u8,
}

#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) start: Instant,
    samples: Mutex<Vec<Sample>>,
}

impl Recorder {
    pub(crate) fn new(start: Instant) -> Self {
        Self { start, samples: Mutex::new(Vec::with_capacity(1 << 20)) }
    }

    pub(crate) fn record(&self, op: crate::users::Op, scheduled: Instant, status: Status) {
        let latency = scheduled.elapsed();
        let sample = Sample {
            due: scheduled.saturating_duration_since(self.start).as_secs_f32(),
            latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
            status: status.code(),
            op: op as u8,
        };
        self.samples.lock().expect("samples").push(sample);
    }

    /// p99 (ms) and share of errors of the arrivals due in [from, to) seconds.
    pub(crate) fn window(&self, from: f64, to: f64) -> (f64, f64) {
        let samples = self.samples.lock().expect("samples");
        let mut latencies: Vec<u32> = Vec::new();
        let mut errors = 0usize;
        for s in samples.iter().filter(|s| f64::from(s.due) >= from && f64::from(s.due) < to) {
            latencies.push(s.latency_us);
            errors += usize::from(Status::is_error(s.status));
        }
        drop(samples);
        latencies.sort_unstable();
        let share = if latencies.is_empty() { 0.0 } else { errors as f64 / latencies.len() as f64 };
        (f64::from(percentile(&latencies, 0.99)) / 1000.0, share)
    }

    pub(crate) fn take(&self) -> Vec<Sample> {
        std::mem::take(&mut *self.samples.lock().expect("samples"))
    }
}

/// Percentile `q` (0..=1) of sorted `values` (nearest rank); 0 when empty.
pub(crate) fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::{Status, percentile};

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.99), 0);
    }

    #[test]
    fn refusals_are_not_errors_but_5xx_and_missing_answers_are() {
        for ok in [200, 201, 304, 404, 409, 422] {
            assert!(!Status::is_error(ok), "{ok}");
        }
        for bad in [500, 503, 504, 429, Status::Transport.code(), Status::Dropped.code(), Status::Stale.code()] {
            assert!(Status::is_error(bad), "{bad}");
        }
    }
}
