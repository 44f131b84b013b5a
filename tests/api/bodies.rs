//! Bodies in a hostile world: a caller who may not make a change is
//! answered from the request head, before any body is read; a body that
//! trickles or stalls is cut at one deadline (408), and the server keeps
//! serving everyone else meanwhile.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, spawn_app_with};

/// Sends a request head announcing `length` body bytes and `sent` of them,
/// then waits (up to `wait`) for the status line. Returns the status, or
/// `None` if nothing came in time.
async fn partial_request(
    app: &TestApp,
    method_path: &str,
    token: Option<&str>,
    length: usize,
    sent: &[u8],
    wait: Duration,
) -> (Option<u16>, TcpStream) {
    let address = app.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method_path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{auth}\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(sent).await.unwrap();
    let mut answer = vec![0u8; 64];
    let status = match tokio::time::timeout(wait, socket.read(&mut answer)).await {
        Ok(Ok(n)) if n >= 12 => std::str::from_utf8(&answer[9..12])
            .ok()
            .and_then(|s| s.parse().ok()),
        _ => None,
    };
    (status, socket)
}

#[tokio::test]
async fn callers_who_may_not_change_the_catalogue_are_answered_before_their_body() {
    let app = spawn_app_with(50, |s| s.limits.body_timeout_secs = 30).await;
    let started = Instant::now();
    let mut open = Vec::new();
    // 120 anonymous manifests announcing 1 MiB, each stalled after 10 KB.
    for _ in 0..120 {
        let (status, socket) = partial_request(
            &app,
            "POST /v1/datasets",
            None,
            1 << 20,
            &[b' '; 10_000],
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(status, Some(401), "answered from the head");
        open.push(socket);
    }
    // A researcher's PATCH is refused the same way.
    let researcher = app.researcher();
    let (status, _socket) = partial_request(
        &app,
        "PATCH /v1/datasets/hospital-admissions",
        Some(&researcher),
        1 << 20,
        b"{",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status, Some(403));
    assert!(started.elapsed() < Duration::from_secs(20));
    // Others are served meanwhile.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
    let data = app
        .data("vaccination-coverage", &[("limit", "3")], None)
        .await;
    assert_eq!(data.status(), 200);
}

#[tokio::test]
async fn a_body_that_trickles_or_stalls_is_cut_at_the_deadline() {
    let app = spawn_app_with(50, |s| s.limits.body_timeout_secs = 2).await;
    let admin = app.admin();
    for (method_path, token) in [
        ("POST /v1/datasets", Some(admin.as_str())),
        (
            "PATCH /v1/datasets/hospital-admissions",
            Some(admin.as_str()),
        ),
        ("POST /v1/datasets/vaccination-coverage/query", None),
    ] {
        let started = Instant::now();
        let (status, mut socket) = partial_request(
            &app,
            method_path,
            token,
            1000,
            b"{",
            Duration::from_millis(500),
        )
        .await;
        assert_eq!(status, None, "{method_path}: still waiting for the body");
        // Trickle a byte now and then: the deadline is for the whole body.
        let mut answer = vec![0u8; 64];
        let status = loop {
            let _ = socket.write_all(b" ").await;
            match tokio::time::timeout(Duration::from_millis(300), socket.read(&mut answer)).await {
                Ok(Ok(n)) if n >= 12 => {
                    break std::str::from_utf8(&answer[9..12]).unwrap().to_owned();
                }
                _ => assert!(started.elapsed() < Duration::from_secs(10), "{method_path}"),
            }
        };
        assert_eq!(status, "408", "{method_path}");
        assert!(started.elapsed() < Duration::from_secs(6), "{method_path}");
    }
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn bodies_in_flight_share_one_server_wide_budget() {
    // Eleven query bodies stalled after 50 KB hold 550 KB of a 600 KB budget.
    let app = spawn_app_with(50, |s| {
        s.limits.body_timeout_secs = 8;
        s.limits.max_body_bytes_in_flight = 600_000;
    })
    .await;
    let query = "POST /v1/datasets/vaccination-coverage/query";
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..11 {
        let (status, socket) = partial_request(
            &app,
            query,
            None,
            60_000,
            &[b' '; 50_000],
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(status, None, "a body within the budget waits for the rest");
        stalled.push(socket);
    }
    // The twelfth would go past it: refused at once, with a time to retry.
    let address = app.base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(address).await.unwrap();
    let head = format!(
        "{query} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(&[b' '; 60_000]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 2"),
        "{answer}"
    );
    assert!(answer.contains("\"server-busy\""), "{answer}");
    // Everyone else is served meanwhile.
    let data = app
        .data("vaccination-coverage", &[("limit", "3")], None)
        .await;
    assert_eq!(data.status(), 200);
    // Once the stalled bodies time out, the budget is whole again.
    for mut socket in stalled {
        let mut answer = vec![0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut answer))
            .await
            .expect("an answer at the deadline")
            .unwrap();
        assert_eq!(&answer[9..12.min(n)], b"408");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    let body = serde_json::json!({ "columns": ["region"], "limit": 2 });
    let response = app
        .client
        .post(format!(
            "{}/v1/datasets/vaccination-coverage/query",
            app.base
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
