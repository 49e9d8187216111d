//! Keeps what cannot be run here honest. docker-compose.yml (no Docker engine
//! runs here): every part is there and health-checked, and each service sets
//! only settings it actually reads. docs/configuration.md: it names every
//! setting of every service.

use yaml_rust2::{Yaml, YamlLoader};

fn compose() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let text = std::fs::read_to_string(path).expect("docker-compose.yml is readable");
    YamlLoader::load_from_str(&text).expect("docker-compose.yml is YAML").remove(0)
}

fn settings_of_each_service() -> [(&'static str, Vec<String>); 5] {
    [
        ("command-service", platform::settings::env_names::<command_service::Settings>()),
        ("projector", platform::settings::env_names::<projector::Settings>()),
        ("query-service", platform::settings::env_names::<query_service::Settings>()),
        ("worker", platform::settings::env_names::<worker::Settings>()),
        ("notifier", platform::settings::env_names::<notifier::Settings>()),
    ]
}

fn app_variables(service: &Yaml) -> Vec<String> {
    let env = service["environment"].as_hash().expect("environment is a mapping");
    env.keys().filter_map(Yaml::as_str).filter(|k| k.starts_with("APP_")).map(str::to_owned).collect()
}

#[test]
fn every_app_variable_in_the_compose_file_is_a_setting_of_its_service() {
    let doc = compose();
    for (name, known) in settings_of_each_service() {
        let service = &doc["services"][name];
        assert!(!service.is_badvalue(), "service {name} is missing");
        let used = app_variables(service);
        assert!(used.contains(&"APP_DATABASE__URL".to_owned()), "{name} must be pointed at the database");
        for var in used {
            // `APP_X_FILE`: the setting `APP_X` read from a file.
            let setting = var.strip_suffix("_FILE").filter(|s| known.iter().any(|k| k == s)).unwrap_or(&var);
            assert!(known.iter().any(|k| k == setting), "{name} sets {var}, which it does not read; it reads {known:?}");
        }
    }
}

#[test]
fn the_compose_file_has_the_whole_deployment_with_health_checks() {
    let doc = compose();
    for name in [
        "postgres", "redis", "kafka", "kafka-init", "command-service", "projector", "query-service", "worker", "notifier",
        "prometheus", "alertmanager", "grafana",
    ] {
        assert!(!doc["services"][name].is_badvalue(), "service {name} is missing");
    }
    for name in ["postgres", "redis", "kafka", "command-service", "projector", "query-service", "worker", "notifier", "alertmanager"] {
        assert!(!doc["services"][name]["healthcheck"].is_badvalue(), "{name} has no health check");
    }
    let roles = doc["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str();
    assert_eq!(roles, Some("broker,controller"), "Kafka runs in KRaft mode");
}

#[test]
fn the_topic_created_is_the_topic_the_services_use() {
    let doc = compose();
    let init: Vec<&str> = doc["services"]["kafka-init"]["command"]
        .as_vec()
        .expect("kafka-init has a command list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let after = |flag: &str| init.iter().position(|a| *a == flag).map(|i| init[i + 1]);
    for name in ["command-service", "projector", "notifier"] {
        let env = &doc["services"][name]["environment"];
        assert_eq!(env["APP_KAFKA__EVENTS_TOPIC"].as_str(), after("--topic"), "{name} topic");
        assert_eq!(env["APP_KAFKA__PARTITIONS"].as_str(), after("--partitions"), "{name} partitions");
    }
    // Created to keep its events for good, by the rule the services check at start.
    let configs: Vec<(&str, &str)> =
        init.windows(2).filter(|w| w[0] == "--config").filter_map(|w| w[1].split_once('=')).collect();
    assert!(configs.iter().any(|(k, _)| *k == "retention.ms"), "{configs:?}");
    let mut kafka_defaults = vec![("cleanup.policy", "delete"), ("retention.ms", "604800000"), ("retention.bytes", "-1")];
    kafka_defaults.retain(|(k, _)| !configs.iter().any(|(c, _)| c == k));
    assert_eq!(platform::kafka::retention_problem(configs.iter().copied().chain(kafka_defaults)), None);
}

#[test]
fn the_configuration_reference_names_every_setting() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
    let doc = std::fs::read_to_string(path).expect("docs/configuration.md is readable");
    for (name, known) in settings_of_each_service() {
        for var in known {
            assert!(doc.contains(&format!("`{var}`")), "docs/configuration.md does not describe {var} of {name}");
        }
    }
}

#[test]
fn prometheus_and_grafana_are_provisioned_from_files_that_exist() {
    let doc = compose();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for name in ["prometheus", "alertmanager", "grafana"] {
        for volume in doc["services"][name]["volumes"].as_vec().expect("volumes").iter().filter_map(Yaml::as_str) {
            if let Some(host) = volume.split(':').next().filter(|h| h.starts_with("./")) {
                assert!(root.join(host).exists(), "{name} mounts {host}, which does not exist");
            }
        }
    }
    // Prometheus scrapes every service of the compose file on the port it listens on.
    let config = std::fs::read_to_string(root.join("deploy/prometheus/prometheus.yml")).unwrap();
    for (name, port) in [("command-service", "8081"), ("projector", "8083"), ("query-service", "8082"), ("worker", "8084"), ("notifier", "8085")] {
        assert_eq!(doc["services"][name]["environment"]["APP_HTTP__PORT"].as_str(), Some(port));
        assert!(config.contains(&format!("{name}:{port}")), "prometheus.yml does not scrape {name}:{port}");
    }
    // The dashboard is valid JSON with the panels operators asked for.
    let dashboard: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("deploy/grafana/dashboards/erp-stock.json")).unwrap()).unwrap();
    let titles: Vec<&str> = dashboard["panels"].as_array().unwrap().iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in ["Top 10 slowest", "Requests per second by route", "CPU", "Memory", "Database connections", "Projection lag", "Outbox backlog", "Cache hit rate", "Projector partitions", "Projector stalled", "Jobs by kind and status", "Oldest due job"] {
        assert!(titles.iter().any(|t| t.starts_with(wanted)), "no panel {wanted:?} in {titles:?}");
    }
}
