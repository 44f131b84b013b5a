//! What the steward tests share: a manifest and the visit columns, two
//! versions of their data, a dataset published with them, and the checks
//! that a refusal left nothing behind and the server still serves.

use serde_json::{Value, json};

use crate::helpers::{
    OBSERVATORY, TestApp, arrow_batches, observatory_steward as steward, register, rows, upload,
};

/// A manifest of `id` with these columns, published by [`OBSERVATORY`].
pub fn manifest(id: &str, columns: Value) -> Value {
    json!({
        "id": id,
        "title": "Clinic visits",
        "description": "Visits per clinic and month",
        "sector": "health",
        "publisher": OBSERVATORY,
        "license": "CC-BY-4.0",
        "keywords": ["clinics"],
        "tier": "open",
        "columns": columns,
    })
}

pub fn visit_columns() -> Value {
    json!([
        {"name": "clinic", "description": "Clinic code", "key": true},
        {"name": "month", "description": "Month", "type": "date"},
        {"name": "visits", "description": "Visits", "type": "int64"},
    ])
}

pub const VISITS_V1: &str =
    "clinic,month,visits\nA1,2024-01-01,10\nB2,2024-01-01,7\nC3,2024-02-01,3\n";
pub const VISITS_V2: &str = "clinic,month,visits\nA1,2024-03-01,12\nB2,2024-03-01,9\n";

/// Registers `id` with the visit columns and uploads version 1; returns
/// the steward's token.
pub async fn published(app: &TestApp, id: &str) -> String {
    let token = steward(app);
    let r = register(app, &token, &manifest(id, visit_columns())).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = upload(app, &token, id, "text/csv", VISITS_V1).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    token
}

/// [`published`], then version 2 uploaded too.
pub async fn published_twice(app: &TestApp, id: &str) -> String {
    let token = published(app, id).await;
    let r = upload(app, &token, id, "text/csv", VISITS_V2).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
    token
}

/// Staging is empty and only these version folders exist.
pub fn assert_nothing_left(app: &TestApp, id: &str, versions: &[&str]) {
    let root = &app.settings.storage.datasets;
    let staging: Vec<_> = std::fs::read_dir(root.join(".staging"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(staging.is_empty(), "staging left behind: {staging:?}");
    let mut found: Vec<String> = std::fs::read_dir(root.join(id).join("versions"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    assert_eq!(found, versions);
}

/// A sample dataset is still served.
pub async fn still_serving(app: &TestApp) {
    let r = app
        .get("/v1/datasets/vaccination-coverage/data?limit=3", None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(rows(&arrow_batches(r).await), 3);
}
