//! Where the catalogue lives: a folder another process is writing is
//! served read-only, and a catalogue in an object store takes versions,
//! refusals and retirements as a folder does, staging nothing once an
//! upload ends.

use crate::helpers::{
    TestApp, arrow_batches, in_object_store, observatory_steward as steward, problem, register,
    retire, spawn_app_with, strings, upload,
};
use crate::steward_helpers::{manifest, published, published_twice, still_serving, visit_columns};

/// A server whose catalogue is an empty in-memory object store.
async fn in_memory() -> TestApp {
    spawn_app_with(crate::helpers::ROWS, in_object_store).await
}

/// Nothing is staged in the state folder.
fn assert_nothing_staged(app: &TestApp) {
    let staged = std::fs::read_dir(app.state_dir().join("staging"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
}

#[tokio::test]
async fn a_catalogue_another_process_is_writing_is_served_read_only() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        // Another writer holds the folder for the server's whole life.
        let lock = sluice::catalog::local::LocalRoot::open(&s.storage.datasets).unwrap();
        std::mem::forget(lock);
    })
    .await;
    let token = steward(&app);
    problem(
        register(&app, &token, &manifest("blocked", visit_columns())).await,
        503,
        "catalog-read-only",
    )
    .await;
    still_serving(&app).await;
}

#[tokio::test]
async fn an_object_store_catalogue_serves_every_version() {
    let app = in_memory().await;
    published_twice(&app, "in-memory").await;
    let first = arrow_batches(app.get("/v1/datasets/in-memory/data?version=1", None).await).await;
    assert_eq!(strings(&first, "clinic"), ["A1", "B2", "C3"]);
    let latest = arrow_batches(app.get("/v1/datasets/in-memory/data", None).await).await;
    assert_eq!(strings(&latest, "visits"), ["12", "9"]);
    assert_nothing_staged(&app);
}

#[tokio::test]
async fn an_object_store_catalogue_refuses_a_mismatched_upload_and_stages_nothing() {
    let app = in_memory().await;
    let token = published(&app, "in-memory").await;
    problem(
        upload(&app, &token, "in-memory", "text/csv", "clinic\nA\n").await,
        422,
        "schema-mismatch",
    )
    .await;
    assert_nothing_staged(&app);
}

#[tokio::test]
async fn a_dataset_in_an_object_store_is_retired_as_in_a_folder() {
    let app = in_memory().await;
    let token = published_twice(&app, "in-memory").await;
    let r = retire(&app, &token, "in-memory").await;
    assert_eq!(r.status(), 200);
    problem(
        app.get("/v1/datasets/in-memory/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    assert_nothing_staged(&app);
}
