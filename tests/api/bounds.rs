//! Bounded errors and uploads: a value echoed in an error is cut, a hostile
//! header neither comes back nor stays in the server's memory, uploads are
//! capped server-wide, and manifests are capped in count and size.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    BinaryServer, OBSERVATORY, arrow_stream, edit, observatory_steward as steward, problem,
    register, spawn_app, spawn_app_with, upload,
};

const ORG: &str = OBSERVATORY;

fn manifest(id: &str) -> Value {
    json!({
        "id": id, "title": "Counts", "description": "Counts", "sector": "health",
        "publisher": ORG, "license": "CC-BY-4.0", "tier": "open",
    })
}

/// The peak resident memory of a process so far, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

const HEADER_BYTES: usize = 250 * 1024 * 1024;

#[tokio::test]
async fn a_250_mb_csv_header_gets_a_short_error_and_the_server_does_not_hold_it() {
    let mut server = BinaryServer::empty("policy_poll_ms = 60000");
    server.start().await;
    let token = server.steward(ORG);
    let client = &server.client;
    let r = client
        .post(server.url("/v1/datasets"))
        .bearer_auth(&token)
        .json(&manifest("wide"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let before = peak_rss(server.pid());

    // One header field of 250 MB, streamed from one shared 1 MiB chunk.
    let chunk = Bytes::from(vec![b'a'; 1024 * 1024]);
    let body = futures::stream::iter(
        (0..HEADER_BYTES / chunk.len()).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let started = Instant::now();
    let r = client
        .put(server.url("/v1/datasets/wide/data"))
        .bearer_auth(&token)
        .header("content-type", "text/csv")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(text.len() < 2048, "a {}-byte error body", text.len());
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["type"], "upload-invalid", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("header"),
        "{problem}"
    );
    let after = peak_rss(server.pid());
    eprintln!(
        "peak RSS {} MB before, {} MB after, {:?}",
        before >> 20,
        after >> 20,
        started.elapsed()
    );
    // Before the fix the peak grew by some 750 MB (the value held thrice).
    assert!(
        after - before < 64 * 1024 * 1024,
        "peak RSS grew from {before} to {after}"
    );
    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.kill();
}

/// An Arrow IPC stream with one column of this name.
fn arrow_with_column(name: &str) -> Vec<u8> {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, true)]));
    let batch = RecordBatch::try_new(
        schema,
        vec![Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef],
    )
    .unwrap();
    arrow_stream(&batch)
}

#[tokio::test]
async fn values_echoed_in_errors_are_cut_to_64_bytes() {
    let app = spawn_app().await;
    let token = steward(&app);
    assert_eq!(
        register(&app, &token, &manifest("echo")).await.status(),
        201
    );
    // A column name of 100 kB in a file's schema.
    let long = "x".repeat(100_000);
    let r = app
        .client
        .put(app.url("/v1/datasets/echo/data"))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.apache.arrow.stream")
        .body(arrow_with_column(&long))
        .send()
        .await
        .unwrap();
    let body = problem(r, 422, "schema-mismatch").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("'{}…'", "x".repeat(64))),
        "{detail}"
    );
    assert!(detail.len() < 300, "{detail}");

    // A manifest with an unknown field of 100 kB, and a bad mask.
    let mut m = manifest("echo-2");
    m[&long] = json!(1);
    let body = problem(register(&app, &token, &m).await, 422, "invalid-manifest").await;
    assert!(body["detail"].as_str().unwrap().len() < 1100, "{body}");
    assert!(body["detail"].as_str().unwrap().contains('…'), "{body}");
    let mut m = manifest("echo-3");
    m["columns"] = json!([{"name": "a", "description": "a",
        "classification": "quasi-identifier", "mask": long}]);
    let body = problem(register(&app, &token, &m).await, 422, "invalid-manifest").await;
    assert!(body["detail"].as_str().unwrap().len() < 400, "{body}");

    // A filter naming an unknown column of 3000 bytes.
    let name = "y".repeat(3000);
    let filter = format!("{name} = 1");
    let r = app
        .data("vaccination-coverage", &[("filter", filter.as_str())], None)
        .await;
    let body = problem(r, 400, "unknown-column").await;
    assert_eq!(body["column"], format!("{}…", "y".repeat(64)));
    assert!(body["detail"].as_str().unwrap().len() < 200, "{body}");
}

