//! Uploading data: each upload is the next version, answered with its rows,
//! bytes and schema; readers get the latest version unless they pin one;
//! the file stored is Parquet tuned for slicing; registering and every
//! upload are on the audit trail; sample datasets take new versions too.

use serde_json::Value;
use sluice::auth::Role;

use crate::helpers::{
    arrow_batches, audit_records, observatory_steward as steward, problem, register, spawn_app,
    strings, upload,
};
use crate::steward_helpers::{
    VISITS_V1, VISITS_V2, manifest, published, published_twice, visit_columns,
};

#[tokio::test]
async fn the_first_upload_is_version_1_with_its_rows_bytes_and_schema() {
    let app = spawn_app().await;
    let token = steward(&app);
    let r = register(&app, &token, &manifest("clinic-visits", visit_columns())).await;
    assert_eq!(r.status(), 201);
    let r = upload(&app, &token, "clinic-visits", "text/csv", VISITS_V1).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["rows"], 3);
    assert!(body["bytes"].as_u64().unwrap() > 0);
    let types: Vec<(String, String)> = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().into(),
                c["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            ("clinic".to_string(), "Utf8".to_string()),
            ("month".into(), "Date32".into()),
            ("visits".into(), "Int64".into())
        ]
    );
}

#[tokio::test]
async fn the_next_upload_is_version_2() {
    let app = spawn_app().await;
    let token = published(&app, "clinic-visits").await;
    let r = upload(&app, &token, "clinic-visits", "text/csv", VISITS_V2).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);
}

#[tokio::test]
async fn readers_get_the_latest_version_unless_they_pin_one() {
    let app = spawn_app().await;
    published_twice(&app, "clinic-visits").await;
    let latest = arrow_batches(app.get("/v1/datasets/clinic-visits/data", None).await).await;
    assert_eq!(strings(&latest, "clinic"), ["A1", "B2"]);
    let r = app
        .get("/v1/datasets/clinic-visits/data?version=1", None)
        .await;
    assert_eq!(r.headers()["sluice-dataset-version"], "1");
    let first = arrow_batches(r).await;
    assert_eq!(strings(&first, "clinic"), ["A1", "B2", "C3"]);
    assert_eq!(strings(&first, "visits"), ["10", "7", "3"]);
    problem(
        app.get("/v1/datasets/clinic-visits/data?version=3", None)
            .await,
        404,
        "version-not-found",
    )
    .await;
}

#[tokio::test]
async fn a_published_dataset_lists_every_version_and_its_columns() {
    let app = spawn_app().await;
    published_twice(&app, "clinic-visits").await;
    let meta: Value = app.get_json("/v1/datasets/clinic-visits", None).await;
    assert_eq!(meta["status"], "published");
    assert_eq!(meta["version"], 2);
    let versions: Vec<u64> = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(meta["columns"][0]["key"], true);
}

/// zstd, a page index, statistics, and a bloom filter on the key column
/// only.
#[tokio::test]
async fn the_stored_file_is_parquet_tuned_for_slicing() {
    use parquet::file::reader::FileReader;
    let app = spawn_app().await;
    published(&app, "clinic-visits").await;
    let file = app
        .settings
        .storage
        .datasets
        .join("clinic-visits/versions/1/part-00000.parquet");
    let reader = parquet::file::serialized_reader::SerializedFileReader::new_with_options(
        std::fs::File::open(file).unwrap(),
        parquet::file::serialized_reader::ReadOptionsBuilder::new()
            .with_page_index()
            .build(),
    )
    .unwrap();
    let metadata = reader.metadata();
    let clinic = metadata.row_group(0).column(0);
    assert_eq!(
        clinic.compression(),
        parquet::basic::Compression::ZSTD(Default::default())
    );
    assert!(clinic.statistics().is_some());
    assert!(clinic.bloom_filter_offset().is_some());
    assert!(
        metadata
            .row_group(0)
            .column(2)
            .bloom_filter_offset()
            .is_none()
    );
    assert!(metadata.column_index().is_some());
}

#[tokio::test]
async fn registering_and_every_upload_are_on_the_audit_trail() {
    let app = spawn_app().await;
    published_twice(&app, "clinic-visits").await;
    let records = audit_records(&app, "clinic-visits").await;
    let events = |phase: Option<&str>| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r["phase"].as_str() == phase)
            .filter_map(|r| r["event"].as_str())
            .collect()
    };
    // Each change's outcome, and before it, its intent.
    for phase in [None, Some("intent")] {
        let events = events(phase);
        assert!(events.contains(&"register"), "{phase:?}: {events:?}");
        assert_eq!(
            events.iter().filter(|e| **e == "upload").count(),
            2,
            "{phase:?}: {events:?}"
        );
    }
}

#[tokio::test]
async fn a_new_version_of_a_sample_dataset_keeps_its_policy() {
    // Datasets that did not come through an upload (the samples) take new
    // versions too, and grants, masks and row filters apply to them.
    let app = spawn_app().await;
    let admin = app.token("root", &[Role::Admin], &[]);
    let before = app
        .get("/v1/datasets/vaccination-coverage/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    let mut lines = before.lines();
    let header = lines.next().unwrap().to_owned();
    let body: String = std::iter::once(header.clone())
        .chain(lines.take(5).map(str::to_owned))
        .map(|l| l + "\n")
        .collect();
    let r = upload(
        &app,
        &admin,
        "vaccination-coverage",
        "text/csv",
        body.clone(),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let after = app
        .get("/v1/datasets/vaccination-coverage/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(after, body);
}
