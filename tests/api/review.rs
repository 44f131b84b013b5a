//! Review before publish: a first upload whose columns came from the file
//! is held as a draft until its steward has classified them and publishes
//! it; later uploads that only add rows publish at once. And the CSV
//! options a steward's real files need.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, arrow_batches, audit_records, column_names, edit, observatory_steward, problem,
    publish, register, spawn_app, strings, upload,
};
use crate::steward_helpers::manifest;

/// Registers `id` with no columns (the file will define them).
async fn undeclared(app: &TestApp, id: &str) -> String {
    let token = observatory_steward(app);
    let r = register(app, &token, &manifest(id, json!([]))).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    token
}

const PATIENTS: &str = "clinic,patient_name,visits\nA1,Ada Lovelace,3\nB2,Alan Turing,5\n";

#[tokio::test]
async fn a_first_upload_that_defines_its_columns_waits_for_review() {
    let app = spawn_app().await;
    let token = undeclared(&app, "clinic-visits").await;
    let r = upload(&app, &token, "clinic-visits", "text/csv", PATIENTS).await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["status"], "draft");
    assert_eq!(answer["in_review"], true);
    assert!(
        answer["warnings"][0]
            .as_str()
            .unwrap()
            .contains("POST /v1/datasets/clinic-visits/publish")
    );

    // Nobody else sees it, and nothing of it is served, the steward's own
    // pinned requests included.
    problem(
        app.get("/v1/datasets/clinic-visits", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get(
            "/v1/datasets/clinic-visits/data?version=1",
            Some(&app.researcher()),
        )
        .await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/clinic-visits/data?version=1", Some(&token))
            .await,
        404,
        "dataset-not-found",
    )
    .await;
    let own = app
        .get_json("/v1/datasets/clinic-visits", Some(&token))
        .await;
    assert_eq!(own["status"], "draft");
    assert_eq!(own["in_review"]["version"], 1);
    assert_eq!(own["in_review"]["rows"], 2);
    assert_eq!(own["versions"], json!([]));
    let listed = app.get_json("/v1/datasets", None).await;
    assert!(
        !listed.to_string().contains("clinic-visits"),
        "a draft in review is not listed"
    );
}

