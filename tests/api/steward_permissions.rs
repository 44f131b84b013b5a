//! Who may change a dataset: stewards of its publisher and admins. A
//! researcher or an anonymous caller may not register or upload, and a
//! steward of another organisation may not register for the publisher, nor
//! upload, edit or retire its datasets.

use serde_json::json;
use sluice::auth::Role;

use crate::helpers::{TestApp, edit, problem, register, retire, spawn_app, upload};
use crate::steward_helpers::{VISITS_V2, assert_nothing_left, manifest, published};

/// A steward of an organisation that publishes none of the datasets.
fn other_steward(app: &TestApp) -> String {
    app.token_in(
        "olga@elsewhere.example",
        &[Role::Steward],
        "Elsewhere Trust",
    )
}

#[tokio::test]
async fn a_researcher_may_neither_register_nor_upload() {
    let app = spawn_app().await;
    published(&app, "guarded").await;
    let researcher = app.researcher();
    problem(
        register(&app, &researcher, &manifest("mine", json!([]))).await,
        403,
        "steward-required",
    )
    .await;
    problem(
        upload(&app, &researcher, "guarded", "text/csv", VISITS_V2).await,
        403,
        "steward-required",
    )
    .await;
    assert_nothing_left(&app, "guarded", &["1"]);
}

#[tokio::test]
async fn registering_without_a_token_is_refused() {
    let app = spawn_app().await;
    let anonymous = app
        .client
        .post(app.url("/v1/datasets"))
        .json(&manifest("mine", json!([])))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "token-required").await;
}

#[tokio::test]
async fn a_steward_registers_only_for_their_own_organisation() {
    let app = spawn_app().await;
    problem(
        register(&app, &other_steward(&app), &manifest("theirs", json!([]))).await,
        403,
        "not-publisher",
    )
    .await;
}

#[tokio::test]
async fn another_organisations_steward_may_not_upload_edit_or_retire() {
    let app = spawn_app().await;
    published(&app, "guarded").await;
    let other = other_steward(&app);
    problem(
        upload(&app, &other, "guarded", "text/csv", VISITS_V2).await,
        403,
        "not-publisher",
    )
    .await;
    problem(retire(&app, &other, "guarded").await, 403, "not-publisher").await;
    problem(
        edit(&app, &other, "guarded", json!({"title": "mine"})).await,
        403,
        "not-publisher",
    )
    .await;
    assert_nothing_left(&app, "guarded", &["1"]);
}

#[tokio::test]
async fn an_admin_may_upload_to_any_publishers_dataset() {
    let app = spawn_app().await;
    published(&app, "guarded").await;
    let admin = app.token("root", &[Role::Admin], &[]);
    let r = upload(&app, &admin, "guarded", "text/csv", VISITS_V2).await;
    assert_eq!(r.status(), 201);
}
