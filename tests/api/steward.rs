//! Stewards register, upload, version, edit and retire datasets over HTTP;
//! bad input is refused with a clear error and leaves nothing behind.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;
use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    OBSERVATORY, TestApp, arrow_batches, column_names, observatory_steward as steward, problem,
    register, rows, spawn_app, spawn_app_with, strings, upload,
};

const ORG: &str = OBSERVATORY;

fn manifest(id: &str, columns: Value) -> Value {
    json!({
        "id": id,
        "title": "Clinic visits",
        "description": "Visits per clinic and month",
        "sector": "health",
        "publisher": ORG,
        "license": "CC-BY-4.0",
        "keywords": ["clinics"],
        "tier": "open",
        "columns": columns,
    })
}

fn visit_columns() -> Value {
    json!([
        {"name": "clinic", "description": "Clinic code", "key": true},
        {"name": "month", "description": "Month", "type": "date"},
        {"name": "visits", "description": "Visits", "type": "int64"},
    ])
}

const VISITS_V1: &str = "clinic,month,visits\nA1,2024-01-01,10\nB2,2024-01-01,7\nC3,2024-02-01,3\n";
const VISITS_V2: &str = "clinic,month,visits\nA1,2024-03-01,12\nB2,2024-03-01,9\n";

/// Registers `id` with the visit columns and uploads version 1.
async fn published(app: &TestApp, id: &str) -> String {
    let token = steward(app);
    let r = register(app, &token, &manifest(id, visit_columns())).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = upload(app, &token, id, "text/csv", VISITS_V1).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    token
}

/// Staging is empty and only these version folders exist.
fn assert_nothing_left(app: &TestApp, id: &str, versions: &[&str]) {
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

async fn still_serving(app: &TestApp) {
    let r = app
        .get("/v1/datasets/vaccination-coverage/data?limit=3", None)
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(rows(&arrow_batches(r).await), 3);
}

fn parquet_bytes(
    batch: &RecordBatch,
    props: Option<parquet::file::properties::WriterProperties>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut out, batch.schema(), props).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
    out
}

