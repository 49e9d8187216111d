//! The read API over a real history: every read model, pagination with
//! opaque cursors, ETags on lists, compression, bad input, and the
//! query-service's behaviour with PostgreSQL down and at start (warm-up).

use std::collections::BTreeSet;
use std::time::Duration;

use e2e::{Service, caught_up, post_history};
use serde_json::Value;
use testkit::{TestEnv, eventually};

/// Reads every page of a list, following `next_cursor`.
async fn all_pages(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..100 {
        let page_url = match &next {
            Some(cursor) => format!("{url}{}cursor={cursor}", if url.contains('?') { "&" } else { "?" }),
            None => url.to_owned(),
        };
        let response = http.get(&page_url).send().await?;
        anyhow::ensure!(response.status() == 200, "{page_url}: {}", response.status());
        let page: Value = response.json().await?;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(cursor) => next = Some(cursor.to_owned()),
            None => return Ok(items),
        }
    }
    anyhow::bail!("{url} never ended")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_read_model_is_served_paginated_and_follows_the_writes() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 9).await?;
    caught_up(&pool).await?;
    let http = e2e::http();
    let q = |path: &str| format!("{}{path}", query.base_url);
    let get = |path: &str| {
        let (http, url) = (http.clone(), q(path));
        async move {
            let r = http.get(&url).send().await?;
            anyhow::ensure!(r.status() == 200, "GET {url}: {}", r.status());
            anyhow::Ok(r.json::<Value>().await?)
        }
    };

    // Stock per article: per warehouse and per charge with its dates.
    let stock = get("/articles/ART-1/stock").await?;
    assert_eq!(stock["category"], "glue");
    let l1 = stock["charges"].as_array().unwrap().iter().find(|c| c["charge"] == "L1").unwrap();
    assert_eq!(l1["production_date"], "2026-10-02");
    assert_eq!(l1["on_hand"], 41 - 3);

    // Charges per category: the summary, and every charge over several pages, newest first.
    let summary = get("/categories/bolts").await?;
    assert_eq!(summary["charges"], 6, "3 articles with 2 charges each");
    assert_eq!(summary["blocked"], 1, "ART-0's L2");
    let charges = all_pages(&http, &q("/categories/bolts/charges?limit=4")).await?;
    assert_eq!(charges.len(), 6);
    let dates: Vec<&str> = charges.iter().map(|c| c["production_date"].as_str().unwrap()).collect();
    assert!(dates.windows(2).all(|w| w[0] >= w[1]), "newest production date first: {dates:?}");
    let on_hand: i64 = charges.iter().map(|c| c["on_hand"].as_i64().unwrap()).sum();
    assert_eq!(summary["on_hand"].as_i64(), Some(on_hand));

    // One charge with its open reservation; the charges of an article.
    let detail = get("/articles/ART-0/charges/L2").await?;
    assert_eq!(detail["blocked"], true);
    assert_eq!(detail["reservations"][0]["reservation"], "R1");
    assert_eq!(detail["reservations"][0]["remaining"], 4);
    assert_eq!((detail["on_hand"].as_i64(), detail["reserved"].as_i64()), (Some(9), Some(4)));
    assert_eq!(all_pages(&http, &q("/articles/ART-0/charges?limit=1")).await?.len(), 2);

    // The movement history, newest posting first, with balances after the backdated issue.
    let moves = all_pages(&http, &q("/articles/ART-0/charges/L1/movements?warehouse=W1&limit=1")).await?;
    let seen: Vec<(&str, i64, i64)> =
        moves.iter().map(|m| (m["kind"].as_str().unwrap(), m["delta"].as_i64().unwrap(), m["balance"].as_i64().unwrap())).collect();
    assert_eq!(seen, vec![("transfer_out", -5, 32), ("issue", -3, 37), ("receipt", 40, 40)]);

    // The catalogue by category and case-insensitive name prefix.
    let bolts = all_pages(&http, &q("/articles?category=bolts&limit=2")).await?;
    let names: Vec<&str> = bolts.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["Article 0", "Article 3", "Article 6"]);
    let prefixed = all_pages(&http, &q("/articles?name_prefix=ARTICLE%208")).await?;
    assert_eq!(prefixed.len(), 1);
    assert_eq!(prefixed[0]["article"], "ART-8");

    // Low stock: exactly the articles whose available stock is below their reorder point.
    let low: BTreeSet<String> = all_pages(&http, &q("/low-stock?limit=2")).await?
        .iter()
        .map(|a| a["article"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = BTreeSet::new();
    for i in 0..9 {
        let stock = get(&format!("/articles/ART-{i}/stock")).await?;
        if stock["available"].as_i64().unwrap() < 50 {
            expected.insert(format!("ART-{i}"));
        }
    }
    assert!(!expected.is_empty());
    assert_eq!(low, expected);

    // Projection status: caught up, per partition.
    let status = get("/projection/status").await?;
    assert_eq!((status["generation"].as_i64(), status["lag"].as_i64()), (Some(1), Some(0)), "{status}");
    assert_eq!(status["partitions"].as_array().unwrap().len(), 2);

    // A list has an ETag too; a change of the article invalidates its cached history.
    let url = q("/articles/ART-0/charges/L1/movements");
    let first = http.get(&url).send().await?;
    let etag = first.headers()["etag"].clone();
    assert_eq!(http.get(&url).header("if-none-match", etag.clone()).send().await?.status(), 304);
    let r = http
        .post(format!("{}/stock/receipts", command.base_url))
        .json(&serde_json::json!({ "article": "ART-0", "charge": "L1", "warehouse": "W1", "quantity": 1 }))
        .send()
        .await?;
    assert_eq!(r.status(), 201);
    eventually(Duration::from_secs(30), "the cached history to be replaced", || async {
        let r = http.get(&url).send().await.ok()?;
        (r.headers()["etag"] != etag).then_some(())
    })
    .await?;

    // Large lists are compressed for clients that accept it.
    let r = http.get(q("/articles?limit=500")).header("accept-encoding", "gzip").send().await?;
    assert_eq!(r.headers().get("content-encoding").map(|v| v.to_str().unwrap()), Some("gzip"));

    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_400_naming_the_field_and_unknown_things_404() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let query = Service::start("query-service", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 2).await?;
    caught_up(&pool).await?;
    let http = e2e::http();
    let page: Value = http.get(format!("{}/articles?limit=1", query.base_url)).send().await?.json().await?;
    let catalogue_cursor = page["next_cursor"].as_str().unwrap().to_owned();
    for (path, field) in [
        ("/articles/ART%201/stock", "article"),
        ("/articles?limit=0", "limit"),
        ("/articles?limit=501", "limit"),
        ("/articles?cursor=nonsense", "cursor"),
        (&*format!("/low-stock?cursor={catalogue_cursor}"), "cursor"),
        (&*format!("/articles?name_prefix={}", "x".repeat(201)), "name_prefix"),
        ("/articles/ART-0/charges/L%3A1", "charge"),
        ("/articles/ART-0/charges/L1/movements?warehouse=W%201", "warehouse"),
        ("/articles/ART-0/stock?consistent_with=nonsense", "consistent_with"),
    ] {
        let r = http.get(format!("{}{path}", query.base_url)).send().await?;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await?;
        assert_eq!(problem["field"], field, "{path}: {problem}");
    }
    for path in [
        "/articles/NOPE/stock",
        "/articles/NOPE/charges",
        "/articles/ART-0/charges/NOPE",
        "/articles/ART-0/charges/NOPE/movements",
        "/categories/nothing",
        "/categories/nothing/charges",
    ] {
        let r = http.get(format!("{}{path}", query.base_url)).send().await?;
        assert_eq!(r.status(), 404, "{path}");
    }
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgresql_down_cached_answers_are_marked_possibly_stale_and_nothing_hangs() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 2).await?;
    caught_up(&pool).await?;
    let target = env.database.url.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let proxy = testkit::proxy::TcpProxy::start(&target).await?;
    let settings = [
        ("APP_DATABASE__URL", proxy.url_for(&env.database.url)),
        ("APP_CACHE__POSTGRES_TIMEOUT_MS", "500".to_owned()),
    ];
    let query = Service::start("query-service", &env, &settings).await?;
    // Every request must end well within this, whatever is down.
    let http = e2e::http_builder().timeout(Duration::from_secs(5)).build()?;
    let url = |path: &str| format!("{}{path}", query.base_url);
    // In memory: the stock of ART-0 and its charge list.
    for path in ["/articles/ART-0/stock", "/articles/ART-0/charges"] {
        let r = http.get(url(path)).send().await?;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-possibly-stale").is_none());
    }

    proxy.down();
    // The service notices within a second (it reads the generation pointer every second).
    eventually(Duration::from_secs(5), "PostgreSQL to be seen down", || async {
        let stats: Value = http.get(url("/cache/stats")).send().await.ok()?.json().await.ok()?;
        (stats["postgres"]["up"] == false).then_some(())
    })
    .await?;
    // From memory and from Redis: answered, marked possibly stale.
    for path in ["/articles/ART-0/stock", "/articles/ART-0/charges", "/articles/ART-1/stock"] {
        let r = http.get(url(path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers().get("x-possibly-stale").map(|v| v.to_str().unwrap()), Some("true"), "{path}");
    }
    // Not in any cache: a fast 503, not a hang.
    let r = http.get(url("/articles/ART-1/charges")).send().await?;
    assert_eq!(r.status(), 503);
    let r = http.get(url("/articles/ART-0/stock")).header("x-consistency-token", "article:ART-0@1").send().await?;
    assert_eq!(r.status(), 503, "read-your-writes needs PostgreSQL");

    proxy.up();
    eventually(Duration::from_secs(10), "PostgreSQL to be used again", || async {
        let r = http.get(url("/articles/ART-1/charges")).send().await.ok()?;
        (r.status() == 200 && r.headers().get("x-possibly-stale").is_none()).then_some(())
    })
    .await?;
    for service in [query, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_starting_query_service_warms_its_memory_with_configured_and_hot_documents() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let command = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let pool = env.pool().await?;
    post_history(&command.base_url, 3).await?;
    caught_up(&pool).await?;
    let http = e2e::http();
    // A first instance learns that ART-2's stock is asked for most.
    let first = Service::start("query-service", &env, &[("APP_CACHE__HOT_RECORD_SECS", "1".to_owned())]).await?;
    for _ in 0..20 {
        http.get(format!("{}/articles/ART-2/stock", first.base_url)).send().await?;
    }
    let redis = redis::Client::open(env.redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let hot_set = format!("{}hot", env.redis.generation_prefix(1));
    eventually(Duration::from_secs(30), "the hot documents in Redis", || async {
        let hot: Vec<String> = redis::cmd("ZREVRANGE").arg(&hot_set).arg(0).arg(0).query_async(&mut redis.clone()).await.ok()?;
        (hot == ["stock:ART-2"]).then_some(())
    })
    .await?;

    // A second instance starts warm: ART-0 (configured) and ART-2 (hot) are in memory before any request.
    let settings = [("APP_CACHE__WARMUP_KEYS", "stock:ART-0".to_owned()), ("APP_CACHE__WARMUP_TOP", "1".to_owned())];
    let second = Service::start("query-service", &env, &settings).await?;
    let stats = |service: &Service| {
        let (http, url) = (http.clone(), format!("{}/cache/stats", service.base_url));
        async move { http.get(url).send().await.ok()?.json::<Value>().await.ok() }
    };
    eventually(Duration::from_secs(30), "the warm-up", || async {
        stats(&second).await.filter(|s| s["memory"]["entries"] == 2)
    })
    .await?;
    for article in ["ART-0", "ART-2"] {
        http.get(format!("{}/articles/{article}/stock", second.base_url)).send().await?;
    }
    let after = stats(&second).await.unwrap();
    assert_eq!(after["memory"]["hits"], 2, "both were served from memory: {after}");
    for service in [second, first, projector, command] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_documented_read_operation_reaches_a_handler() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let settings = [("APP_DATABASE__MIGRATE", "true".to_owned())];
    let query = Service::start("query-service", &env, &settings).await?;
    let http = e2e::http();
    let spec: Value = http.get(format!("{}/openapi.json", query.base_url)).send().await?.json().await?;
    assert_eq!(spec["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    assert_eq!(testkit::unresolved_refs(&spec), Vec::<String>::new(), "every $ref resolves");
    let limit = &spec["paths"]["/low-stock"]["get"]["parameters"][0];
    assert_eq!((limit["name"].as_str(), limit["schema"]["maximum"].as_u64()), (Some("limit"), Some(500)), "the configured maximum");
    let mut operations = 0;
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            assert!(operation["responses"]["200"].is_object(), "{method} {path} documents 200");
            let url = format!("{}{}", query.base_url, path.replace('{', "X-").replace('}', ""));
            let response = http.get(&url).send().await?;
            let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
            assert!(
                // JSON, or the CSV an export answers with by default.
                content_type.as_deref().is_some_and(|c| c.contains("json") || c.starts_with("text/csv")),
                "{method} {path} reached no handler: {} {content_type:?}",
                response.status()
            );
        }
    }
    // Ten read models, the audit trail and two exports.
    assert_eq!(operations, 13);
    query.stop().await
}
