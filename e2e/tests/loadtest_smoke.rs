//! The load test's smoke run: 60 s of the default user mix at a fixed
//! arrival rate against the whole system (every service, debug builds),
//! through the same generator `scripts/loadtest.sh` runs. No timings are
//! asserted (CI machines are shared); what must hold at any speed: no 5xx,
//! no answer missing, no read-your-write read without its write, every
//! accepted command in the event store and served by the query-service at
//! exactly the last accepted sequence of its stream, freshness measured.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::Service;
use serde_json::Value;
use testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn a_minute_of_mixed_users_leaves_no_5xx_and_every_accepted_command_visible() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let mut services = Vec::new();
    for name in ["command-service", "projector", "query-service", "worker", "notifier"] {
        services.push(Service::start(name, &env, &[]).await?);
    }
    let (command, query) = (services[0].base_url.clone(), services[2].base_url.clone());
    let out = std::env::temp_dir().join(format!("erp-loadtest-smoke-{}", env.id));
    let accepted = out.join("accepted.json");
    let output = e2e::admin_command("loadtest", &env, &[])
        .args(["soak", "--duration", "60s", "--rate", "25", "--articles", "300", "--probe-every", "0.5"])
        .args(["--command-url", &command, "--query-url", &query, "--database-url", &env.database.url, "--key", e2e::TEST_KEY])
        .arg("--out")
        .arg(&out)
        .arg("--accepted")
        .arg(&accepted)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the load test failed ({}):\n{stdout}\n{stderr}", output.status);

    let results: Value = serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for op in results["operations"].as_array().expect("operations") {
        for (status, n) in op["statuses"].as_object().expect("statuses") {
            *statuses.entry(status.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
    let total: u64 = statuses.values().sum();
    assert!(total > 1000, "the run made {total} arrivals: {statuses:?}");
    let failed: Vec<_> = statuses.iter().filter(|(s, _)| s.starts_with('5') || ["no answer", "stale read", "dropped"].contains(&s.as_str())).collect();
    assert!(failed.is_empty(), "failures during the run: {failed:?} of {statuses:?}\n{stdout}");
    for expected in ["200", "201", "304"] {
        assert!(statuses.contains_key(expected), "no {expected} in {statuses:?}");
    }
    assert!(results["accepted_commands"].as_u64().unwrap_or(0) > 100, "{}", results["accepted_commands"]);
    assert!(results["freshness"]["count"].as_u64().unwrap_or(0) >= 20, "freshness not measured: {}", results["freshness"]);
    assert!(results["freshness"]["p50"].as_f64().unwrap_or(0.0) > 0.0);
    assert!(!results["timeline"].as_array().expect("timeline").is_empty());
    let sampled = results["system"].as_array().expect("system samples");
    assert!(sampled.len() >= 50, "{} system samples", sampled.len());
    assert!(sampled.iter().any(|s| s["processes"]["query-service"]["rss_mb"].as_f64().unwrap_or(0.0) > 0.0));

    // Checked here, independently of the generator: the event store and the
    // query-service both stand at the last accepted sequence of every stream.
    let heads: BTreeMap<String, u64> = serde_json::from_slice(&std::fs::read(&accepted)?)?;
    assert!(heads.len() > 50, "{} streams written", heads.len());
    let pool = env.pool().await?;
    let stored: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>("select stream_id, max(sequence) from events group by stream_id")
        .fetch_all(&pool)
        .await?
        .into_iter()
        .collect();
    for (stream, head) in &heads {
        assert_eq!(stored.get(stream).copied(), Some(*head as i64), "{stream}: accepted up to {head}");
    }
    e2e::check::relayed(&pool).await?;
    e2e::check::visible(&query, &heads, Duration::from_secs(60)).await?;
    for service in services.into_iter().rev() {
        service.stop().await?;
    }
    let _ = std::fs::remove_dir_all(out);
    Ok(())
}