#[tokio::test]
async fn the_steward_classifies_then_publishes_and_later_uploads_publish_at_once() {
    let app = spawn_app().await;
    let token = undeclared(&app, "clinic-visits").await;
    assert_eq!(
        upload(&app, &token, "clinic-visits", "text/csv", PATIENTS)
            .await
            .status(),
        201
    );
    // Others may not publish it.
    problem(
        publish(&app, &app.researcher(), "clinic-visits").await,
        403,
        "steward-required",
    )
    .await;
    let stranger = app.token_in(
        "eve@elsewhere.example",
        &[sluice::auth::Role::Steward],
        "Elsewhere",
    );
    problem(
        publish(&app, &stranger, "clinic-visits").await,
        404,
        "dataset-not-found",
    )
    .await;

    // The review: the name is a direct identifier.
    let patch = json!({"columns": [
        {"name": "patient_name", "classification": "direct-identifier"},
    ]});
    let r = edit(&app, &token, "clinic-visits", patch).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = publish(&app, &token, "clinic-visits").await;
    assert_eq!(r.status(), 200);
    let published: Value = r.json().await.unwrap();
    assert_eq!(published["status"], "published");
    assert_eq!(published["version"], 1);

    // Served now, without the identifier.
    let data = app
        .get("/v1/datasets/clinic-visits/data?format=arrow", None)
        .await;
    assert_eq!(data.status(), 200);
    let batches = arrow_batches(data).await;
    assert_eq!(column_names(&batches), ["clinic", "visits"]);
    assert_eq!(strings(&batches, "clinic"), ["A1", "B2"]);

    problem(
        publish(&app, &token, "clinic-visits").await,
        409,
        "nothing-to-publish",
    )
    .await;
    // More rows publish at once.
    let more = "clinic,patient_name,visits\nC3,Grace Hopper,1\n";
    let r = upload(&app, &token, "clinic-visits", "text/csv", more).await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["version"], 2);
    assert_eq!(answer["in_review"], false);
    assert_eq!(answer["status"], "published");
    let events: Vec<String> = audit_records(&app, "clinic-visits")
        .await
        .iter()
        .map(|r| r["event"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(events.contains(&"publish".to_owned()), "{events:?}");
}

#[tokio::test]
async fn a_second_upload_in_review_replaces_the_first() {
    let app = spawn_app().await;
    let token = undeclared(&app, "clinic-visits").await;
    for csv in [PATIENTS, "clinic,patient_name,visits\nZ9,Nobody,0\n"] {
        assert_eq!(
            upload(&app, &token, "clinic-visits", "text/csv", csv)
                .await
                .status(),
            201
        );
    }
    let own = app
        .get_json("/v1/datasets/clinic-visits", Some(&token))
        .await;
    assert_eq!(own["in_review"]["version"], 2);
    assert_eq!(own["in_review"]["rows"], 1);
    let folders = std::fs::read_dir(
        app.settings
            .storage
            .datasets
            .join("clinic-visits")
            .join("versions"),
    )
    .unwrap()
    .count();
    assert_eq!(folders, 1, "the replaced upload is gone");
    assert_eq!(publish(&app, &token, "clinic-visits").await.status(), 200);
    let data = app.get("/v1/datasets/clinic-visits/data", None).await;
    assert_eq!(strings(&arrow_batches(data).await, "clinic"), ["Z9"]);
}

/// `PUT …/data` of a CSV with a query string of options.
async fn upload_csv(app: &TestApp, token: &str, id: &str, query: &str, csv: &str) -> Value {
    let r = app
        .client
        .put(app.url(&format!("/v1/datasets/{id}/data?{query}")))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(csv.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut body: Value = r.json().await.unwrap();
    body["status_code"] = json!(status);
    body
}

#[tokio::test]
async fn csv_options_read_semicolons_spaced_headers_and_null_markers() {
    let app = spawn_app().await;
    let token = undeclared(&app, "trusts").await;
    let csv = "Trust Name;Beds (total);2024 Visits\n\"Kings; College\";NA;12\nSt Thomas;450;n/a\n";
    let body = upload_csv(&app, &token, "trusts", "delimiter=%3B&null=NA,n/a", csv).await;
    assert_eq!(body["status_code"], 201, "{body}");
    assert_eq!(
        body["renamed_columns"],
        json!({"Trust Name": "trust_name", "Beds (total)": "beds_total", "2024 Visits": "c_2024_visits"})
    );
    let types: Vec<&str> = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Utf8", "Int64", "Int64"],
        "NA and n/a are nulls, not text"
    );
    assert_eq!(publish(&app, &token, "trusts").await.status(), 200);
    let data = app
        .get("/v1/datasets/trusts/data?format=ndjson", None)
        .await
        .text()
        .await
        .unwrap();
    let rows: Vec<Value> = data
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["trust_name"], "Kings; College");
    assert_eq!(
        rows[0].get("beds_total").cloned().unwrap_or(Value::Null),
        Value::Null
    );
    assert_eq!(rows[1]["beds_total"], 450);
}

#[tokio::test]
async fn a_csv_without_a_header_gets_numbered_columns_and_bad_options_are_explained() {
    let app = spawn_app().await;
    let token = undeclared(&app, "headless").await;
    let body = upload_csv(
        &app,
        &token,
        "headless",
        "header=absent&delimiter=tab",
        "a\t1\nb\t2\n",
    )
    .await;
    assert_eq!(body["status_code"], 201, "{body}");
    let names: Vec<&str> = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["column_1", "column_2"]);

    for (query, says) in [
        ("delimiter=%3B%3B", "one ASCII character"),
        ("header=maybe", "'present' or 'absent'"),
        ("delimiter=%22", "must differ"),
        ("delimeter=%3B", "delimeter"),
    ] {
        let body = upload_csv(&app, &token, "headless", query, "x\n1\n").await;
        assert_eq!(body["status_code"], 400, "{query}: {body}");
        assert_eq!(body["type"], "invalid-parameter");
        assert!(
            body["detail"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    let r = app
        .client
        .put(app.url("/v1/datasets/headless/data?delimiter=%3B"))
        .bearer_auth(&token)
        .header("content-type", "application/vnd.apache.parquet")
        .body(vec![0u8; 8])
        .send()
        .await
        .unwrap();
    problem(r, 400, "invalid-parameter").await;
}
