//! Background jobs end to end: the command-service queues, a `worker`
//! process runs. Imports apply every accepted line once — also when the
//! worker is killed with SIGKILL in the middle, under load, and started
//! again — and report the refused ones; reports are complete after a
//! killed worker; a failing job is retried on its backoff schedule, goes
//! dead, and succeeds when retried by hand; progress streams over SSE;
//! cancel stops a running job; bad files are refused with what is wrong;
//! formulas are neutralised in CSV and XLSX.

use std::time::Duration;

use e2e::Service;
use serde_json::{Value, json};
use testkit::{TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A worker that notices everything quickly: short lease, frequent heartbeats.
fn quick_worker() -> Vec<(&'static str, String)> {
    vec![
        ("APP_JOBS__LEASE_MS", "2000".into()),
        ("APP_JOBS__HEARTBEAT_MS", "200".into()),
        ("APP_JOBS__POLL_MS", "200".into()),
        ("APP_JOBS__BACKOFF_BASE_MS", "400".into()),
    ]
}

async fn upload(base: &str, query: &str, body: Vec<u8>) -> anyhow::Result<reqwest::Response> {
    Ok(e2e::http().post(format!("{base}/jobs/imports?{query}")).body(body).send().await?)
}

/// Waits until the job is final; returns it.
async fn finished(base: &str, location: &str) -> anyhow::Result<Value> {
    let url = format!("{base}{location}");
    eventually(Duration::from_secs(120), "the job to finish", || async {
        let job: Value = e2e::http().get(&url).send().await.ok()?.json().await.ok()?;
        ["succeeded", "failed", "cancelled", "dead"].contains(&job["status"].as_str()?).then_some(job)
    })
    .await
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

fn register_lines(articles: usize) -> String {
    let mut out = String::new();
    for a in 0..articles {
        out.push_str(&format!(
            "{{\"type\":\"article\",\"article\":\"IMP-{a}\",\"name\":\"Imported {a}\",\"category\":\"imported\",\"unit\":{{\"code\":\"pcs\"}}}}\n"
        ));
        out.push_str(&format!("{{\"type\":\"charge\",\"article\":\"IMP-{a}\",\"charge\":\"L1\",\"production_date\":\"2026-11-01\"}}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn an_import_applies_each_accepted_line_once_and_reports_each_refused_line_with_its_field() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let writer = Service::start("command-service", &env, &[]).await?;
    let worker = Service::start("worker", &env, &quick_worker()).await?;
    let pool = env.pool().await?;

    let mut file = register_lines(2);
    file.push_str("{\"type\":\"receipt\",\"article\":\"IMP-0\",\"charge\":\"L1\",\"warehouse\":\"WH-1\",\"quantity\":10}\n");
    file.push_str("{\"type\":\"receipt\",\"article\":\"IMP-1\",\"charge\":\"L1\",\"warehouse\":\"WH-1\",\"quantity\":\"ten\"}\n");
    file.push_str("\n");
    file.push_str("{\"type\":\"issue\",\"article\":\"IMP-0\",\"charge\":\"L1\",\"warehouse\":\"WH-1\",\"quantity\":11}\n");
    file.push_str("{\"type\":\"gift\"}\n");
    file.push_str("{\"type\":\"transfer\",\"article\":\"IMP-0\",\"charge\":\"L1\",\"from\":\"WH-1\",\"to\":\"WH-2\",\"quantity\":4}\n");
    file.push_str("{\"type\":\"count\",\"article\":\"IMP-0\",\"charge\":\"L1\",\"warehouse\":\"WH-2\",\"counted\":3}");

    // A dry run decides every line and writes nothing.
    let r = upload(&writer.base_url, "format=ndjson&dry_run=true", file.clone().into_bytes()).await?;
    assert_eq!(r.status(), 202);
    let dry = finished(&writer.base_url, &location(&r)).await?;
    assert_eq!(dry["status"], "succeeded", "{dry}");
    assert_eq!((dry["result"]["accepted"].as_i64(), dry["result"]["rejected"].as_i64()), (Some(7), Some(3)), "{dry}");
    let (events,): (i64,) = sqlx::query_as("select count(*) from events").fetch_one(&pool).await?;
    assert_eq!(events, 0, "a dry run writes no event");

    let r = e2e::http()
        .post(format!("{}/jobs/imports", writer.base_url))
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", "opening-stock-1")
        .body(file.clone())
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let job = finished(&writer.base_url, &loc).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["lines"], 11);
    assert_eq!((job["result"]["accepted"].as_i64(), job["result"]["rejected"].as_i64()), (Some(7), Some(3)));
    assert_eq!(job["progress"]["percent"], 100.0);

    // The same key again names the same job; nothing is imported twice.
    let again = e2e::http()
        .post(format!("{}/jobs/imports", writer.base_url))
        .header("content-type", "application/x-ndjson")
        .header("idempotency-key", "opening-stock-1")
        .body(file)
        .send()
        .await?;
    assert_eq!((again.status().as_u16(), location(&again)), (202, loc.clone()));

    let id = job["id"].as_str().unwrap();
    let (events, commands): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct causation_id) from events where correlation_id = $1")
            .bind(format!("job:{id}"))
            .fetch_one(&pool)
            .await?;
    assert_eq!((events, commands), (job["result"]["events"].as_i64().unwrap(), 7), "one command per accepted line, once");

    let csv = e2e::http().get(format!("{}{loc}/rejections", writer.base_url)).send().await?.text().await?;
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "line,problem,field,detail");
    assert!(lines[1].starts_with("6,invalid-field,quantity,"), "{csv}");
    assert!(lines[2].starts_with("8,insufficient-stock,,"), "{csv}");
    assert!(lines[3].starts_with("9,invalid-field,type,"), "{csv}");
    assert_eq!(lines.len(), 4, "{csv}");

    // CSV: the same rules, the same refusals.
    let csv_file = "type,article,charge,warehouse,quantity\r\nreceipt,IMP-1,L1,WH-1,5\r\nissue,IMP-1,L1,WH-1,6\r\n";
    let r = upload(&writer.base_url, "format=csv", csv_file.into()).await?;
    let job = finished(&writer.base_url, &location(&r)).await?;
    assert_eq!((job["result"]["accepted"].as_i64(), job["result"]["rejected"].as_i64()), (Some(1), Some(1)), "{job}");

    worker.stop().await?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_import_under_load_resumes_and_applies_every_line_exactly_once() -> anyhow::Result<()> {
    const ARTICLES: usize = 20;
    const RECEIPTS: usize = 15_000;
    let env = TestEnv::new(1).await?;
    let writer = Service::start("command-service", &env, &[]).await?;
    let mut settings = quick_worker();
    settings.push(("APP_JOBS__IMPORT_CHUNK_LINES", "200".into()));
    let mut worker = Service::start("worker", &env, &settings).await?;
    let pool = env.pool().await?;
    let http = e2e::http();

    let mut file = register_lines(ARTICLES);
    for i in 0..RECEIPTS {
        file.push_str(&format!(
            "{{\"type\":\"receipt\",\"article\":\"IMP-{}\",\"charge\":\"L1\",\"warehouse\":\"WH-1\",\"quantity\":1}}\n",
            i % ARTICLES
        ));
    }
    // HTTP clients write to the same articles all along.
    let base = writer.base_url.clone();
    let stop_load = tokio_util::sync::CancellationToken::new();
    let load = {
        let stop = stop_load.clone();
        let http = http.clone();
        tokio::spawn(async move {
            let mut accepted = vec![0i64; ARTICLES];
            let mut i = 0;
            while !stop.is_cancelled() {
                let a = i % ARTICLES;
                let body = json!({ "article": format!("IMP-{a}"), "charge": "L1", "warehouse": "WH-9", "quantity": 1 });
                if let Ok(r) = http.post(format!("{base}/stock/receipts")).json(&body).send().await
                    && r.status() == 201
                {
                    accepted[a] += 1;
                }
                i += 1;
            }
            accepted
        })
    };

    let r = upload(&writer.base_url, "format=ndjson", file.into_bytes()).await?;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let url = format!("{}{loc}", writer.base_url);
    eventually(Duration::from_secs(120), "the import to be a third done", || async {
        let job: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (job["progress"]["done"].as_i64()? > (RECEIPTS / 3) as i64).then_some(())
    })
    .await?;
    worker.crash().await?;
    let job: Value = http.get(&url).send().await?.json().await?;
    assert_eq!(job["status"], "running", "killed in the middle: {job}");
    worker.restart().await?;
    let job = finished(&writer.base_url, &loc).await?;
    stop_load.cancel();
    let http_accepted = load.await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["accepted"].as_i64(), Some((2 * ARTICLES + RECEIPTS) as i64), "{job}");
    assert_eq!(job["attempts"], 2, "the second attempt finished it: {job}");

    let id = job["id"].as_str().unwrap();
    let (events, commands): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct causation_id) from events where correlation_id = $1")
            .bind(format!("job:{id}"))
            .fetch_one(&pool)
            .await?;
    assert_eq!((events, commands), ((2 * ARTICLES + RECEIPTS) as i64, (2 * ARTICLES + RECEIPTS) as i64), "every line once");
    let attempts: Vec<(i32, String)> =
        sqlx::query_as("select attempt, outcome from job_attempts where job_id = $1::uuid order by attempt").bind(id).fetch_all(&pool).await?;
    assert_eq!(attempts, vec![(1, "lease-lost".to_owned()), (2, "succeeded".to_owned())]);

    // Every article's stream holds exactly its imported and its HTTP receipts.
    for (a, n) in http_accepted.iter().enumerate() {
        let (version,): (i64,) = sqlx::query_as("select version from event_streams where stream_id = $1")
            .bind(format!("article:IMP-{a}"))
            .fetch_one(&pool)
            .await?;
        assert_eq!(version, 2 + (RECEIPTS / ARTICLES) as i64 + n, "IMP-{a}");
    }

    // New work flows through the restarted worker.
    let r = upload(&writer.base_url, "format=ndjson", b"{\"type\":\"receipt\",\"article\":\"IMP-0\",\"charge\":\"L1\",\"warehouse\":\"WH-1\",\"quantity\":1}\n".to_vec()).await?;
    let job = finished(&writer.base_url, &location(&r)).await?;
    assert_eq!(job["result"]["accepted"], 1, "{job}");

    worker.stop().await?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_report_writes_the_whole_file_on_its_next_attempt_and_formulas_are_neutralised() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let writer = Service::start("command-service", &env, &[]).await?;
    let projector = Service::start("projector", &env, &[]).await?;
    let http = e2e::http();
    let post = |path: &str, body: Value| http.post(format!("{}{path}", writer.base_url)).json(&body).send();
    let evil = "=HYPERLINK(\"http://evil.example\",\"click\")";
    assert_eq!(post("/articles", json!({ "article": "EVIL", "name": evil, "category": "@SUM(A1)", "unit": { "code": "pcs" } })).await?.status(), 201);
    let mut items = 1;
    for i in 0..1500 {
        let article = format!("ART-{i}");
        let r = post("/articles", json!({ "article": article, "name": format!("Article {i}"), "category": "c", "unit": { "code": "pcs" } })).await?;
        assert_eq!(r.status(), 201);
        items += 1;
    }
    let pool = env.pool().await?;
    e2e::caught_up(&pool).await?;

    // Slow enough (500 rows/s) to be killed in the middle.
    let mut settings = quick_worker();
    settings.push(("APP_JOBS__REPORT_ROWS_PER_SEC", "500".into()));
    let mut worker = Service::start("worker", &env, &settings).await?;
    let r = http.post(format!("{}/jobs/reports", writer.base_url)).json(&json!({ "report": "catalogue", "format": "csv" })).send().await?;
    assert_eq!(r.status(), 202, "{}", r.text().await?);
    let loc = location(&r);
    let url = format!("{}{loc}", writer.base_url);
    eventually(Duration::from_secs(60), "the report to be under way", || async {
        let job: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (job["progress"]["done"].as_i64()? >= 500).then_some(())
    })
    .await?;
    worker.crash().await?;
    // Writes go on meanwhile; the report reads a consistent picture.
    assert_eq!(post("/articles", json!({ "article": "LATE", "name": "late", "category": "c", "unit": { "code": "pcs" } })).await?.status(), 201);
    e2e::caught_up(&pool).await?;
    items += 1;
    worker.restart().await?;
    let job = finished(&writer.base_url, &loc).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2);
    let download = http.get(format!("{url}/result")).send().await?;
    assert_eq!(download.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = download.text().await?;
    assert_eq!(csv.lines().count(), items + 1, "the header and every article, once");
    assert_eq!(job["result"]["rows"], items);
    let evil_line = csv.lines().find(|l| l.starts_with("EVIL,")).expect("the article is in the report");
    assert!(evil_line.contains("\"'=HYPERLINK(") && evil_line.contains(",\"'@SUM(A1)\","), "neutralised: {evil_line}");

    // The same report as a spreadsheet, read back with an independent reader.
    let r = http.post(format!("{}/jobs/reports", writer.base_url)).json(&json!({ "report": "catalogue", "format": "xlsx" })).send().await?;
    let loc = location(&r);
    let job = finished(&writer.base_url, &loc).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    let bytes = http.get(format!("{}{loc}/result", writer.base_url)).send().await?.bytes().await?;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec()))?;
    let sheet = calamine::Reader::worksheet_range(&mut book, "catalogue")?;
    assert_eq!(sheet.height(), items + 1);
    let row = sheet.rows().find(|r| r[0].to_string() == "EVIL").expect("the article is in the spreadsheet");
    assert_eq!(row[1].to_string(), format!("'{evil}"));
    assert_eq!(row[2].to_string(), "'@SUM(A1)");
    for service in [worker, projector, writer] {
        service.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_job_is_retried_on_its_backoff_schedule_goes_dead_and_succeeds_when_retried_by_hand() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let writer = Service::start("command-service", &env, &[("APP_JOBS__MAX_ATTEMPTS", "3".into())]).await?;
    let worker = Service::start("worker", &env, &quick_worker()).await?;
    let http = e2e::http();
    let r = http.post(format!("{}/jobs/selftest", writer.base_url)).json(&json!({ "steps": 1, "fail_attempts": 3 })).send().await?;
    assert_eq!(r.status(), 202);
    let loc = location(&r);
    let job = finished(&writer.base_url, &loc).await?;
    assert_eq!(job["status"], "dead", "{job}");
    assert!(job["error"].as_str().unwrap().contains("on purpose"), "{job}");

    // The dead-job queue lists it.
    let dead: Value = http.get(format!("{}/jobs?status=dead", writer.base_url)).send().await?.json().await?;
    assert!(dead["jobs"].as_array().unwrap().iter().any(|j| j["id"] == job["id"]), "{dead}");
    let r = http.get(format!("{}/jobs?submitter=a%00b", writer.base_url)).send().await?;
    assert_eq!(r.status(), 400, "a NUL cannot be in any stored principal");

    // Waits of at least half the doubling step: 400 ms, then 800 ms (base 400 ms).
    let attempts: Vec<Value> = http.get(format!("{}{loc}/attempts", writer.base_url)).send().await?.json().await?;
    let outcomes: Vec<&str> = attempts.iter().map(|a| a["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "retry", "dead"]);
    let at = |i: usize, f: &str| chrono::DateTime::parse_from_rfc3339(attempts[i][f].as_str().unwrap()).unwrap();
    for (i, step_ms) in [(1, 400), (2, 800)] {
        let waited = (at(i, "started_at") - at(i - 1, "finished_at")).num_milliseconds();
        assert!(waited >= step_ms / 2, "attempt {} came {waited} ms after the one before (at least {} expected)", i + 1, step_ms / 2);
    }

    let r = http.post(format!("{}{loc}/retry", writer.base_url)).send().await?;
    assert_eq!(r.status(), 200);
    let job = finished(&writer.base_url, &loc).await?;
    assert_eq!(job["status"], "succeeded", "{job}");
    // A succeeded job is not retried; a discarded one is gone.
    assert_eq!(http.post(format!("{}{loc}/retry", writer.base_url)).send().await?.status(), 409);
    assert_eq!(http.delete(format!("{}{loc}", writer.base_url)).send().await?.status(), 204);
    assert_eq!(http.get(format!("{}{loc}", writer.base_url)).send().await?.status(), 404);
    worker.stop().await?;
    writer.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_streams_over_sse_up_to_100_percent_and_cancel_stops_a_running_job() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let writer = Service::start("command-service", &env, &[]).await?;
    let worker = Service::start("worker", &env, &quick_worker()).await?;
    let http = e2e::http();
    let r = http.post(format!("{}/jobs/selftest", writer.base_url)).json(&json!({ "steps": 20, "step_ms": 100 })).send().await?;
    let loc = location(&r);
    let mut stream = http.get(format!("{}{loc}/events", writer.base_url)).send().await?;
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(30), stream.chunk()).await?? {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let mut percents = Vec::new();
    let mut last_event = "";
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty() && !b.starts_with(':')) {
        let event = block.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or_default();
        let data: Value = serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap())?;
        if let Some(p) = data["progress"]["percent"].as_f64() {
            percents.push(p);
        }
        last_event = event;
    }
    assert_eq!(last_event, "finished", "{text}");
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "progress only rises: {percents:?}");
    assert!(percents.iter().filter(|p| **p > 0.0 && **p < 100.0).count() >= 2, "progress in between: {percents:?}");
    assert_eq!(percents.last(), Some(&100.0));

    // Cancel: a long job stops within a heartbeat and a step.
    let r = http.post(format!("{}/jobs/selftest", writer.base_url)).json(&json!({ "steps": 1000, "step_ms": 100 })).send().await?;
    let loc = location(&r);
    let url = format!("{}{loc}", writer.base_url);
    eventually(Duration::from_secs(30), "the job to run", || async {
        let job: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (job["progress"]["done"].as_i64()? > 0).then_some(())
    })
    .await?;
    let r = http.post(format!("{url}/cancel")).send().await?;
    assert_eq!(r.status(), 202);
    let job: Value = eventually(Duration::from_secs(10), "the job to stop", || async {
        let job: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
        (job["status"] == "cancelled").then_some(job)
    })
    .await?;
    assert!(job["progress"]["done"].as_i64().unwrap() < 1000, "{job}");
    worker.stop().await?;
    writer.stop().await?;
    Ok(())
}

