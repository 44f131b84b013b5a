//! Registering a dataset: a new id is a draft at its own location, neither
//! listed nor served; a taken id is a conflict; an id with path syntax, an
//! unknown field, a missing licence or a body that is not JSON is refused
//! and leaves nothing behind.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, observatory_steward as steward, problem, problem_saying, register, spawn_app, upload,
};
use crate::steward_helpers::{VISITS_V1, manifest, still_serving, visit_columns};

/// No folder of these ids exists, and the server still serves.
async fn left_nothing(app: &TestApp, ids: &[&str]) {
    for id in ids {
        assert!(
            !app.settings.storage.datasets.join(id).exists(),
            "{id} left behind"
        );
    }
    still_serving(app).await;
}

/// Registering `manifest` is refused as an invalid manifest whose detail
/// names `needle`, and no folder of these ids is made.
async fn invalid_manifest(app: &TestApp, manifest: &Value, needle: &str, ids: &[&str]) {
    let token = steward(app);
    let r = register(app, &token, manifest).await;
    problem_saying(r, 422, "invalid-manifest", needle).await;
    left_nothing(app, ids).await;
}

#[tokio::test]
async fn a_registered_dataset_is_a_draft_at_its_own_location() {
    let app = spawn_app().await;
    let token = steward(&app);
    let r = register(&app, &token, &manifest("clinic-visits", visit_columns())).await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"].to_str().unwrap(),
        "/v1/datasets/clinic-visits"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "draft");
}

#[tokio::test]
async fn registering_a_taken_id_is_a_conflict() {
    let app = spawn_app().await;
    let token = steward(&app);
    let m = manifest("clinic-visits", visit_columns());
    assert_eq!(register(&app, &token, &m).await.status(), 201);
    problem(register(&app, &token, &m).await, 409, "dataset-exists").await;
}

#[tokio::test]
async fn a_draft_is_neither_listed_nor_served() {
    let app = spawn_app().await;
    let token = steward(&app);
    let m = manifest("clinic-visits", visit_columns());
    assert_eq!(register(&app, &token, &m).await.status(), 201);
    let list: Value = app.get_json("/v1/datasets?q=clinic", None).await;
    assert_eq!(list["datasets"].as_array().unwrap().len(), 0);
    problem(
        app.get("/v1/datasets/clinic-visits/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
}

#[tokio::test]
async fn an_id_with_path_syntax_is_refused_and_reaches_no_folder() {
    let app = spawn_app().await;
    let mut bad_id = manifest("x", json!([]));
    bad_id["id"] = json!("../etc");
    invalid_manifest(&app, &bad_id, "dataset id", &["x", "etc"]).await;
    problem(
        upload(&app, &steward(&app), "..%2Fetc", "text/csv", VISITS_V1).await,
        404,
        "dataset-not-found",
    )
    .await;
    left_nothing(&app, &["x", "etc"]).await;
}

#[tokio::test]
async fn a_manifest_with_an_unknown_field_is_refused() {
    let app = spawn_app().await;
    let mut unknown = manifest("y", json!([]));
    unknown["colour"] = json!("red");
    invalid_manifest(&app, &unknown, "colour", &["y"]).await;
}

#[tokio::test]
async fn a_manifest_without_a_license_is_refused() {
    let app = spawn_app().await;
    let mut unlicensed = manifest("z", json!([]));
    unlicensed.as_object_mut().unwrap().remove("license");
    invalid_manifest(&app, &unlicensed, "license", &["z"]).await;
}

#[tokio::test]
async fn a_manifest_that_is_not_json_is_refused() {
    let app = spawn_app().await;
    let token = steward(&app);
    let r = app
        .client
        .post(app.url("/v1/datasets"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(r, 400, "invalid-parameter").await;
    left_nothing(&app, &[]).await;
}
