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
    assert!(rules.contains("15 rules found"), "{rules}");
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
