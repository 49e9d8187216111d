//! Test plans: phases of arrival rates.
//!
//! - `steady`: rising steps (each `step` seconds at one rate), to find the
//!   highest rate that keeps each SLO; stops after a step far past the
//!   documents' SLO;
//! - `ramp`: from nothing to a rate, linearly, to see where it bends;
//! - `spike`: a base rate, three times that rate for 60 s, the base again,
//!   to see how the spike is taken and how long recovery takes;
//! - `soak`: one rate for a long time, to see whether latency or memory drift.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Phase {
    pub(crate) name: String,
    pub(crate) seconds: f64,
    /// Arrivals per second at the start and at the end (linear between).
    pub(crate) from: f64,
    pub(crate) to: f64,
    /// Seconds at the start left out of the phase's figures (the system
    /// settling at a new rate).
    pub(crate) warmup: f64,
}

impl Phase {
    fn constant(name: String, seconds: f64, rate: f64, warmup: f64) -> Self {
        Self { name, seconds, from: rate, to: rate, warmup }
    }

    /// The rate `t` seconds into the phase.
    pub(crate) fn rate_at(&self, t: f64) -> f64 {
        self.from + (self.to - self.from) * (t / self.seconds).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    Steady,
    Ramp,
    Spike,
    Soak,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Ramp => "ramp",
            Self::Spike => "spike",
            Self::Soak => "soak",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Plan {
    pub(crate) kind: Kind,
    pub(crate) phases: Vec<Phase>,
}

impl Plan {
    /// `rates` per second, `step` seconds each (the first 5 s of each a warm-up).
    pub(crate) fn steady(rates: &[f64], step: f64) -> Self {
        let warmup = (step / 6.0).min(5.0);
        let phases = rates.iter().map(|r| Phase::constant(format!("{r}/s"), step, *r, warmup)).collect();
        Self { kind: Kind::Steady, phases }
    }

    pub(crate) fn ramp(to: f64, seconds: f64) -> Self {
        Self { kind: Kind::Ramp, phases: vec![Phase { name: format!("0 to {to}/s"), seconds, from: 0.0, to, warmup: 0.0 }] }
    }

    /// `base` per second for `before` seconds, 3 × `base` for `spike`
    /// seconds, `base` again for `after` seconds.
    pub(crate) fn spike(base: f64, before: f64, spike: f64, after: f64) -> Self {
        let phases = vec![
            Phase::constant("before".into(), before, base, (before / 3.0).min(20.0)),
            Phase::constant("spike".into(), spike, base * 3.0, 0.0),
            Phase::constant("after".into(), after, base, 0.0),
        ];
        Self { kind: Kind::Spike, phases }
    }

    pub(crate) fn soak(rate: f64, seconds: f64) -> Self {
        Self { kind: Kind::Soak, phases: vec![Phase::constant(format!("{rate}/s"), seconds, rate, (seconds / 20.0).min(10.0))] }
    }

    /// Seconds from the start of the run to the start of phase `index`.
    pub(crate) fn offset_of(&self, index: usize) -> f64 {
        self.phases[..index].iter().map(|p| p.seconds).sum()
    }

    pub(crate) fn seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::Plan;

    #[test]
    fn a_spike_is_three_times_the_base_between_two_base_phases() {
        let plan = Plan::spike(100.0, 60.0, 60.0, 120.0);
        let rates: Vec<f64> = plan.phases.iter().map(|p| p.rate_at(1.0)).collect();
        assert_eq!(rates, [100.0, 300.0, 100.0]);
        assert_eq!(plan.offset_of(2), 120.0);
        assert_eq!(plan.seconds(), 240.0);
    }

    #[test]
    fn a_ramp_rises_linearly() {
        let ramp = &Plan::ramp(1000.0, 100.0).phases[0];
        assert_eq!(ramp.rate_at(0.0), 0.0);
        assert_eq!(ramp.rate_at(25.0), 250.0);
        assert_eq!(ramp.rate_at(150.0), 1000.0);
    }
}
