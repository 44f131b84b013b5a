//! Issue 6: the audit trail and metrics, seen from outside.

use std::time::Duration;

use sluice::audit::{Decision, Event, Outcome, Phase, Record, read_all, verify};
use sluice::auth::Role;

use crate::helpers::{TestApp, arrow_batches, problem, rows, spawn_app};

fn audit_dir(app: &TestApp) -> std::path::PathBuf {
    app.state_dir().join("audit")
}

/// Waits until a record matching `pred` is on disk.
async fn wait_record(app: &TestApp, pred: impl Fn(&Record) -> bool) -> Record {
    for _ in 0..50 {
        if let Some(r) = read_all(&audit_dir(app))
            .unwrap()
            .into_iter()
            .find(|r| pred(r))
        {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no such audit record");
}

#[tokio::test]
async fn a_data_request_leaves_a_decision_and_an_outcome_record() {
    let app = spawn_app().await;
    let response = app
        .data(
            "hospital-admissions",
            &[
                ("columns", "region,length_of_stay"),
                ("filter", "length_of_stay > 3"),
                ("limit", "40"),
            ],
            Some(&app.alice()),
        )
        .await;
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let served = rows(&arrow_batches(response).await) as u64;
    let same = |r: &Record| r.request_id.as_deref() == Some(request_id.as_str());
    let decision = wait_record(&app, |r| same(r) && r.phase == Some(Phase::Decision)).await;
    assert_eq!(decision.event, Event::Data);
    assert_eq!(decision.subject.as_deref(), Some("alice@uni.example"));
    assert_eq!(decision.roles, ["researcher"]);
    assert_eq!(decision.grant.as_deref(), Some("los-study"));
    assert_eq!(decision.purpose.as_deref(), Some("Length-of-stay study"));
    assert_eq!(decision.dataset.as_deref(), Some("hospital-admissions"));
    assert_eq!(decision.version, Some(1));
    assert_eq!(
        decision.columns.as_deref(),
        Some(&["region".to_string(), "length_of_stay".to_string()][..])
    );
    assert_eq!(decision.filter.as_deref(), Some("length_of_stay > 3"));
    assert_eq!(decision.format.as_deref(), Some("arrow"));
    assert_eq!(decision.decision, Some(Decision::Allow));
    let outcome = wait_record(&app, |r| same(r) && r.phase == Some(Phase::Outcome)).await;
    assert_eq!(outcome.outcome, Some(Outcome::Complete));
    assert_eq!(outcome.rows, Some(served));
    assert!(outcome.bytes.unwrap() > 0);
    assert!(outcome.duration_ms.is_some());
    assert!(!outcome.time.is_empty());
    let report = verify(&audit_dir(&app), &crate::crash::anchor(&app.state_dir())).unwrap();
    assert!(report.records >= 2);
}

#[tokio::test]
async fn denials_and_invalid_requests_are_recorded_too() {
    let app = spawn_app().await;
    let rita = app.researcher();
    problem(
        app.data("hospital-admissions", &[], Some(&rita)).await,
        403,
        "grant-required",
    )
    .await;
    let denied = wait_record(&app, |r| {
        r.subject.as_deref() == Some("rita@uni.example") && r.decision == Some(Decision::Deny)
    })
    .await;
    assert_eq!(denied.reason.as_deref(), Some("grant-required"));
    problem(
        app.data("vaccination-coverage", &[("filter", "nope = 1")], None)
            .await,
        400,
        "unknown-column",
    )
    .await;
    let refused = wait_record(&app, |r| r.decision == Some(Decision::Refused)).await;
    assert_eq!(refused.reason.as_deref(), Some("unknown-column"));
    assert_eq!(refused.subject, None);
}

#[tokio::test]
async fn admins_read_the_trail_and_nobody_else_does() {
    let app = spawn_app().await;
    assert_eq!(
        app.data("school-enrolment", &[("limit", "2")], None)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.data("vaccination-coverage", &[("limit", "2")], None)
            .await
            .status(),
        200
    );
    wait_record(&app, |r| {
        r.dataset.as_deref() == Some("vaccination-coverage") && r.phase == Some(Phase::Outcome)
    })
    .await;
    problem(app.get("/v1/audit", None).await, 401, "token-required").await;
    problem(
        app.get("/v1/audit", Some(&app.researcher())).await,
        403,
        "role-required",
    )
    .await;
    let admin = app.token("ada@sluice.example", &[Role::Admin], &[]);
    let body: serde_json::Value = app
        .get_json("/v1/audit?dataset=school-enrolment", Some(&admin))
        .await;
    let records = body["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r["dataset"] == "school-enrolment"));
    let page: serde_json::Value = app.get_json("/v1/audit?page_size=1", Some(&admin)).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 1);
    assert!(page["next_page_token"].is_string());
    problem(
        app.get("/v1/audit?since=yesterday", Some(&admin)).await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn metrics_are_exposed_to_admins_and_move_with_traffic() {
    let app = spawn_app().await;
    // Per-dataset series say who reads what: not for anonymous scrapers or
    // researchers.
    problem(app.get("/metrics", None).await, 401, "token-required").await;
    problem(
        app.get("/metrics", Some(&app.researcher())).await,
        403,
        "role-required",
    )
    .await;
    let admin = app.admin();
    let scrape = || async {
        let response = app.get("/metrics", Some(&admin)).await;
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let rows_served = |text: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with("sluice_rows_served_total{")
                    && l.contains("dataset=\"school-enrolment\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let before = scrape().await;
    let body = app
        .data("school-enrolment", &[("limit", "7")], None)
        .await
        .bytes()
        .await
        .unwrap();
    assert!(!body.is_empty());
    refused_token(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = scrape().await;
    assert_eq!(rows_served(&after) - rows_served(&before), 7);
    for name in [
        "sluice_http_requests_total{",
        "sluice_slice_first_byte_seconds_bucket{",
        "sluice_slice_duration_seconds_bucket{",
        "sluice_active_streams ",
        "sluice_auth_failures_total{reason=\"malformed\"}",
        "sluice_audit_write_seconds_count ",
    ] {
        assert!(after.contains(name), "{name} missing from /metrics");
    }
    assert!(after.contains("route=\"/v1/datasets/{id}/data\",status=\"200\""));
}

async fn refused_token(app: &TestApp) {
    problem(
        app.data("school-results", &[], Some("not.a.jwt")).await,
        401,
        "invalid-token",
    )
    .await;
}

#[tokio::test]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let app = crate::helpers::spawn_app_with(crate::helpers::ROWS, |s| {
        s.limits.requests_per_minute = 1;
        s.limits.request_burst = 3;
    })
    .await;
    let rita = app.researcher();
    for _ in 0..3 {
        assert_eq!(app.get("/v1/datasets", Some(&rita)).await.status(), 200);
    }
    let limited = app.get("/v1/datasets", Some(&rita)).await;
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    problem(limited, 429, "rate-limited").await;
    // Another caller has their own budget.
    assert_eq!(
        app.get("/v1/datasets", Some(&app.alice())).await.status(),
        200
    );
}

#[tokio::test]
async fn a_caller_may_hold_only_so_many_streams_at_once() {
    let app =
        crate::helpers::spawn_app_with(400_000, |s| s.limits.max_streams_per_caller = 1).await;
    let rita = app.researcher();
    let mut first = app
        .data("vaccination-coverage", &[("format", "csv")], Some(&rita))
        .await;
    let _ = first.chunk().await.unwrap();
    problem(
        app.data("vaccination-coverage", &[("limit", "1")], Some(&rita))
            .await,
        429,
        "too-many-streams",
    )
    .await;
    // Someone else is not affected.
    assert_eq!(
        app.data(
            "vaccination-coverage",
            &[("limit", "1")],
            Some(&app.alice())
        )
        .await
        .status(),
        200
    );
    drop(first);
    for _ in 0..50 {
        if app
            .data("vaccination-coverage", &[("limit", "1")], Some(&rita))
            .await
            .status()
            == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the slot was not freed when the first stream ended");
}

#[tokio::test]
async fn the_engine_runs_so_many_answers_at_once_and_a_stalled_reader_gives_its_place_back() {
    let app = crate::helpers::spawn_app_with(400_000, |s| {
        s.limits.max_running_slices = 1;
        s.limits.slice_queue_secs = 1;
        s.limits.stalled_reader_secs = 3;
    })
    .await;
    let rita = app.researcher();
    // A large answer nobody reads: it holds the engine's one place.
    let mut stalled = app
        .data("vaccination-coverage", &[("format", "csv")], Some(&rita))
        .await;
    assert_eq!(stalled.status(), 200);
    let _ = stalled.chunk().await.unwrap();
    // Anyone else waits in line for a second, then is told to come back.
    let busy = app
        .data(
            "vaccination-coverage",
            &[("limit", "1")],
            Some(&app.alice()),
        )
        .await;
    assert!(busy.headers().contains_key("retry-after"));
    problem(busy, 503, "server-busy").await;
    // Once the reader has taken nothing for `stalled_reader_secs`, the
    // answer is abandoned and the place is free again.
    for _ in 0..100 {
        let next = app
            .data(
                "vaccination-coverage",
                &[("limit", "1")],
                Some(&app.alice()),
            )
            .await;
        if next.status() == 200 {
            drop(stalled);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stalled answer kept its place");
}

#[tokio::test]
async fn an_aggregate_beyond_the_engines_memory_is_refused_and_the_server_keeps_serving() {
    let app = crate::helpers::spawn_app_with(20_000, |s| {
        s.limits.engine_memory_bytes = 16 * 1024;
    })
    .await;
    let rita = app.researcher();
    let busy = app
        .client
        .get(app.url("/v1/datasets/vaccination-coverage/aggregate"))
        .query(&[("group_by", "local_area,year,vaccine,age_group")])
        .bearer_auth(&rita)
        .send()
        .await
        .unwrap();
    assert!(busy.headers().contains_key("retry-after"));
    problem(busy, 503, "server-busy").await;
    // Streams hold no hash tables: they still run under the same pool.
    let batches = arrow_batches(
        app.data("vaccination-coverage", &[("limit", "5")], Some(&rita))
            .await,
    )
    .await;
    assert_eq!(rows(&batches), 5);
}
