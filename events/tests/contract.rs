//! The events on Kafka are a public contract. Their JSON Schemas, generated from
//! the Rust types, are checked in under `events/schemas/` and must match the
//! code (regenerate with `UPDATE_SCHEMAS=1 cargo test -p events --test contract`
//! and review the diff); events written by older versions, kept under
//! `events/samples/`, must still load.

use std::path::PathBuf;

use events::{Event, RecordedEvent};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn expected_schemas() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Event::schemas()
        .into_iter()
        .map(|(name, version, schema)| (format!("{name}.v{version}.json"), pretty(&schema)))
        .collect();
    files.push(("envelope.json".into(), pretty(&schemars::schema_for!(RecordedEvent))));
    files
}

fn pretty(schema: &schemars::Schema) -> String {
    serde_json::to_string_pretty(schema).expect("a schema serialises") + "\n"
}

#[test]
fn the_checked_in_json_schemas_match_the_event_types() {
    let schemas = dir("schemas");
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        for entry in std::fs::read_dir(&schemas).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (file, text) in expected_schemas() {
            std::fs::write(schemas.join(file), text).unwrap();
        }
    }
    let expected = expected_schemas();
    for (file, text) in &expected {
        let stored = std::fs::read_to_string(schemas.join(file))
            .unwrap_or_else(|_| panic!("events/schemas/{file} is missing; run with UPDATE_SCHEMAS=1"));
        assert_eq!(&stored, text, "events/schemas/{file} is stale; run with UPDATE_SCHEMAS=1 and review the diff");
    }
    let stored = std::fs::read_dir(&schemas).unwrap().count();
    assert_eq!(stored, expected.len(), "events/schemas/ holds files for types that no longer exist");
}

#[test]
fn every_checked_in_older_event_still_loads() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir("samples")).unwrap() {
        let path = entry.unwrap().path();
        let record: RecordedEvent = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record.into_envelope().unwrap_or_else(|e| panic!("{} no longer loads: {e}", path.display()));
        loaded += 1;
    }
    assert!(loaded > 0);
}

#[test]
fn a_version_1_receipt_is_upcast_with_its_posting_time_and_balance() {
    let text = std::fs::read(dir("samples/StockReceived.v1.json")).unwrap();
    let record: RecordedEvent = serde_json::from_slice(&text).unwrap();
    let posted_at = record.posted_at;
    let envelope = record.into_envelope().unwrap();
    assert_eq!(envelope.schema_version, 2);
    let Event::StockReceived(e) = envelope.event else { panic!("a receipt") };
    assert_eq!(e.posted_at, posted_at);
    assert_eq!((e.quantity.get(), e.balance_at_posting, e.on_hand_after), (45, 45, 45));
}

#[test]
fn unknown_types_and_future_versions_are_refused_not_guessed() {
    let now = chrono::Utc::now();
    assert!(Event::decode("StockTeleported", 1, serde_json::json!({}), now).is_err());
    assert!(Event::decode("StockReceived", 3, serde_json::json!({}), now).is_err());
    let extra = serde_json::json!({ "article": "A", "unexpected": 1 });
    assert!(Event::decode("ArticleDiscontinued", 1, extra, now).is_err());
}
