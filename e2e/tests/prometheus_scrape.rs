//! A real Prometheus (Debian's package, as installed by scripts/infra.sh
//! up-test) scrapes the four running services with the project's alert
//! rules: every target is up and the key series exist.

use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

struct Prometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_prometheus(targets: &[(&str, &str)]) -> anyhow::Result<Prometheus> {
    let dir = std::env::temp_dir().join(format!("erp-prometheus-{}", uuid_like()));
    std::fs::create_dir_all(&dir)?;
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml").canonicalize()?;
    let mut config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n",
        rules.display()
    );
    for (job, target) in targets {
        config.push_str(&format!("  - job_name: {job}\n    static_configs:\n      - targets: [\"{target}\"]\n"));
    }
    std::fs::write(dir.join("prometheus.yml"), config)?;
    let port = testkit::free_port();
    let child = std::process::Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting prometheus (scripts/infra.sh up-test installs it): {e}"))?;
    Ok(Prometheus { child, dir, url: format!("http://127.0.0.1:{port}") })
}

fn uuid_like() -> String {
    format!("{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_every_service_and_sees_the_key_series() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let worker = Service::start("worker", &env, &[]).await?;
    let notifier = Service::start("notifier", &env, &[]).await?;
    let http = e2e::http();
    let r = http
        .post(format!("{}/articles", command.base_url))
        .json(&json!({ "article": "ART-S", "name": "n", "category": "c", "unit": { "code": "pcs" } }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    http.get(format!("{}/articles/ART-S/stock", query.base_url)).send().await?;

    let host = |s: &Service| s.base_url.trim_start_matches("http://").to_owned();
    let (c, p, q, w, n) = (host(&command), host(&projector), host(&query), host(&worker), host(&notifier));
    let prometheus =
        start_prometheus(&[("command-service", &c), ("projector", &p), ("query-service", &q), ("worker", &w), ("notifier", &n)])?;
    let api = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.ok()?.json::<Value>().await.ok() }
    };

    let up = eventually(Duration::from_secs(60), "every target up", || async {
        let body = api(format!("{}/api/v1/query?query=up", prometheus.url)).await?;
        let results = body["data"]["result"].as_array()?.clone();
        (results.len() == 5 && results.iter().all(|r| r["value"][1] == "1")).then_some(results)
    })
    .await?;
    assert_eq!(up.len(), 5);

    for (series, job) in [
        ("erp_http_requests_total", "command-service"),
        ("erp_db_query_count", "command-service"),
        ("erp_outbox_backlog", "command-service"),
        ("erp_kafka_produce_duration_seconds_count", "command-service"),
        ("erp_events_applied_total", "projector"),
        ("erp_db_pool_connections", "projector"),
        ("erp_projector_partitions_owned", "projector"),
        ("erp_projector_partitions_unowned", "projector"),
        ("erp_http_requests_total", "query-service"),
        ("process_resident_memory_bytes", "query-service"),
        ("erp_jobs", "worker"),
        ("erp_jobs_oldest_due_seconds", "worker"),
        ("erp_webhook_endpoints", "notifier"),
        ("erp_webhook_oldest_pending_seconds", "notifier"),
        ("erp_redis_breaker_open", "query-service"),
    ] {
        let query = format!("{}/api/v1/query?query={series}{{job=\"{job}\"}}", prometheus.url);
        eventually(Duration::from_secs(30), &format!("{series} of {job}"), || async {
            let body = api(query.clone()).await?;
            (!body["data"]["result"].as_array()?.is_empty()).then_some(())
        })
        .await?;
    }

    let rules = api(format!("{}/api/v1/rules", prometheus.url)).await.expect("rules");
    let loaded: usize = rules["data"]["groups"].as_array().unwrap().iter().map(|g| g["rules"].as_array().unwrap().len()).sum();
    assert_eq!(loaded, 20, "the alert rules are loaded");

    drop(prometheus);
    for service in [notifier, worker, query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
