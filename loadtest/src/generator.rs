//! The open-loop generator: arrivals at a fixed rate (a Poisson process
//! whose rate the plan sets for every moment), each started at its due time
//! whatever the earlier ones are doing, and timed from its due time to its
//! answer. A slow answer therefore never holds back the next arrival, and
//! the time an arrival waits because the generator itself fell behind counts
//! as latency: coordinated omission cannot flatter the tail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::dice::Dice;
use crate::plan::Plan;
use crate::record::Status;
use crate::users::{Op, World};

/// Runs `plan` against `world`. After each phase, `go_on` decides from the
/// phase's index whether to run the next one (a capacity search stops after
/// the first rate far past the SLO). Returns when every arrival is answered
/// or has waited `drain`.
pub(crate) async fn run(world: Arc<World>, plan: &Plan, max_in_flight: usize, seed: u64, drain: Duration, go_on: impl Fn(usize) -> bool) -> usize {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut dice = Dice::new(seed);
    let mut next = world.recorder.start;
    let mut phases_run = 0;
    for (index, phase) in plan.phases.iter().enumerate() {
        let phase_start = world.recorder.start + Duration::from_secs_f64(plan.offset_of(index));
        let phase_end = phase_start + Duration::from_secs_f64(phase.seconds);
        next = next.max(phase_start);
        loop {
            let into = next.saturating_duration_since(phase_start).as_secs_f64();
            // At least one arrival every two seconds, so a ramp from zero starts.
            let rate = phase.rate_at(into).max(0.5);
            next += Duration::from_secs_f64(dice.exponential(rate));
            if next >= phase_end {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
            if in_flight.load(Ordering::Relaxed) >= max_in_flight {
                world.recorder.record(Op::NotSent, next, Status::Dropped);
                continue;
            }
            in_flight.fetch_add(1, Ordering::Relaxed);
            let (world, in_flight, due) = (world.clone(), in_flight.clone(), next);
            let mut user = Dice::new(dice.next_u64());
            tokio::spawn(async move {
                world.act(&mut user, due).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        tokio::time::sleep_until(phase_end.into()).await;
        phases_run = index + 1;
        if !go_on(index) {
            break;
        }
    }
    let deadline = Instant::now() + drain;
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    phases_run
}