#[tokio::test]
async fn a_steward_registers_uploads_versions_and_readers_pin_versions() {
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

    // A duplicate id is a conflict; a draft is not listed for researchers.
    problem(
        register(&app, &token, &manifest("clinic-visits", visit_columns())).await,
        409,
        "dataset-exists",
    )
    .await;
    let list: Value = app
        .get("/v1/datasets?q=clinic", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["datasets"].as_array().unwrap().len(), 0);
    problem(
        app.get("/v1/datasets/clinic-visits/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;

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

    let r = upload(&app, &token, "clinic-visits", "text/csv", VISITS_V2).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["version"], 2);

    // Latest by default, any version when pinned.
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

    let meta: Value = app
        .get("/v1/datasets/clinic-visits", None)
        .await
        .json()
        .await
        .unwrap();
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

    // The stored file is Parquet tuned for slicing: zstd, page index,
    // statistics and a bloom filter on the key column.
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
    use parquet::file::reader::FileReader;
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

    // Every change is in the audit trail.
    let admin = app.token("root", &[Role::Admin], &[]);
    let audit: Value = app
        .get("/v1/audit?dataset=clinic-visits", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let events: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert!(events.contains(&"register"), "{events:?}");
    assert_eq!(
        events.iter().filter(|e| **e == "upload").count(),
        2,
        "{events:?}"
    );
}

#[tokio::test]
async fn the_first_upload_defines_columns_and_later_ones_must_match() {
    let app = spawn_app().await;
    let token = steward(&app);
    assert_eq!(
        register(&app, &token, &manifest("survey", json!([])))
            .await
            .status(),
        201
    );
    let csv = "school,score,visited,pupils\nA,1.5,2024-05-01,10\nB,,2024-05-02,\nC,2.25,,30\n";
    let r = upload(&app, &token, "survey", "text/csv; charset=utf-8", csv).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let types: Vec<&str> = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Utf8", "Float64", "Date32", "Int64"]);
    assert_eq!(body["warnings"].as_array().unwrap().len(), 4);
    let meta: Value = app
        .get("/v1/datasets/survey", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["columns"].as_array().unwrap().len(), 4);

    // A missing column, an extra one, a value of the wrong type.
    let p = problem(
        upload(
            &app,
            &token,
            "survey",
            "text/csv",
            "school,score,visited\nD,1,2024-01-01\n",
        )
        .await,
        422,
        "schema-mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("'pupils'"), "{p}");
    let p = problem(
        upload(
            &app,
            &token,
            "survey",
            "text/csv",
            "school,score,visited,pupils,age\nD,1,2024-01-01,3,4\n",
        )
        .await,
        422,
        "schema-mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("'age'"), "{p}");
    let p = problem(
        upload(
            &app,
            &token,
            "survey",
            "text/csv",
            "school,score,visited,pupils\nD,1,2024-01-01,many\n",
        )
        .await,
        422,
        "upload-invalid",
    )
    .await;
    let detail = p["detail"].as_str().unwrap();
    assert!(
        detail.contains("'pupils'") && detail.contains("line 2"),
        "{p}"
    );
    // A Parquet upload whose column has another type.
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
    let p = problem(
        upload(
            &app,
            &token,
            "survey",
            "application/vnd.apache.parquet",
            parquet_bytes(&batch, None),
        )
        .await,
        422,
        "schema-mismatch",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("'score'"), "{p}");
    assert_nothing_left(&app, "survey", &["1"]);
}

#[tokio::test]
async fn parquet_and_arrow_uploads_are_normalised_and_sorted() {
    let app = spawn_app().await;
    let token = steward(&app);
    let m = manifest("sorted", json!([]));
    assert_eq!(register(&app, &token, &m).await.status(), 201);
    let schema = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8View, true),
        Field::new("n", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow::array::StringViewArray::from(vec!["c", "a", "b"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![3, 1, 2])) as ArrayRef,
        ],
    )
    .unwrap();
    let mut ipc = Vec::new();
    {
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    let r = upload(
        &app,
        &token,
        "sorted",
        "application/vnd.apache.arrow.stream",
        ipc,
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // Views are stored as plain strings.
    let meta: Value = app
        .get("/v1/datasets/sorted", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["columns"][0]["type"], "Utf8");

    // With a sort order, the next version is stored sorted.
    let patch = json!({"sort_by": ["n"]});
    let r = app
        .client
        .patch(app.url("/v1/datasets/sorted"))
        .bearer_auth(&token)
        .json(&patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = upload(
        &app,
        &token,
        "sorted",
        "application/vnd.apache.parquet",
        parquet_bytes(&batch, None),
    )
    .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let got = arrow_batches(app.get("/v1/datasets/sorted/data?version=2", None).await).await;
    assert_eq!(strings(&got, "name"), ["a", "b", "c"]);
}

#[tokio::test]
async fn only_the_publishers_stewards_and_admins_may_change_a_dataset() {
    let app = spawn_app().await;
    published(&app, "guarded").await;
    let researcher = app.researcher();
    let other = app.token_in(
        "olga@elsewhere.example",
        &[Role::Steward],
        "Elsewhere Trust",
    );
    let admin = app.token("root", &[Role::Admin], &[]);

    problem(
        register(&app, &researcher, &manifest("mine", json!([]))).await,
        403,
        "steward-required",
    )
    .await;
    let anonymous = app
        .client
        .post(app.url("/v1/datasets"))
        .json(&manifest("mine", json!([])))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "token-required").await;
    // A steward registers only for their own organisation.
    problem(
        register(&app, &other, &manifest("theirs", json!([]))).await,
        403,
        "not-publisher",
    )
    .await;
    problem(
        upload(&app, &researcher, "guarded", "text/csv", VISITS_V2).await,
        403,
        "steward-required",
    )
    .await;
    problem(
        upload(&app, &other, "guarded", "text/csv", VISITS_V2).await,
        403,
        "not-publisher",
    )
    .await;
    let r = app
        .client
        .delete(app.url("/v1/datasets/guarded"))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    problem(r, 403, "not-publisher").await;
    let r = app
        .client
        .patch(app.url("/v1/datasets/guarded"))
        .bearer_auth(&other)
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .unwrap();
    problem(r, 403, "not-publisher").await;
    assert_nothing_left(&app, "guarded", &["1"]);

    // Admins may do all.
    let r = upload(&app, &admin, "guarded", "text/csv", VISITS_V2).await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn edits_apply_to_every_version_and_retired_datasets_are_not_served() {
    let app = spawn_app().await;
    let token = published(&app, "edited").await;
    assert_eq!(
        upload(&app, &token, "edited", "text/csv", VISITS_V2)
            .await
            .status(),
        201
    );

    let patch = |body: Value| {
        app.client
            .patch(app.url("/v1/datasets/edited"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let r = patch(json!({"description": "Renamed", "columns": [{"name": "clinic", "classification": "direct-identifier"}]})).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["description"], "Renamed");
    for version in [1, 2] {
        let got = arrow_batches(
            app.get(&format!("/v1/datasets/edited/data?version={version}"), None)
                .await,
        )
        .await;
        assert_eq!(column_names(&got), ["month", "visits"], "version {version}");
    }
    // Invalid edits change nothing.
    problem(
        patch(json!({"colour": "red"})).await.unwrap(),
        422,
        "invalid-manifest",
    )
    .await;
    problem(
        patch(json!({"license": ""})).await.unwrap(),
        422,
        "invalid-manifest",
    )
    .await;
    let p = problem(patch(json!({"columns": [{"name": "visits", "classification": "quasi-identifier", "mask": "prefix(2)"}]})).await.unwrap(), 422, "invalid-manifest").await;
    assert!(p["detail"].as_str().unwrap().contains("visits"), "{p}");
    problem(
        patch(json!({"columns": [{"name": "nope", "description": "?"}]}))
            .await
            .unwrap(),
        422,
        "invalid-manifest",
    )
    .await;
    let meta: Value = app
        .get("/v1/datasets/edited", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["license"], "CC-BY-4.0");

    let r = app
        .client
        .delete(app.url("/v1/datasets/edited"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "retired");
    problem(
        app.get("/v1/datasets/edited/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/edited", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    let list: Value = app
        .get("/v1/datasets?q=clinic", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(list["datasets"].as_array().unwrap().is_empty());
    // Stewards still see it; it stays on disk; uploads are refused.
    let meta: Value = app
        .get("/v1/datasets/edited", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(meta["status"], "retired");
    let list: Value = app
        .get("/v1/datasets?q=clinic", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["datasets"][0]["status"], "retired");
    problem(
        upload(&app, &token, "edited", "text/csv", VISITS_V2).await,
        409,
        "dataset-retired",
    )
    .await;
    // The trail names who changed what (each field, old and new) and the retirement.
    let admin = app.token("root", &[Role::Admin], &[]);
    let audit: Value = app
        .get("/v1/audit?dataset=edited", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let records = audit["records"].as_array().unwrap();
    let edit = records
        .iter()
        .find(|r| r["event"] == "edit" && r["decision"] == "allow")
        .expect("an edit record");
    assert_eq!(edit["subject"], "sam@observatory.example");
    assert_eq!(edit["proposed_by"], "sam@observatory.example");
    assert_eq!(
        edit["changes"],
        json!([
            {"field": "description", "old": "Visits per clinic and month", "new": "Renamed"},
            {"field": "columns.clinic.classification", "old": "none", "new": "direct-identifier"},
        ])
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "retire" && r["decision"] == "allow")
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "edit" && r["decision"] == "refused")
    );
    assert_nothing_left(&app, "edited", &["1", "2"]);
}

#[tokio::test]
async fn bad_uploads_get_clear_errors_leave_nothing_and_the_server_keeps_serving() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.ingest.max_upload_bytes = 512 * 1024
    })
    .await;
    let token = published(&app, "target").await;
    let good = {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "clinic",
                DataType::Utf8,
                true,
            )])),
            vec![Arc::new(StringArray::from(vec!["A"; 1000])) as ArrayRef],
        )
        .unwrap();
        parquet_bytes(&batch, None)
    };
    // A decompression bomb: 2 M zeros, plain-encoded, zstd-compressed.
    let bomb = {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "visits",
                DataType::Int64,
                true,
            )])),
            vec![Arc::new(Int64Array::from(vec![0i64; 2_000_000])) as ArrayRef],
        )
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_encoding(parquet::basic::Encoding::PLAIN)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        parquet_bytes(&batch, Some(props))
    };
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let mut corrupt_footer = good.clone();
    let n = corrupt_footer.len();
    corrupt_footer[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut garbage_footer = good.clone();
    let footer_len = u32::from_le_bytes(garbage_footer[n - 8..n - 4].try_into().unwrap()) as usize;
    for b in &mut garbage_footer[n - 8 - footer_len..n - 8] {
        *b = 0xAB;
    }
    // (what, content type, body, status, problem type, words in the detail)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            "truncated parquet",
            "application/vnd.apache.parquet",
            good[..good.len() / 2].to_vec(),
            422,
            "upload-invalid",
            "magic",
        ),
        (
            "footer length past the file",
            "application/vnd.apache.parquet",
            corrupt_footer,
            422,
            "upload-invalid",
            "footer",
        ),
        (
            "garbage footer",
            "application/vnd.apache.parquet",
            garbage_footer,
            422,
            "upload-invalid",
            "Parquet",
        ),
        (
            "not parquet at all",
            "application/vnd.apache.parquet",
            b"hello, world, this is text".to_vec(),
            422,
            "upload-invalid",
            "Parquet",
        ),
        (
            "decompression bomb",
            "application/vnd.apache.parquet",
            bomb,
            422,
            "upload-invalid",
            "decompression bomb",
        ),
        (
            "ragged csv",
            "text/csv",
            b"clinic,month,visits\nA1,2024-01-01,10\nB2,2024-01-01\n".to_vec(),
            422,
            "upload-invalid",
            "line",
        ),
        (
            "bad encoding",
            "text/csv",
            b"clinic,month,visits\nA\xff\xfe,2024-01-01,10\n".to_vec(),
            422,
            "upload-invalid",
            "UTF-8",
        ),
        (
            "garbage arrow",
            "application/vnd.apache.arrow.stream",
            vec![0xff; 64],
            422,
            "upload-invalid",
            "Arrow",
        ),
        (
            "empty body",
            "text/csv",
            Vec::new(),
            422,
            "upload-invalid",
            "empty",
        ),
        (
            "header only",
            "text/csv",
            b"clinic,month,visits\n".to_vec(),
            422,
            "upload-invalid",
            "no rows",
        ),
        (
            "too large",
            "text/csv",
            vec![b'a'; 600 * 1024],
            413,
            "payload-too-large",
            "bytes",
        ),
        (
            "unknown type",
            "application/zip",
            b"PK".to_vec(),
            415,
            "unsupported-media-type",
            "Content-Type",
        ),
    ];
    for (name, content_type, body, status, kind, needle) in cases {
        let r = upload(&app, &token, "target", content_type, body).await;
        let p = problem(r, status, kind).await;
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{name}: {p}"
        );
        assert_nothing_left(&app, "target", &["1"]);
        still_serving(&app).await;
    }
    // A body over the limit without Content-Length (chunked) is cut off too.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 64 * 1024])));
    let r = upload(
        &app,
        &token,
        "target",
        "text/csv",
        reqwest::Body::wrap_stream(chunks),
    )
    .await;
    problem(r, 413, "payload-too-large").await;
    assert_nothing_left(&app, "target", &["1"]);

    // Ids with path syntax and bad manifests.
    let mut bad_id = manifest("x", json!([]));
    bad_id["id"] = json!("../etc");
    let p = problem(
        register(&app, &token, &bad_id).await,
        422,
        "invalid-manifest",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("dataset id"), "{p}");
    problem(
        upload(&app, &token, "..%2Fetc", "text/csv", VISITS_V1).await,
        404,
        "dataset-not-found",
    )
    .await;
    let mut unknown = manifest("y", json!([]));
    unknown["colour"] = json!("red");
    let p = problem(
        register(&app, &token, &unknown).await,
        422,
        "invalid-manifest",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("colour"), "{p}");
    let mut unlicensed = manifest("z", json!([]));
    unlicensed.as_object_mut().unwrap().remove("license");
    let p = problem(
        register(&app, &token, &unlicensed).await,
        422,
        "invalid-manifest",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("license"), "{p}");
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
    for id in ["x", "y", "z", "etc"] {
        assert!(
            !app.settings.storage.datasets.join(id).exists(),
            "{id} left behind"
        );
    }
    still_serving(&app).await;

    // The dataset itself is untouched.
    let got = arrow_batches(app.get("/v1/datasets/target/data", None).await).await;
    assert_eq!(strings(&got, "clinic"), ["A1", "B2", "C3"]);
}

