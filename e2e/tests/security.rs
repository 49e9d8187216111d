//! Authentication and authorisation of the running services, against their
//! own OpenAPI documents (so a new route cannot be forgotten): every
//! operation answers 401 without a credential, 403 with one lacking its
//! role and neither with the right one; warehouse scopes; revocation
//! reaching two running instances; the rate limit; the audit query; the
//! append-only event store; no key in any log line; secrets from files.

use std::time::Duration;

use e2e::Service;
use platform::auth::keys::{self, NewKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};

/// Creates a key named `name` with `roles` (and warehouses) in the test's database.
async fn key(env: &TestEnv, name: &str, roles: &[&str], warehouses: &[&str]) -> anyhow::Result<String> {
    let new = NewKey {
        name: name.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        warehouses: warehouses.iter().map(|w| (*w).to_owned()).collect(),
        expires_at: None,
    };
    Ok(keys::create(&env.pool().await?, &new).await?.0)
}

/// Each operation of the document at `base`: method, path with example
/// parameters, and the roles it lists.
async fn operations(base: &str) -> anyhow::Result<Vec<(Method, String, Vec<String>)>> {
    let doc: Value = reqwest::get(format!("{base}/openapi.json")).await?.json().await?;
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let roles: Vec<String> = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["bearer"].as_array())
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect();
            let concrete = path
                .replace("{article}", "ART-1")
                .replace("{charge}", "L1")
                .replace("{reservation}", "R1")
                .replace("{category}", "bolts");
            found.push((method.to_uppercase().parse()?, concrete, roles));
        }
    }
    Ok(found)
}