/// Sends `parts` as a chunked upload on a raw connection (no size
/// declared); the status of the answer.
async fn chunked_upload(base: &str, parts: usize, part: &[u8]) -> anyhow::Result<u16> {
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /jobs/imports?format=ndjson HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n",
        e2e::TEST_KEY
    );
    socket.write_all(head.as_bytes()).await?;
    for _ in 0..parts {
        let chunk = format!("{:x}\r\n", part.len());
        // The server may answer and close before all is sent.
        if socket.write_all(chunk.as_bytes()).await.is_err() || socket.write_all(part).await.is_err() || socket.write_all(b"\r\n").await.is_err() {
            break;
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let mut answer = vec![0u8; 1024];
    let n = socket.read(&mut answer).await?;
    let status_line = String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned();
    Ok(status_line.split(' ').nth(1).unwrap_or("0").parse()?)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_refused_saying_what_is_wrong_and_leave_nothing_behind() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let limits = [("APP_JOBS__MAX_UPLOAD_BYTES", "1000000".to_owned()), ("APP_JOBS__MAX_LINE_BYTES", "1000".to_owned())];
    let writer = Service::start("command-service", &env, &limits).await?;
    let worker = Service::start("worker", &env, &quick_worker()).await?;
    let pool = env.pool().await?;
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (status, body)
    };

    let (status, body) = problem(upload(&writer.base_url, "format=csv", Vec::new()).await?).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("body")), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("empty"));

    let latin1 = b"type,article,charge,warehouse,quantity\nreceipt,M\xdcLLER,L1,WH-1,1\n".to_vec();
    let (status, body) = problem(upload(&writer.base_url, "format=csv", latin1).await?).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("not UTF-8: line 2"), "{body}");

    let long = format!("{{\"type\":\"receipt\",\"article\":\"{}\"}}\n", "A".repeat(2000));
    let (status, body) = problem(upload(&writer.base_url, "format=ndjson", long.into_bytes()).await?).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("line 1 is longer than 1000 bytes"), "{body}");

    let (status, body) = problem(upload(&writer.base_url, "format=xml", b"<a/>".to_vec()).await?).await;
    assert_eq!((status, body["field"].as_str()), (400, Some("format")), "{body}");

    // Declared too large: refused before a byte is read.
    let r = e2e::http()
        .post(format!("{}/jobs/imports?format=csv", writer.base_url))
        .header("content-length", "2000000000")
        .body(vec![b'x'; 10])
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    // Undeclared and too large: refused when it passes the limit.
    let mut part = [b'a'; 100];
    part[99] = b'\n';
    let status = chunked_upload(&writer.base_url, 15_000, &part).await?;
    assert_eq!(status, 413);
    let (jobs, chunks): (i64, i64) =
        sqlx::query_as("select (select count(*) from jobs), (select count(*) from job_file_chunks)").fetch_one(&pool).await?;
    assert_eq!((jobs, chunks), (0, 0), "no refused upload left a job or a chunk");

    // A wrong header is the job's failure, naming the column; no retry.
    let r = upload(&writer.base_url, "format=csv", b"type,article,colour\nreceipt,A,red\n".to_vec()).await?;
    let job = finished(&writer.base_url, &location(&r)).await?;
    assert_eq!((job["status"].as_str(), job["attempts"].as_i64()), (Some("failed"), Some(1)), "{job}");
    assert!(job["error"].as_str().unwrap().contains("colour"), "{job}");
    worker.stop().await?;
    writer.stop().await?;
    Ok(())
}
