//! Stewards and admins preview what they publish (issue 33): `GET
//! …/data?as=tier` or `?as=<grant id>` answers at most 100 rows of any
//! version, held ones included, exactly as that tier or grant would see
//! them; the upload answer's `data_url` is such a preview; nobody else may
//! preview; each preview is audited.

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    arrow_batches, audit_records, column_names, observatory_steward, problem, register, rows,
    spawn_app, strings, upload,
};
use crate::steward_helpers::manifest;

#[tokio::test]
async fn a_steward_previews_a_held_version_through_the_upload_answers_link() {
    let app = spawn_app().await;
    let token = observatory_steward(&app);
    let r = register(&app, &token, &manifest("fresh", json!([]))).await;
    assert_eq!(r.status(), 201);
    let r = upload(
        &app,
        &token,
        "fresh",
        "text/csv",
        "clinic,visits\nA1,3\nB2,5\n",
    )
    .await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["in_review"], true);
    let link = answer["data_url"].as_str().unwrap();
    assert!(link.ends_with("as=tier"), "{link}");
    let batches = arrow_batches(app.get(link, Some(&token)).await).await;
    assert_eq!(strings(&batches, "clinic"), ["A1", "B2"]);
    // Nobody else sees the held version, or that the dataset exists.
    problem(
        app.get(link, Some(&app.researcher())).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(app.get(link, None).await, 404, "dataset-not-found").await;
}

#[tokio::test]
async fn a_steward_sees_a_dataset_as_each_grant_and_the_tier_would() {
    let app = spawn_app().await;
    let steward = app.token_in(
        "sam@health-data.example",
        &[Role::Steward],
        "Example Health Data Service",
    );
    let data = "/v1/datasets/hospital-admissions/data";
    // As the north-only grant: its rows, the admission date unmasked.
    let north = arrow_batches(
        app.get(
            &format!("{data}?as=north-planning&limit=1000"),
            Some(&steward),
        )
        .await,
    )
    .await;
    assert!(rows(&north) > 20, "{}", rows(&north));
    assert!(strings(&north, "region").iter().all(|r| r == "north"));
    assert!(!column_names(&north).contains(&"nhs_number".to_string()));
    assert!(
        strings(&north, "admission_date")
            .iter()
            .any(|d| !d.ends_with("-01"))
    );
    // As the tier (the dataset is controlled: what it would see if open).
    let tier = arrow_batches(app.get(&format!("{data}?as=tier"), Some(&steward)).await).await;
    assert_eq!(rows(&tier), 20, "20 rows unless a limit is given");
    let capped = arrow_batches(
        app.get(&format!("{data}?as=tier&limit=1000"), Some(&steward))
            .await,
    )
    .await;
    assert_eq!(rows(&capped), 100, "a preview is at most 100 rows");
    assert!(
        strings(&tier, "admission_date")
            .iter()
            .all(|d| d.ends_with("-01"))
    );
    // An aggregate-only grant sees tables, not rows.
    problem(
        app.get(&format!("{data}?as=agency-statistics"), Some(&steward))
            .await,
        403,
        "aggregate-only",
    )
    .await;
    problem(
        app.get(&format!("{data}?as=no-such-grant"), Some(&steward))
            .await,
        400,
        "invalid-parameter",
    )
    .await;
    // A steward of another publisher is refused, a researcher told nothing.
    let other = app
        .get(&format!("{data}?as=tier"), Some(&observatory_steward(&app)))
        .await;
    assert_eq!(other.status(), 403);
    problem(
        app.get(&format!("{data}?as=tier"), Some(&app.researcher()))
            .await,
        404,
        "dataset-not-found",
    )
    .await;
    let previews: Vec<Value> = audit_records(&app, "hospital-admissions")
        .await
        .into_iter()
        .filter(|r| r["event"] == "preview" && r["outcome"] == "complete")
        .collect();
    assert!(
        previews
            .iter()
            .any(|r| r["grant"] == "north-planning" && r["subject"] == "sam@health-data.example"),
        "{previews:?}"
    );
}