async fn send(method: &Method, url: &str, key: Option<&str>) -> anyhow::Result<reqwest::Response> {
    let mut request = reqwest::Client::new().request(method.clone(), url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if *method != Method::GET {
        request = request.json(&json!({}));
    }
    Ok(request.send().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_operation_needs_a_credential_with_its_role() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let mut by_role = std::collections::HashMap::new();
    for role in platform::auth::Role::ALL {
        by_role.insert(role.as_str().to_owned(), key(&env, &format!("only-{role}"), &[role.as_str()], &[]).await?);
    }
    let mut checked = 0;
    for base in [&command.base_url, &query.base_url] {
        let operations = operations(base).await?;
        assert!(operations.len() >= 5, "{base} documents its operations");
        for (method, path, roles) in operations {
            let url = format!("{base}{path}");
            assert!(!roles.is_empty(), "{method} {path} lists no role");
            let r = send(&method, &url, None).await?;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path} without a credential");
            assert!(r.headers()["www-authenticate"].to_str()?.starts_with("Bearer"), "{method} {path}");
            assert_eq!(r.headers()["content-type"], "application/problem+json");
            let r = send(&method, &url, Some("erp_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")).await?;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path} with an unknown key");
            let lacking = platform::auth::Role::ALL.iter().map(|r| r.as_str()).find(|r| !roles.iter().any(|x| x == r));
            if let Some(lacking) = lacking {
                let r = send(&method, &url, Some(&by_role[lacking])).await?;
                assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} {path} with only {lacking}");
                let problem: Value = r.json().await?;
                assert_eq!(problem["required_roles"], json!(roles), "{method} {path}");
            }
            for role in &roles {
                let status = send(&method, &url, Some(&by_role[role])).await?.status();
                assert!(status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN, "{method} {path} as {role}: {status}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations checked");
    // Health, metrics and the documents stay open.
    for path in ["/health/live", "/health/ready", "/metrics", "/openapi.json"] {
        assert_eq!(reqwest::get(format!("{}{path}", query.base_url)).await?.status(), StatusCode::OK, "{path}");
    }
    // An undocumented operator route needs admin.
    let stats = format!("{}/cache/stats", query.base_url);
    assert_eq!(send(&Method::GET, &stats, Some(&by_role["reader"])).await?.status(), StatusCode::FORBIDDEN);
    assert_eq!(send(&Method::GET, &stats, Some(&by_role["admin"])).await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scanner_acts_only_in_its_warehouse_and_the_audit_trail_names_it_whatever_it_claims() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", command.base_url)).json(&body).send();
    post("/articles", json!({ "article": "ART-1", "name": "Bolt", "category": "bolts", "unit": { "code": "pcs" } })).await?;
    post("/articles/ART-1/charges", json!({ "charge": "L1", "production_date": "2026-10-01" })).await?;
    post("/stock/receipts", json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH-SOUTH", "quantity": 10 })).await?;
    post("/articles/ART-1/reservations", json!({ "reservation": "R1", "charge": "L1", "warehouse": "WH-SOUTH", "quantity": 2, "reference": "o" })).await?;

    let scanner = key(&env, "scanner-7", &["writer"], &["WH-NORTH"]).await?;
    let scanned = |path: &str, body: Value| {
        reqwest::Client::new()
            .post(format!("{}{path}", command.base_url))
            .bearer_auth(&scanner)
            .header("x-actor", "somebody-else")
            .header("x-correlation-id", "scan-1")
            .json(&body)
            .send()
    };
    let refused = |r: reqwest::Response| async move {
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let problem: Value = r.json().await?;
        assert_eq!(problem["rule"], "warehouse-not-permitted", "{problem}");
        anyhow::Ok(problem)
    };
    let problem = refused(scanned("/stock/receipts", json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH-SOUTH", "quantity": 1 })).await?).await?;
    assert_eq!(problem["warehouse"], "WH-SOUTH");
    refused(scanned("/stock/transfers", json!({ "article": "ART-1", "charge": "L1", "from": "WH-SOUTH", "to": "WH-NORTH", "quantity": 1 })).await?).await?;
    // A reservation names no warehouse: judged by the one it holds stock in.
    refused(scanned("/articles/ART-1/reservations/R1/release", json!({})).await?).await?;
    let r = scanned("/stock/receipts", json!({ "article": "ART-1", "charge": "L1", "warehouse": "WH-NORTH", "quantity": 3 })).await?;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await?);

    // The audit trail: the scanner's one event, under its principal (the
    // forged X-Actor is ignored), found by actor, by correlation id, and by
    // article and charge; pages of one entry chain to the end.
    let audit = |query_string: &str| http.get(format!("{}/audit?{query_string}", query.base_url)).send();
    let page: Value = audit("actor=api_key:scanner-7").await?.json().await?;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["event_type"], "StockReceived");
    assert_eq!((items[0]["authtype"].as_str(), items[0]["authid"].as_str()), (Some("api_key"), Some("scanner-7")));
    assert_eq!(items[0]["data"]["warehouse"], "WH-NORTH");
    let page: Value = audit("correlation_id=scan-1").await?.json().await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let mut cursor = None::<String>;
    let mut seen = Vec::new();
    loop {
        let next = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let page: Value = audit(&format!("article=ART-1&charge=L1&limit=1{next}")).await?.json().await?;
        seen.extend(page["items"].as_array().expect("items").iter().map(|e| e["sequence"].as_i64().unwrap()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    // The charge's registration (2), receipt (3), reservation (4), the
    // scanner's receipt (5), newest first; not the article's registration.
    assert_eq!(seen, vec![5, 4, 3, 2]);
    // No stored text holds a NUL: such a filter is refused, naming it (it
    // once reached PostgreSQL, which refused it: a 503).
    let nul = audit("correlation_id=a%00b").await?;
    assert_eq!(nul.status(), StatusCode::BAD_REQUEST);
    assert_eq!(nul.json::<Value>().await?["field"], "correlation_id");
    let r = audit("charge=L1").await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await?["field"], "charge");
    // Writers cannot read the audit trail.
    let r = reqwest::Client::new().get(format!("{}/audit", query.base_url)).bearer_auth(&scanner).send().await?;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The refusals are counted by principal.
    let metrics = reqwest::get(format!("{}/metrics", command.base_url)).await?.text().await?;
    assert!(metrics.contains(r#"erp_http_refused_total{principal="api_key:scanner-7",status="403"} 3"#), "{metrics}");

    // Every filter is served by an index, not a scan of the events table.
    let pool = env.pool().await?;
    let filters = [
        readmodel::audit::Filter { actor: Some("api_key:scanner-7".into()), ..Default::default() },
        readmodel::audit::Filter { correlation_id: Some("scan-1".into()), ..Default::default() },
        readmodel::audit::Filter { article: Some("ART-1".into()), charge: Some("L1".into()), ..Default::default() },
        readmodel::audit::Filter { from: Some(chrono::Utc::now() - chrono::Duration::hours(1)), ..Default::default() },
    ];
    for filter in &filters {
        let mut tx = pool.begin().await?;
        // The table is tiny here: tell the planner scans are dear, as they are at scale.
        sqlx::query("set local enable_seqscan = off").execute(&mut *tx).await?;
        let plan: Vec<String> = readmodel::audit::plan(filter, None, 51).build_query_scalar().fetch_all(&mut *tx).await?;
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan on events"), "{filter:?}:\n{plan}");
        assert!(plan.contains("Index") || plan.contains("Bitmap"), "{filter:?}:\n{plan}");
        tx.rollback().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_key_stops_working_on_every_running_instance_at_once() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    // An hour of trust in the cache: only the revocation notice can stop the key in time.
    let cached = [("APP_AUTH__KEY_CACHE_SECS", "3600".to_owned())];
    let first = Service::start("query-service", &env, &cached).await?;
    let second = Service::start("query-service", &env, &cached).await?;
    let command = Service::start("command-service", &env, &cached).await?;
    let reader = key(&env, "dashboard", &["reader", "master-data"], &[]).await?;
    let status = |base: String| {
        let reader = reader.clone();
        async move { Ok::<_, anyhow::Error>(send(&Method::GET, &format!("{base}/projection/status"), Some(&reader)).await?.status()) }
    };
    for base in [&first.base_url, &second.base_url] {
        assert_eq!(status(base.clone()).await?, StatusCode::OK, "{base} before");
    }
    let revoked = e2e::run_command("command-service", &env, &["keys", "revoke", "dashboard"]).await?;
    assert!(revoked.contains("\"revoked_at\":\""), "{revoked}");
    // The documented bound: the notice arrives within a second or two.
    for base in [&first.base_url, &second.base_url] {
        eventually(Duration::from_secs(5), "the revocation to reach the instance", || async {
            (status(base.clone()).await.ok()? == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await?;
    }
    let r = send(&Method::POST, &format!("{}/articles", command.base_url), Some(&reader)).await?;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The list shows the key, never a secret.
    let listed = e2e::run_command("command-service", &env, &["keys", "list"]).await?;
    assert!(listed.contains("\"name\":\"dashboard\"") && !listed.contains(&reader[13..]), "{listed}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_429_with_retry_after_and_recovers() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let limits = [("APP_AUTH__RATE_LIMITS", "reader=2".to_owned()), ("APP_AUTH__RATE_BURST_SECS", "2".to_owned())];
    let query = Service::start("query-service", &env, &limits).await?;
    let reader = key(&env, "greedy", &["reader"], &[]).await?;
    let other = key(&env, "patient", &["reader"], &[]).await?;
    let url = format!("{}/projection/status", query.base_url);
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(send(&Method::GET, &url, Some(&reader)).await?);
    }
    let limited = statuses.into_iter().find(|r| r.status() == StatusCode::TOO_MANY_REQUESTS).expect("a 429 within 12 requests");
    let retry: u64 = limited.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let problem: Value = limited.json().await?;
    assert_eq!(problem["type"], "urn:erp-stock:problem:rate-limited");
    // Another principal is not held back by it.
    assert_eq!(send(&Method::GET, &url, Some(&other)).await?.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(send(&Method::GET, &url, Some(&reader)).await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_store_refuses_update_delete_and_truncate() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let r = e2e::http()
        .post(format!("{}/articles", command.base_url))
        .json(&json!({ "article": "ART-1", "name": "Bolt", "category": "bolts", "unit": { "code": "pcs" } }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The services' own connection: the same role and database.
    let pool = env.pool().await?;
    for statement in ["update events set actor = 'someone-else'", "delete from events", "truncate events cascade"] {
        let error = sqlx::query(statement).execute(&pool).await.expect_err(statement);
        let code = error.as_database_error().and_then(|e| e.code()).map(|c| c.into_owned());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
    let actor: String = sqlx::query_scalar("select actor from events").fetch_one(&pool).await?;
    assert_eq!(actor, "api_key:e2e");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_key_appears_in_any_log_line_and_settings_are_read_from_files() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    e2e::authorize(&env).await?;
    let writer = key(&env, "loud", &["writer"], &[]).await?;
    // The database URL from a file, as compose and Kubernetes hand out secrets.
    let secret = std::env::temp_dir().join(format!("erp-test-db-url-{}", env.id));
    std::fs::write(&secret, format!("{}\n", env.database.url))?;
    let port = testkit::free_port();
    let mut service = e2e::admin_command("command-service", &env, &[]);
    service
        .env_remove("APP_DATABASE__URL")
        .env("APP_DATABASE__URL_FILE", &secret)
        .env("APP_HTTP__PORT", port.to_string())
        .env("APP_RELAY__ENABLED", "false")
        .env("APP_LOG__FILTER", "debug");
    let mut child = service.spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    testkit::wait_ready(&base, Duration::from_secs(30)).await?;
    let wrong = format!("{}x", &writer[..writer.len() - 1]);
    for credential in [writer.as_str(), wrong.as_str(), e2e::TEST_KEY] {
        let r = reqwest::Client::new()
            .post(format!("{base}/stock/receipts"))
            .bearer_auth(credential)
            .json(&json!({ "article": "ART-1", "charge": "L1", "warehouse": "W1", "quantity": 1 }))
            .send()
            .await?;
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    child.start_kill()?;
    let output = child.wait_with_output().await?;
    let logs = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    std::fs::remove_file(&secret)?;
    assert!(logs.contains("command-service listening"), "the service logged: {logs}");
    for credential in [&writer, &wrong, &e2e::TEST_KEY.to_owned()] {
        let secret_part = &credential[13..];
        assert!(!logs.contains(secret_part), "a credential is in the logs:\n{logs}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_of_the_identity_provider_is_accepted_and_its_subject_is_the_actor() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../platform/tests/fixtures");
    let issuer = "https://login.example.com/realms/erp";
    let jwt = [
        ("APP_AUTH__JWT__ISSUER", issuer.to_owned()),
        ("APP_AUTH__JWT__STATIC_KEY_FILE", format!("{fixtures}/jwt-test-public.pem")),
    ];
    let command = Service::start("command-service", &env, &jwt).await?;
    let query = Service::start("query-service", &env, &jwt).await?;
    let private = std::fs::read(format!("{fixtures}/jwt-test-private.pem"))?;
    let now = chrono::Utc::now().timestamp();
    let token = |roles: &[&str], exp: i64| {
        let claims = json!({ "iss": issuer, "aud": "erp-stock", "sub": "alice@example.com", "exp": exp, "roles": roles });
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap()).unwrap()
    };
    let master = token(&["master-data"], now + 300);
    let r = reqwest::Client::new()
        .post(format!("{}/articles", command.base_url))
        .bearer_auth(&master)
        .json(&json!({ "article": "ART-1", "name": "Bolt", "category": "bolts", "unit": { "code": "pcs" } }))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await?);
    let actor: String = sqlx::query_scalar("select actor from events").fetch_one(&env.pool().await?).await?;
    assert_eq!(actor, "user:alice@example.com");
    let status = format!("{}/projection/status", query.base_url);
    assert_eq!(send(&Method::GET, &status, Some(&master)).await?.status(), StatusCode::FORBIDDEN);
    assert_eq!(send(&Method::GET, &status, Some(&token(&["reader"], now + 300))).await?.status(), StatusCode::OK);
    let expired = send(&Method::GET, &status, Some(&token(&["reader"], now - 600))).await?;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert!(expired.headers()["www-authenticate"].to_str()?.contains("invalid_token"));
    // API keys work beside tokens.
    assert_eq!(send(&Method::GET, &status, Some(e2e::TEST_KEY)).await?.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_headers_get_431_and_cors_answers_only_configured_origins() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let cors = [("APP_HTTP__CORS_ORIGINS", "https://console.example.com".to_owned())];
    let open = Service::start("query-service", &env, &[]).await?;
    let configured = Service::start("query-service", &env, &cors).await?;
    let url = |base: &str| format!("{base}/articles/ART-1/stock");
    let r = e2e::http().get(url(&open.base_url)).header("x-padding", "x".repeat(20_000)).send().await?;
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let preflight = |base: String, origin: &'static str| async move {
        reqwest::Client::new()
            .request(Method::OPTIONS, url(&base))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
    };
    let allowed = preflight(configured.base_url.clone(), "https://console.example.com").await?;
    assert_eq!(allowed.headers().get("access-control-allow-origin").map(|v| v.as_bytes()), Some(&b"https://console.example.com"[..]));
    let other = preflight(configured.base_url.clone(), "https://evil.example.com").await?;
    assert!(other.headers().get("access-control-allow-origin").is_none());
    let off = preflight(open.base_url.clone(), "https://console.example.com").await?;
    assert!(off.headers().get("access-control-allow-origin").is_none());
    Ok(())
}
