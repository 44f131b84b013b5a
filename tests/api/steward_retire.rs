//! Retiring a dataset: it is no longer served, shown or listed to readers;
//! its stewards still see it; it takes no more uploads; every version stays
//! on disk; and the retirement is on the audit trail.

use serde_json::Value;

use crate::helpers::{TestApp, audit_records, problem, retire, spawn_app, upload};
use crate::steward_helpers::{VISITS_V2, assert_nothing_left, published_twice};

/// Publishes two versions of `retired`, retires it, and returns the
/// steward's token.
async fn retired(app: &TestApp) -> String {
    let token = published_twice(app, "retired").await;
    let r = retire(app, &token, "retired").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "retired");
    token
}

#[tokio::test]
async fn a_retired_dataset_is_neither_served_shown_nor_listed() {
    let app = spawn_app().await;
    retired(&app).await;
    problem(
        app.get("/v1/datasets/retired/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/retired", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    let list: Value = app.get_json("/v1/datasets?q=clinic", None).await;
    assert!(list["datasets"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn its_stewards_still_see_a_retired_dataset() {
    let app = spawn_app().await;
    let token = retired(&app).await;
    let meta: Value = app.get_json("/v1/datasets/retired", Some(&token)).await;
    assert_eq!(meta["status"], "retired");
    let list: Value = app.get_json("/v1/datasets?q=clinic", Some(&token)).await;
    assert_eq!(list["datasets"][0]["status"], "retired");
}

#[tokio::test]
async fn a_retired_dataset_takes_no_uploads_and_keeps_every_version_on_disk() {
    let app = spawn_app().await;
    let token = retired(&app).await;
    problem(
        upload(&app, &token, "retired", "text/csv", VISITS_V2).await,
        409,
        "dataset-retired",
    )
    .await;
    assert_nothing_left(&app, "retired", &["1", "2"]);
}

#[tokio::test]
async fn a_retirement_is_on_the_audit_trail() {
    let app = spawn_app().await;
    retired(&app).await;
    let records = audit_records(&app, "retired").await;
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "retire" && r["decision"] == "allow")
    );
}
