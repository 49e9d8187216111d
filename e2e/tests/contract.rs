//! The OpenAPI documents are a contract that a tool nobody here wrote can
//! check: schemathesis (from PyPI, installed by the test setup) generates
//! requests from each service's document and runs every one of its checks
//! against the running service: no 5xx, statuses, content types and headers
//! as documented, schema-valid requests accepted, schema-invalid ones
//! refused, unsupported methods refused. The few exceptions are named and
//! justified in `e2e/schemathesis/*.toml`.
//!
//! `ERP_SCHEMATHESIS_EXAMPLES` sets the examples per operation (25 by
//! default; more find more, slower).

use std::path::PathBuf;

use e2e::{Service, caught_up, post_history};
use testkit::TestEnv;

/// The schemathesis command of the test setup's Python (next to `ERP_PYTHON`).
fn schemathesis() -> PathBuf {
    let python = std::env::var("ERP_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let bin = std::path::Path::new(&python).parent().map(|d| d.join("schemathesis"));
    bin.filter(|b| b.exists()).unwrap_or_else(|| "schemathesis".into())
}

/// Runs schemathesis with every check against the document at `base/openapi.json`.
async fn check(base: &str, config: &str) -> anyhow::Result<()> {
    let examples = std::env::var("ERP_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let config = format!("{}/schemathesis/{config}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(schemathesis())
        .args(["--config-file", &config, "run", &format!("{base}/openapi.json")])
        .args(["--checks", "all", "--max-examples", &examples, "--no-color"])
        // With the test's credential; schemathesis's own `ignored_auth`
        // check sends each operation without it too and expects 401.
        .args(["--header", &format!("Authorization: Bearer {}", e2e::TEST_KEY)])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(std::env::temp_dir())
        .output()
        .await?;
    let report = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "schemathesis found failures in {base}:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(report.contains(" passed"), "schemathesis ran no test case:\n{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_wrong_with_either_service_against_its_document() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // Generated webhook URLs name any host: whether it is a public address is
    // the service's own check (tests/webhooks.rs), not the document's.
    let command = Service::start("command-service", &env, &[("APP_WEBHOOKS__ALLOW_PRIVATE_ADDRESSES", "true".to_owned())]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    // A token no write will reach is answered (504) after 200 ms, not 2 s.
    let query = Service::start("query-service", &env, &[("APP_CONSISTENCY__MAX_WAIT_MS", "200".to_owned())]).await?;
    // ART-1 (category glue) with charges L1 and L2 and reservation R1, which the configurations name.
    post_history(&command.base_url, 3).await?;
    caught_up(&env.pool().await?).await?;

    check(&query.base_url, "query-service.toml").await?;
    check(&command.base_url, "command-service.toml").await?;
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}
