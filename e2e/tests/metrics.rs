//! `/metrics` on every service: request counts by route template (never the
//! raw path), database statements by name, pool gauges, slow queries.

use e2e::Service;
use serde_json::json;
use testkit::TestEnv;

async fn scrape(http: &reqwest::Client, service: &Service) -> anyhow::Result<String> {
    let response = http.get(format!("{}/metrics", service.base_url)).send().await?;
    anyhow::ensure!(response.status() == 200, "{} /metrics: {}", service.name, response.status());
    Ok(response.text().await?)
}

fn has(text: &str, series: &str, labels: &[&str]) -> bool {
    text.lines().any(|l| l.starts_with(series) && labels.iter().all(|label| l.contains(label)))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_exposes_request_query_and_pool_metrics_by_template() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let slow = [("APP_DATABASE__SLOW_QUERY_MS", "0".to_owned()), ("APP_RELAY__ENABLED", "false".to_owned())];
    let command = Service::start("command-service", &env, &slow).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let http = e2e::http();

    let article = json!({ "article": "ART-M", "name": "n", "category": "c", "unit": { "code": "pcs" } });
    assert_eq!(http.post(format!("{}/articles", command.base_url)).json(&article).send().await?.status(), 201);
    assert_eq!(http.get(format!("{}/articles/ART-M/stock", query.base_url)).send().await?.status(), 404);

    let text = scrape(&http, &command).await?;
    assert!(has(&text, "erp_http_requests_total", &[r#"route="/articles""#, r#"method="POST""#, r#"status="201""#]), "{text}");
    assert!(has(&text, "erp_http_request_duration_seconds_bucket", &[r#"route="/articles""#]));
    assert!(has(&text, "erp_db_query_count", &[r#"query="append_batch""#, r#"outcome="ok""#]));
    assert!(has(&text, "erp_db_query_duration_seconds_count", &[r#"query="append_batch""#]));
    assert!(has(&text, "erp_db_slow_queries_total", &[r#"query="append_batch""#]), "a threshold of 0 makes every statement slow");
    assert!(has(&text, "erp_db_pool_connections", &[r#"state="idle""#]));

    let text = scrape(&http, &query).await?;
    assert!(has(&text, "erp_http_requests_total", &[r#"route="/articles/{article}/stock""#, r#"status="404""#]), "{text}");
    assert!(!text.contains("ART-M"), "no raw path in any label");
    assert!(has(&text, "erp_db_query_count", &[r#"query="document_by_key""#]));

    let text = scrape(&http, &projector).await?;
    assert!(has(&text, "erp_db_pool_connections", &[r#"state="in_use""#]));

    for service in [projector, query, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipeline_reports_produce_latency_backlog_applied_events_and_lag() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let http = e2e::http();
    let post = |path: &str, body: serde_json::Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    let r = post("/articles", json!({ "article": "ART-P", "name": "n", "category": "c", "unit": { "code": "pcs" } })).await?;
    assert_eq!(r.status(), 201);
    let r = post("/articles/ART-P/charges", json!({ "charge": "L1", "production_date": "2026-11-01" })).await?;
    assert_eq!(r.status(), 201);

    // The statistics that carry the lag arrive every 5 s.
    let text = testkit::eventually(std::time::Duration::from_secs(30), "the projector's metrics", || async {
        let text = scrape(&http, &projector).await.ok()?;
        (has(&text, "erp_events_applied_total", &[r#"type="ChargeRegistered""#])
            && has(&text, "erp_projector_lag_offsets", &[r#"partition=""#]))
        .then_some(text)
    })
    .await?;
    assert!(has(&text, "erp_events_applied_total", &[r#"type="ArticleRegistered""#]), "{text}");
    assert!(has(&text, "erp_projector_lag_seconds", &[r#"partition=""#]), "{text}");

    let text = scrape(&http, &command).await?;
    assert!(has(&text, "erp_kafka_produce_duration_seconds_count", &[]), "{text}");
    assert!(has(&text, "erp_outbox_backlog", &[]), "{text}");
    assert!(has(&text, "erp_outbox_oldest_age_seconds", &[]), "{text}");

    for service in [projector, command] {
        service.stop().await?;
    }
    Ok(())
}
