//! The self-test job: takes its steps, reporting progress after each, and
//! fails its first `fail_attempts` attempts on purpose (counted over the
//! job's whole history, so a dead self-test retried by hand goes on where
//! it stopped failing). Operators use it to
//! check that a worker claims, reports, retries on the backoff schedule,
//! goes dead and can be cancelled; the tests use it the same way.

use std::time::Duration;

use command_service::jobs::params::SelftestParams;
use platform::jobs::lease::Claimed;

use crate::runner::{Control, Finished, JobError, Runner};

pub async fn run(runner: &Runner, claimed: &Claimed, control: &Control) -> Result<Finished, JobError> {
    let params: SelftestParams = serde_json::from_value(claimed.job.params.clone())
        .map_err(|e| JobError::Input(format!("bad parameters: {e}")))?;
    control.progress(0, Some(params.steps), "stepping");
    for step in 1..=params.steps {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(params.step_ms)) => {}
            () = control.until_stopped() => return Err(JobError::Stopped),
        }
        control.progress(step, Some(params.steps), "stepping");
    }
    let (failed,): (i64,) =
        sqlx::query_as("select count(*) from job_attempts where job_id = $1 and outcome in ('retry', 'dead')")
            .bind(claimed.job.id)
            .fetch_one(&runner.pool)
            .await?;
    if failed < params.fail_attempts as i64 {
        return Err(JobError::Transient(anyhow::anyhow!(
            "failing attempt {} of the first {} on purpose",
            failed + 1,
            params.fail_attempts
        )));
    }
    Ok(Finished { result: serde_json::json!({ "steps": params.steps, "attempts": claimed.job.attempts }), file: None })
}
