//! Rate limits per principal: the generic cell rate algorithm (GCRA), one
//! atomic per principal. A request is admitted when the principal's
//! theoretical arrival time is no more than the burst ahead of now; it then
//! moves on by one interval. No timer, no refill task, no lock: a check is a
//! load and a compare-and-swap on the principal's own counter, reached
//! through the cached credential (no map lookup per request).
//!
//! Limits are per instance (see [`super::AuthSettings::rate_limits`]): a
//! shared counter in Redis would put a network round trip on every request,
//! and the limit is there to stop one misbehaving client from taking an
//! instance's capacity, which a per-instance limit does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Role, Roles, UnknownRole};

/// The counter of one principal.
#[derive(Debug)]
pub struct Limiter {
    /// Nanoseconds between two requests at the sustained rate; 0: no limit.
    interval: u64,
    /// Nanoseconds of requests that may arrive at once beyond the rate.
    burst: u64,
    /// The theoretical arrival time of the next request, in nanoseconds since [`epoch`].
    tat: AtomicU64,
}

/// The clock's origin, shared by every limiter of the process.
fn epoch() -> Instant {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    *EPOCH
}

impl Limiter {
    /// `per_second` requests a second, `burst_secs` seconds' worth at once.
    pub fn new(per_second: f64, burst_secs: f64) -> Self {
        if per_second <= 0.0 {
            return Self::unlimited();
        }
        let interval = (1e9 / per_second).max(1.0) as u64;
        let burst = (burst_secs.max(0.0) * 1e9) as u64;
        Self { interval, burst, tat: AtomicU64::new(0) }
    }

    pub fn unlimited() -> Self {
        Self { interval: 0, burst: 0, tat: AtomicU64::new(0) }
    }

    /// Admits a request now, or says how long until one would be admitted.
    pub fn check(&self) -> Result<(), Duration> {
        self.check_at(epoch().elapsed().as_nanos() as u64)
    }

    fn check_at(&self, now: u64) -> Result<(), Duration> {
        if self.interval == 0 {
            return Ok(());
        }
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now) + self.interval;
            // The request is admitted when it fits in the burst window.
            if next - now > self.burst + self.interval {
                return Err(Duration::from_nanos(next - now - self.burst - self.interval));
            }
            match self.tat.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

/// The configured rates by role, and the limiter of every principal seen
/// (kept so that a principal's count survives the expiry of its cached
/// credential).
#[derive(Debug)]
pub struct Limits {
    rates: Vec<(Role, f64)>,
    burst_secs: f64,
    limiters: Mutex<HashMap<String, Arc<Limiter>>>,
}

impl Limits {
    /// Parses `reader=2000,writer=1000` (requests per second by role).
    pub fn parse(rates: &str, burst_secs: f64) -> Result<Self, LimitError> {
        let rates = rates
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|pair| {
                let (role, rate) = pair.split_once('=').ok_or_else(|| LimitError::Syntax(pair.to_owned()))?;
                let rate: f64 = rate.trim().parse().map_err(|_| LimitError::Syntax(pair.to_owned()))?;
                if !rate.is_finite() || rate < 0.0 {
                    return Err(LimitError::Syntax(pair.to_owned()));
                }
                Ok((Role::parse(role.trim())?, rate))
            })
            .collect::<Result<_, LimitError>>()?;
        Ok(Self { rates, burst_secs, limiters: Mutex::default() })
    }

    /// The rate of a principal with `roles`: the highest of theirs; 0 (no
    /// limit) when one of its roles is unlimited.
    pub fn rate(&self, roles: Roles) -> f64 {
        let mut highest: f64 = 0.0;
        for role in roles.iter() {
            match self.rates.iter().find(|(r, _)| *r == role) {
                Some((_, rate)) if *rate > 0.0 => highest = highest.max(*rate),
                _ => return 0.0,
            }
        }
        highest
    }

    /// The limiter of the principal `key` (its actor), created on first use.
    pub fn limiter(&self, key: &str, roles: Roles) -> Arc<Limiter> {
        let mut limiters = self.limiters.lock().expect("the limiters' lock is never poisoned");
        limiters.entry(key.to_owned()).or_insert_with(|| Arc::new(Limiter::new(self.rate(roles), self.burst_secs))).clone()
    }
}

/// A rate limit setting that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("APP_AUTH__RATE_LIMITS: expected role=requests-per-second, got {0:?}")]
    Syntax(String),
    #[error("APP_AUTH__RATE_LIMITS: {0}")]
    Role(#[from] UnknownRole),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_admitted_then_the_rate_holds_and_a_pause_refills() {
        // 10 per second, a burst of one second's worth beyond the first.
        let limiter = Limiter::new(10.0, 1.0);
        let start = 5 * SECOND;
        let admitted = (0..30).filter(|_| limiter.check_at(start).is_ok()).count();
        assert_eq!(admitted, 11);
        let wait = limiter.check_at(start).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        // One interval later, one more.
        assert!(limiter.check_at(start + SECOND / 10).is_ok());
        assert!(limiter.check_at(start + SECOND / 10).is_err());
        // After a long pause the whole burst is back, no more.
        let later = start + 60 * SECOND;
        assert_eq!((0..30).filter(|_| limiter.check_at(later).is_ok()).count(), 11);
    }

    #[test]
    fn a_principal_gets_the_highest_rate_of_its_roles_and_unlisted_roles_are_unlimited() {
        let limits = Limits::parse("reader=100, writer=10", 1.0).unwrap();
        let roles = |names: &[&str]| Roles::parse(names.iter().copied()).unwrap();
        assert_eq!(limits.rate(roles(&["writer"])), 10.0);
        assert_eq!(limits.rate(roles(&["reader", "writer"])), 100.0);
        assert_eq!(limits.rate(roles(&["writer", "admin"])), 0.0);
        assert!(Limits::parse("reader:5", 1.0).is_err());
        assert!(Limits::parse("root=5", 1.0).is_err());
        assert!(Limiter::unlimited().check().is_ok());
        // One limiter per principal, whatever credential it comes with.
        let a = limits.limiter("api_key:x", roles(&["writer"]));
        assert!(Arc::ptr_eq(&a, &limits.limiter("api_key:x", roles(&["writer"]))));
    }
}
