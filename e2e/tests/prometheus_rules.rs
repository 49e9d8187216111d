//! deploy/prometheus is valid for Prometheus, and every alert fires when it
//! should and not otherwise (promtool's rule unit tests in alerts_test.yml).

use std::path::PathBuf;
use std::process::Command;

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool runs (scripts/infra.sh up-test installs Debian's prometheus package)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_prometheus_config_and_the_alert_rules_are_valid() {
    promtool(&["check", "config", "prometheus.yml"]);
    let rules = promtool(&["check", "rules", "alerts.yml"]);
    assert!(rules.contains("20 rules found"), "{rules}");
}

#[test]
fn every_alert_has_a_unit_test_and_they_pass() {
    promtool(&["test", "rules", "alerts_test.yml"]);
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy().join("alerts_test.yml")).unwrap();
    for line in rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")) {
        assert!(tests.contains(&format!("alertname: {line}")), "alert {line} has no unit test");
    }
}

fn amtool(args: &[&str]) -> String {
    let output = Command::new("amtool")
        .args(args)
        .current_dir(deploy().join("../alertmanager"))
        .output()
        .expect("amtool runs (scripts/infra.sh up-test installs Debian's prometheus-alertmanager package)");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "amtool {args:?} failed:\n{text}");
    text
}

#[test]
fn the_alertmanager_config_is_valid_and_routes_every_severity_the_rules_use() {
    let checked = amtool(&["check-config", "alertmanager.yml"]);
    assert!(checked.contains("SUCCESS"), "{checked}");
    let rules = std::fs::read_to_string(deploy().join("alerts.yml")).unwrap();
    let severities: std::collections::BTreeSet<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("severity: ")).collect();
    assert_eq!(severities.iter().copied().collect::<Vec<_>>(), ["critical", "info", "warning"]);
    for (severity, receiver) in [("critical", "on-call"), ("warning", "team"), ("info", "team-digest")] {
        let routed = amtool(&["config", "routes", "test", "--config.file=alertmanager.yml", &format!("severity={severity}")]);
        assert_eq!(routed.lines().find(|l| !l.starts_with("Warning")).map(str::trim), Some(receiver), "{severity}: {routed}");
    }
    let prometheus = std::fs::read_to_string(deploy().join("prometheus.yml")).unwrap();
    assert!(prometheus.contains("alertmanager:9093"), "Prometheus sends its alerts to the Alertmanager of docker-compose.yml");
}
