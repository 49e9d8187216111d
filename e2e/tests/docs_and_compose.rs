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

fn settings_of_each_service() -> [(&'static str, Vec<String>); 3] {
    [
        ("command-service", platform::settings::env_names::<command_service::Settings>()),
        ("projector", platform::settings::env_names::<projector::Settings>()),
        ("query-service", platform::settings::env_names::<query_service::Settings>()),
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
            assert!(known.contains(&var), "{name} sets {var}, which it does not read; it reads {known:?}");
        }
    }
}

#[test]
fn the_compose_file_has_the_whole_deployment_with_health_checks() {
    let doc = compose();
    for name in ["postgres", "redis", "kafka", "kafka-init", "command-service", "projector", "query-service"] {
        assert!(!doc["services"][name].is_badvalue(), "service {name} is missing");
    }
    for name in ["postgres", "redis", "kafka", "command-service", "projector", "query-service"] {
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
    for name in ["command-service", "projector"] {
        let env = &doc["services"][name]["environment"];
        assert_eq!(env["APP_KAFKA__EVENTS_TOPIC"].as_str(), after("--topic"), "{name} topic");
        assert_eq!(env["APP_KAFKA__PARTITIONS"].as_str(), after("--partitions"), "{name} partitions");
    }
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
