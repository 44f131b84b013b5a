//! Issue 20: `POST /v1/datasets/{id}/rewrite` writes the current version's
//! rows again with today's writer as the next version, through the upload
//! commit; admins only; the old version stays as it was.

use serde_json::Value;
use sluice::auth::Role;

use crate::helpers::{arrow_batches, problem, retire, rows, spawn_app_with, strings};

const ID: &str = "vaccination-coverage";

async fn rewrite(app: &crate::helpers::TestApp, token: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/datasets/{ID}/rewrite")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_admin_rewrites_the_current_version_as_the_next_with_the_same_rows() {
    let app = spawn_app_with(500, |_| {}).await;
    let before = std::fs::read(
        app.settings
            .storage
            .datasets
            .join(ID)
            .join("versions/1/part-0.parquet"),
    )
    .unwrap();

    let steward = app.token_in(
        "sam@agency.example",
        &[Role::Steward],
        "Example Public Health Agency",
    );
    problem(rewrite(&app, &steward).await, 403, "admin-required").await;

    let response = rewrite(&app, &app.admin()).await;
    assert_eq!(response.status(), 201);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["rows"], 500);

    let read = |version: &'static str| {
        let app = &app;
        async move { arrow_batches(app.data(ID, &[("version", version)], None).await).await }
    };
    let (old, new) = (read("1").await, read("2").await);
    assert_eq!(rows(&old), 500);
    assert_eq!(rows(&new), 500);
    for column in ["region", "year", "vaccine", "coverage_pct"] {
        let (mut a, mut b) = (strings(&old, column), strings(&new, column));
        a.sort();
        b.sort();
        assert_eq!(a, b, "{column}");
    }
    // The old version's file is untouched.
    let after = std::fs::read(
        app.settings
            .storage
            .datasets
            .join(ID)
            .join("versions/1/part-0.parquet"),
    )
    .unwrap();
    assert_eq!(before, after);
    let shown: Value = app.get_json(&format!("/v1/datasets/{ID}"), None).await;
    assert_eq!(shown["version"], 2);

    // Nothing to rewrite once retired.
    retire(&app, &app.admin(), ID).await;
    problem(rewrite(&app, &app.admin()).await, 409, "dataset-retired").await;
}

/// The guard that keeps a rewrite from reverting an upload published while
/// it ran: publishing "based on" a version that is no longer current
/// changes nothing.
#[tokio::test]
async fn a_version_based_on_a_stale_one_is_not_published() {
    use sluice::catalog::{LiveCatalog, WriteError};
    use sluice::domain::DatasetId;

    let dir = tempfile::tempdir().unwrap();
    let datasets = dir.path().join("datasets");
    sluice::demo_data::write_all(&datasets, 100, 42, Some(ID)).unwrap();
    let catalog = LiveCatalog::open_local(&datasets).await.unwrap();
    let id = DatasetId::parse(ID).unwrap();
    let staging = catalog.staging().await.unwrap();
    std::fs::create_dir_all(staging.output()).unwrap();
    std::fs::copy(
        datasets.join(ID).join("versions/1/part-0.parquet"),
        staging.output().join("part-00000.parquet"),
    )
    .unwrap();

    let seen = catalog.snapshot().get(&id).cloned().unwrap();
    let key = sluice::catalog::profile::ProfileKey::from_derived([0; 32]);
    let publication = sluice::catalog::live::Publication {
        by: "test",
        key: &key,
        based_on: Some(0),
    };
    let refused = catalog.publish(&seen, staging, &[], publication).await;
    assert!(matches!(refused, Err(WriteError::Moved(1))), "{refused:?}");
    let now = catalog.snapshot();
    assert_eq!(now.get(&id).unwrap().manifest.version, 1);
    assert!(!datasets.join(ID).join("versions/2").exists());
}
