//! W3C Trace Context (`traceparent`): `00-{trace id: 32 hex}-{parent id: 16 hex}-{flags: 2 hex}`.
//!
//! The command-service takes a request's `traceparent` (or starts a trace
//! when there is none), keeps it with the events the request writes, and
//! the relay puts it on each Kafka record (`ce_traceparent`); the projector,
//! the notifier (and each webhook delivery, as `traceparent`) and the worker
//! continue it: every span of theirs that works on the event records the
//! trace id (`trace_id` in the logs), and what they pass on is a child — the
//! same trace id with a parent id of their own. One trace id thus finds a
//! command from the request to the read model and the receiver
//! (docs/operations.md#traces).

use std::fmt;

/// The header (and CloudEvents attribute) name.
pub const TRACEPARENT: &str = "traceparent";

/// A parsed `traceparent`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// Reads a `traceparent` value; `None` for anything else (all-zero ids
    /// are invalid by the specification). Versions above 00 are read by
    /// their first four fields, as the specification asks.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let parsed = Self {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            parent_id: u64::from_str_radix(parent, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (parsed.trace_id != 0 && parsed.parent_id != 0).then_some(parsed)
    }

    /// A new trace (sampled).
    pub fn root() -> Self {
        Self { trace_id: random_nonzero_u128(), parent_id: random_nonzero_u64(), flags: 1 }
    }

    /// The same trace, from a new span of the caller's.
    pub fn child(&self) -> Self {
        Self { parent_id: random_nonzero_u64(), ..*self }
    }

    /// The trace id as 32 hex digits (what the logs show as `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// A child of `value` when it is a valid `traceparent`.
    pub fn child_of(value: Option<&str>) -> Option<String> {
        value.and_then(Self::parse).map(|t| t.child().to_string())
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{:032x}-{:016x}-{:02x}", self.trace_id, self.parent_id, self.flags)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The trace id of a `traceparent` value, for a span's `trace_id` field
/// (empty when there is none).
pub fn trace_id_of(value: Option<&str>) -> String {
    value.and_then(TraceParent::parse).map(|t| t.trace_id_hex()).unwrap_or_default()
}

fn random_nonzero_u128() -> u128 {
    loop {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system's random generator");
        let n = u128::from_be_bytes(bytes);
        if n != 0 {
            return n;
        }
    }
}

fn random_nonzero_u64() -> u64 {
    (random_nonzero_u128() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_specifications_example() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(value).unwrap();
        assert_eq!(t.to_string(), value);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = t.child();
        assert_eq!((child.trace_id, child.flags), (t.trace_id, 1));
        assert_ne!(child.parent_id, t.parent_id);
    }

    #[test]
    fn refuses_what_the_specification_refuses() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version: its first four fields are read.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
        assert_eq!(TraceParent::root().to_string().len(), 55);
    }
}