#[tokio::test]
async fn a_worker_killed_by_its_memory_limit_is_a_clear_refusal() {
    // The worker's address space is too small to decode anything: whatever
    // the decoder does, the server answers and keeps serving.
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.ingest.worker_memory_bytes = 64 * 1024 * 1024
    })
    .await;
    let token = steward(&app);
    assert_eq!(
        register(&app, &token, &manifest("tiny", visit_columns()))
            .await
            .status(),
        201
    );
    let p = problem(
        upload(&app, &token, "tiny", "text/csv", VISITS_V1).await,
        422,
        "upload-invalid",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("limits"), "{p}");
    assert_nothing_left(&app, "tiny", &[]);
    still_serving(&app).await;
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
async fn an_object_store_catalogue_is_written_the_same_way() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.storage.datasets_url = Some("memory:///".into());
        // The sample grants name datasets the empty store does not have.
        let policy = s.storage.state.with_file_name("empty-policy.toml");
        std::fs::write(&policy, "").unwrap();
        s.storage.policy = policy;
    })
    .await;
    let token = published(&app, "in-memory").await;
    assert_eq!(
        upload(&app, &token, "in-memory", "text/csv", VISITS_V2)
            .await
            .status(),
        201
    );
    let first = arrow_batches(app.get("/v1/datasets/in-memory/data?version=1", None).await).await;
    assert_eq!(strings(&first, "clinic"), ["A1", "B2", "C3"]);
    let latest = arrow_batches(app.get("/v1/datasets/in-memory/data", None).await).await;
    assert_eq!(strings(&latest, "visits"), ["12", "9"]);
    problem(
        upload(&app, &token, "in-memory", "text/csv", "clinic\nA\n").await,
        422,
        "schema-mismatch",
    )
    .await;
    let r = app
        .client
        .delete(app.url("/v1/datasets/in-memory"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    problem(
        app.get("/v1/datasets/in-memory/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    // Nothing is staged once uploads end.
    let staged = std::fs::read_dir(app.state_dir().join("staging"))
        .unwrap()
        .count();
    assert_eq!(staged, 0);
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

#[tokio::test]
async fn an_upload_the_client_abandons_leaves_nothing_and_is_audited() {
    let app = spawn_app().await;
    let token = published(&app, "abandoned").await;
    // One chunk of a CSV, then the client goes silent and is dropped.
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(
        b"clinic,month,visits\nA1,2024-01-01,1\n".to_vec(),
    )])
    .chain(futures::stream::pending());
    let client = app.client.clone();
    let url = app.url("/v1/datasets/abandoned/data");
    let request = tokio::spawn(async move {
        client
            .put(url)
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    request.abort();
    let admin = app.token("root", &[Role::Admin], &[]);
    let mut recorded = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let audit: Value = app
            .get("/v1/audit?dataset=abandoned", Some(&admin))
            .await
            .json()
            .await
            .unwrap();
        recorded = audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event"] == "upload" && r["decision"] == "refused")
            .cloned();
        if recorded.is_some() {
            break;
        }
    }
    let recorded = recorded.expect("the abandoned upload is in the audit trail");
    assert_eq!(recorded["reason"], "upload-incomplete");
    assert_eq!(recorded["subject"], "sam@observatory.example");
    assert_nothing_left(&app, "abandoned", &["1"]);
    still_serving(&app).await;
}

/// An Arrow IPC stream whose record batch claims a 1 TiB body: the reader
/// tries to allocate it, and an allocation failure aborts the process (no
/// `catch_unwind` can stop that). Only the worker may die of it.
fn arrow_stream_claiming_a_huge_body() -> Vec<u8> {
    // The visit columns, so the schema check passes and decoding starts.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("clinic", DataType::Utf8, true),
            Field::new("month", DataType::Date32, true),
            Field::new("visits", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["A1"; 3])) as ArrayRef,
            Arc::new(arrow::array::Date32Array::from(vec![19_723; 3])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ],
    )
    .unwrap();
    let mut stream = Vec::new();
    {
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut stream, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
    }
    // Each message: 0xFFFFFFFF, metadata length, metadata, body.
    let metadata_len =
        |at: usize| u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
    let batch_at = 8 + metadata_len(0);
    let metadata = &stream[batch_at + 8..batch_at + 8 + metadata_len(batch_at)];
    let body_length = arrow::ipc::root_as_message(metadata).unwrap().bodyLength();
    let field = metadata
        .windows(8)
        .position(|w| w == body_length.to_le_bytes())
        .unwrap();
    let at = batch_at + 8 + field;
    let mut hostile = stream.clone();
    hostile[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    hostile
}

#[tokio::test]
async fn an_upload_that_aborts_the_decoder_cannot_take_the_server_down() {
    let app = spawn_app().await;
    let token = published(&app, "aborting").await;
    let p = problem(
        upload(
            &app,
            &token,
            "aborting",
            "application/vnd.apache.arrow.stream",
            arrow_stream_claiming_a_huge_body(),
        )
        .await,
        422,
        "upload-invalid",
    )
    .await;
    assert!(
        p["detail"].as_str().unwrap().contains("decoder failed"),
        "{p}"
    );
    assert_nothing_left(&app, "aborting", &["1"]);
    still_serving(&app).await;
    // And the next good upload goes through.
    assert_eq!(
        upload(&app, &token, "aborting", "text/csv", VISITS_V2)
            .await
            .status(),
        201
    );
}