#[tokio::test]
async fn uploads_beyond_the_server_wide_cap_get_429_with_retry_after() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.ingest.max_concurrent_uploads = 1;
    })
    .await;
    let token = steward(&app);
    assert_eq!(
        register(&app, &token, &manifest("slow")).await.status(),
        201
    );
    // The first upload sends its header, then waits to be released.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let body = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("n,label\n")) })
        .chain(futures::stream::once(async move {
            let _ = released.await;
            Ok(Bytes::from("1,one\n2,two\n"))
        }));
    let first = {
        let client = app.client.clone();
        let url = app.url("/v1/datasets/slow/data");
        let token = token.clone();
        tokio::spawn(async move {
            client
                .put(url)
                .bearer_auth(token)
                .header("content-type", "text/csv")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = upload(&app, &token, "slow", "text/csv", "n,label\n3,three\n").await;
    assert_eq!(r.headers()["retry-after"], "5");
    problem(r, 429, "too-many-uploads").await;
    // Reading is not affected.
    assert_eq!(
        app.get("/v1/datasets/vaccination-coverage/data?limit=1", None)
            .await
            .status(),
        200
    );
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().status(), 201);
    // The slot is free again.
    let r = upload(&app, &token, "slow", "text/csv", "n,label\n3,three\n").await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn manifests_are_capped_in_count_per_publisher_and_in_size() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.limits.max_datasets_per_publisher = 2;
    })
    .await;
    let token = steward(&app);
    for id in ["one", "two"] {
        assert_eq!(register(&app, &token, &manifest(id)).await.status(), 201);
    }
    let body = problem(
        register(&app, &token, &manifest("three")).await,
        409,
        "too-many-datasets",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains('2'), "{body}");
    // Another publisher is not affected.
    let other = app.token_in("oz@other.example", &[Role::Steward], "Other Org");
    let mut m = manifest("elsewhere");
    m["publisher"] = json!("Other Org");
    assert_eq!(register(&app, &other, &m).await.status(), 201);

    // Size: a long description, too many keywords or columns.
    let mut m = manifest("big");
    m["publisher"] = json!("Other Org");
    m["description"] = json!("d".repeat(5000));
    let body = problem(register(&app, &other, &m).await, 422, "invalid-manifest").await;
    assert!(
        body["detail"].as_str().unwrap().contains("description"),
        "{body}"
    );
    m["description"] = json!("fine");
    m["keywords"] = json!((0..33).map(|i| format!("k{i}")).collect::<Vec<_>>());
    problem(register(&app, &other, &m).await, 422, "invalid-manifest").await;
    m["keywords"] = json!([]);
    m["columns"] = json!(
        (0..2001)
            .map(|i| json!({"name": format!("c{i}"), "description": ""}))
            .collect::<Vec<_>>()
    );
    problem(register(&app, &other, &m).await, 422, "invalid-manifest").await;
    // An edit is held to the same caps.
    let r = edit(
        &app,
        &other,
        "elsewhere",
        json!({"description": "d".repeat(5000)}),
    )
    .await;
    problem(r, 422, "invalid-manifest").await;

    // So a full listing page stays small.
    let page = app
        .get("/v1/datasets?page_size=100", Some(&other))
        .await
        .bytes()
        .await
        .unwrap();
    assert!(page.len() < 100 * 8 * 1024, "{} bytes", page.len());
}

/// Filters a few dozen bytes long once held a server thread for seconds
/// to hours: the SQL parser backtracks at each `.`, nested bracket,
/// `INTERVAL`, `CASE` and `NOT -`, so its time doubled with each. They are refused on tokens
/// first, with a 400, and the server answers the next request at once.
#[tokio::test]
async fn filters_that_cost_the_parser_exponential_time_are_refused_at_once() {
    let app = spawn_app().await;
    let costly = [
        format!("region = {}a", "a.".repeat(30)),
        format!("region = {}1", "position(".repeat(30)),
        format!("region = {}'1'", "INTERVAL ".repeat(30)),
        "NOT-".repeat(30),
        "CASE-".repeat(30),
    ];
    for filter in costly {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            app.data("vaccination-coverage", &[("filter", &filter)], None),
        )
        .await
        .expect("answered within 10 s (it took hours)");
        problem(response, 400, "invalid-filter").await;
    }
    let response = app
        .data("vaccination-coverage", &[("limit", "1")], None)
        .await;
    assert_eq!(response.status(), 200);
}
