//! deploy/alertmanager/alertmanager.yml in a real Alertmanager (Debian's
//! prometheus-alertmanager): alerts posted to its API reach the receiver of
//! their severity, and a critical alert holds back the warnings of its job.
//! Only the receivers' addresses are changed, to a receiver run by the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use serde_json::{Value, json};
use testkit::eventually;

type Got = Arc<Mutex<Vec<(String, Value)>>>;

async fn receive(State(got): State<Got>, Path(receiver): Path<String>, axum::Json(body): axum::Json<Value>) {
    got.lock().unwrap().push((receiver, body));
}

/// The alert names each receiver got.
fn names(got: &Got, receiver: &str) -> Vec<String> {
    let got = got.lock().unwrap();
    let mut names: Vec<String> = got
        .iter()
        .filter(|(r, _)| r == receiver)
        .flat_map(|(_, body)| body["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["labels"]["alertname"].as_str().unwrap_or(""), a["labels"]["job"].as_str().unwrap_or("")))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn alertmanager_routes_each_severity_to_its_receiver_and_inhibits_warnings_under_a_critical() -> anyhow::Result<()> {
    let got: Got = Arc::default();
    let app = axum::Router::new().route("/{receiver}", axum::routing::post(receive)).with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hooks = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/alertmanager/alertmanager.yml");
    let config = std::fs::read_to_string(deploy)?.replace("http://alert-receiver:5001", &hooks);
    let dir = std::env::temp_dir().join(format!("erp-alertmanager-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("alertmanager.yml"), config)?;
    let port = testkit::free_port();
    let _alertmanager = tokio::process::Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", dir.join("alertmanager.yml").display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus-alertmanager runs (scripts/infra.sh up-test installs it)");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "Alertmanager to be ready", || async {
        http.get(format!("{base}/-/ready")).send().await.ok()?.status().is_success().then_some(())
    })
    .await?;

    let alert = |name: &str, severity: &str, job: &str| {
        json!({"labels": {"alertname": name, "severity": severity, "job": job}, "annotations": {"summary": name}})
    };
    let alerts = json!([
        alert("TargetDown", "critical", "notifier"),
        alert("WebhookEndpointFailing", "warning", "notifier"),
        alert("ProjectionLagHigh", "warning", "projector"),
        alert("WebhookEndpointDisabled", "info", "worker"),
    ]);
    let r = http.post(format!("{base}/api/v2/alerts")).json(&alerts).send().await?;
    assert!(r.status().is_success(), "{}", r.status());

    // Critical after its 10 s group wait; warning and info after 30 s.
    eventually(Duration::from_secs(60), "every receiver to be notified", || async {
        (!names(&got, "on-call").is_empty() && !names(&got, "team").is_empty() && !names(&got, "digest").is_empty()).then_some(())
    })
    .await?;
    assert_eq!(names(&got, "on-call"), ["TargetDown/notifier"]);
    assert_eq!(names(&got, "digest"), ["WebhookEndpointDisabled/worker"]);
    // The warning of the job whose target is down is held back (Alertmanager
    // says by what); the other goes to the team.
    let state: Vec<Value> = http.get(format!("{base}/api/v2/alerts")).send().await?.json().await?;
    let held = state.iter().find(|a| a["labels"]["alertname"] == "WebhookEndpointFailing").unwrap();
    assert_eq!(held["status"]["state"], "suppressed", "{held}");
    assert_eq!(held["status"]["inhibitedBy"].as_array().map(Vec::len), Some(1), "{held}");
    assert_eq!(names(&got, "team"), ["ProjectionLagHigh/projector"]);
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
