//! `/openapi.json` describes exactly the routes the service answers: every
//! `$ref` resolves, every documented operation reaches a handler (which
//! answers with JSON, even for a bad request), and every command and job
//! route is documented. (e2e/tests/contract.rs runs schemathesis against it.)

mod common;

use common::*;
use serde_json::Value;
use testkit::TestEnv;

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_reaches_a_handler() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let app = start(settings(&env, false)).await?;
    let http = reqwest::Client::new();
    let spec: Value = http.get(format!("{}/openapi.json", app.url)).send().await?.json().await?;
    assert_eq!(spec["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert_eq!(testkit::unresolved_refs(&spec), Vec::<String>::new(), "every $ref resolves");

    let (mut commands, mut jobs, mut webhooks) = (0, 0, 0);
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            if path.starts_with("/jobs") {
                // Jobs: submitted (202) and followed (docs/jobs.md).
                jobs += 1;
            } else if path.starts_with("/webhooks") {
                // Subscriptions, their log and re-sends (docs/webhooks.md).
                webhooks += 1;
            } else {
                commands += 1;
                assert!(operation["responses"]["201"].is_object(), "{method} {path} documents 201");
                assert!(operation["responses"]["422"].is_object(), "{method} {path} documents 422");
            }
            let url = format!("{}{}", app.url, path.replace('{', "X-").replace('}', ""));
            let method: reqwest::Method = method.to_uppercase().parse()?;
            let response = http.request(method.clone(), &url).json(&serde_json::json!({})).send().await?;
            let status = response.status().as_u16();
            let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            // A route the router does not know answers 404/405 without a body.
            assert!(
                content_type.as_deref().is_some_and(|c| c.contains("json")),
                "{method} {path} reached no handler: {status} {content_type:?}"
            );
        }
    }
    assert_eq!(commands, 16, "one operation per command");
    assert_eq!(jobs, 12, "submit three kinds; list; read, discard, attempts, cancel, retry, events, result, rejections");
    assert_eq!(webhooks, 9, "make, list, read, delete, enable, disable, secret, deliveries, resend");
    app.shutdown().await
}
