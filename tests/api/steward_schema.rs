//! A dataset's columns: the first upload defines them (types inferred from
//! CSV), and a later upload missing a column, adding one, or carrying a
//! value or a Parquet column of another type is refused, naming it. Arrow
//! and Parquet uploads are normalised (string views become plain strings)
//! and sorted by the steward's sort order.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, arrow_batches, arrow_stream, edit, observatory_steward as steward, parquet_file,
    problem_saying, publish, register, spawn_app, strings, upload,
};
use crate::steward_helpers::{assert_nothing_left, manifest};

/// Registers `survey` with no columns, uploads its first CSV and publishes
/// it after review: returns the steward's token and the upload's answer.
async fn survey(app: &TestApp) -> (String, Value) {
    let token = steward(app);
    assert_eq!(
        register(app, &token, &manifest("survey", json!([])))
            .await
            .status(),
        201
    );
    let csv = "school,score,visited,pupils\nA,1.5,2024-05-01,10\nB,,2024-05-02,\nC,2.25,,30\n";
    let r = upload(app, &token, "survey", "text/csv; charset=utf-8", csv).await;
    assert_eq!(r.status(), 201);
    let answer = r.json().await.unwrap();
    assert_eq!(publish(app, &token, "survey").await.status(), 200);
    (token, answer)
}

/// A CSV upload to `survey` is refused as `kind`, its detail naming
/// `needle`, and only version 1 is kept.
async fn refused_csv(app: &TestApp, token: &str, csv: &'static str, kind: &str, needle: &str) {
    problem_saying(
        upload(app, token, "survey", "text/csv", csv).await,
        422,
        kind,
        needle,
    )
    .await;
    assert_nothing_left(app, "survey", &["1"]);
}

#[tokio::test]
async fn the_first_upload_defines_the_columns_and_their_types() {
    let app = spawn_app().await;
    let (_, body) = survey(&app).await;
    let types: Vec<&str> = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Utf8", "Float64", "Date32", "Int64"]);
    // The file defined the columns: held for review until published.
    assert_eq!(body["in_review"], true);
    let warning = body["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("school, score, visited, pupils"),
        "{warning}"
    );
    let meta: Value = app.get_json("/v1/datasets/survey", None).await;
    assert_eq!(meta["columns"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_later_upload_missing_a_column_is_refused() {
    let app = spawn_app().await;
    let (token, _) = survey(&app).await;
    let csv = "school,score,visited\nD,1,2024-01-01\n";
    refused_csv(&app, &token, csv, "schema-mismatch", "'pupils'").await;
}

#[tokio::test]
async fn a_later_upload_with_an_extra_column_is_refused() {
    let app = spawn_app().await;
    let (token, _) = survey(&app).await;
    let csv = "school,score,visited,pupils,age\nD,1,2024-01-01,3,4\n";
    refused_csv(&app, &token, csv, "schema-mismatch", "'age'").await;
}

#[tokio::test]
async fn a_value_of_the_wrong_type_is_refused_with_its_column_and_line() {
    let app = spawn_app().await;
    let (token, _) = survey(&app).await;
    let csv = "school,score,visited,pupils\nD,1,2024-01-01,many\n";
    let p = upload(&app, &token, "survey", "text/csv", csv).await;
    let p = problem_saying(p, 422, "upload-invalid", "'pupils'").await;
    assert!(p["detail"].as_str().unwrap().contains("line 2"), "{p}");
    assert_nothing_left(&app, "survey", &["1"]);
}

#[tokio::test]
async fn a_parquet_column_of_another_type_is_refused() {
    let app = spawn_app().await;
    let (token, _) = survey(&app).await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("school", DataType::Utf8, true),
        Field::new("score", DataType::Utf8, true),
        Field::new("visited", DataType::Utf8, true),
        Field::new("pupils", DataType::Int64, true),
    ]));
    let text = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
    let batch = RecordBatch::try_new(
        schema,
        vec![
            text("D"),
            text("x"),
            text("y"),
            Arc::new(Int64Array::from(vec![1])) as ArrayRef,
        ],
    )
    .unwrap();
    problem_saying(
        upload(
            &app,
            &token,
            "survey",
            "application/vnd.apache.parquet",
            parquet_file(&batch, None),
        )
        .await,
        422,
        "schema-mismatch",
        "'score'",
    )
    .await;
    assert_nothing_left(&app, "survey", &["1"]);
}

/// Three rows out of order, the names as string views.
fn unsorted_views() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8View, true),
        Field::new("n", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::StringViewArray::from(vec!["c", "a", "b"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![3, 1, 2])) as ArrayRef,
        ],
    )
    .unwrap()
}

/// Registers `sorted` and uploads [`unsorted_views`] as an Arrow stream.
async fn sorted(app: &TestApp) -> String {
    let token = steward(app);
    let m = manifest("sorted", json!([]));
    assert_eq!(register(app, &token, &m).await.status(), 201);
    let r = upload(
        app,
        &token,
        "sorted",
        "application/vnd.apache.arrow.stream",
        arrow_stream(&unsorted_views()),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(publish(app, &token, "sorted").await.status(), 200);
    token
}

#[tokio::test]
async fn arrow_string_views_are_stored_as_plain_strings() {
    let app = spawn_app().await;
    sorted(&app).await;
    let meta: Value = app.get_json("/v1/datasets/sorted", None).await;
    assert_eq!(meta["columns"][0]["type"], "Utf8");
}

#[tokio::test]
async fn with_a_sort_order_the_next_version_is_stored_sorted() {
    let app = spawn_app().await;
    let token = sorted(&app).await;
    let r = edit(&app, &token, "sorted", json!({"sort_by": ["n"]})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = upload(
        &app,
        &token,
        "sorted",
        "application/vnd.apache.parquet",
        parquet_file(&unsorted_views(), None),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = arrow_batches(app.get("/v1/datasets/sorted/data?version=2", None).await).await;
    assert_eq!(strings(&got, "name"), ["a", "b", "c"]);
}
