//! Issue 14, part 2: the Delta Sharing protocol under `/delta-sharing/`,
//! checked at the HTTP level (the unmodified Python connector reads it in
//! `tests/interop/sharing/`). Shares are sectors, tables the datasets the
//! caller may read rows of, and every file a policy-applied snapshot.

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{TestApp, decode_parquet, rows, spawn_app_with, strings};

const TABLE: &str = "/delta-sharing/shares/health/schemas/default/tables/hospital-admissions";

async fn get(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(path))
        // What the Python connector sends: Sluice answers parquet anyway.
        .header(
            "delta-sharing-capabilities",
            "responseformat=delta,parquet;readerfeatures=deletionvectors",
        );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn query(app: &TestApp, path: &str, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("{path}/query")))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The lines of an NDJSON answer, checked for the protocol's headers.
async fn lines(response: reqwest::Response) -> Vec<Value> {
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(
        headers["content-type"],
        "application/x-ndjson; charset=utf-8"
    );
    assert_eq!(
        headers["delta-sharing-capabilities"],
        "responseformat=parquet"
    );
    assert!(
        headers["delta-table-version"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with('\n') && !text.contains("\n\n"));
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorCode"], code, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn shares_are_sectors_and_tables_what_the_caller_may_read() {
    let app = spawn_app_with(200, |_| {}).await;
    let alice = app.alice();
    let shares: Value = get(&app, "/delta-sharing/shares", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&shares), ["education", "health"]);
    assert!(shares.get("nextPageToken").is_none());

    let health: Value = get(
        &app,
        "/delta-sharing/shares/health/all-tables",
        Some(&alice),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        names(&health),
        ["hospital-admissions", "vaccination-coverage"]
    );
    assert_eq!(health["items"][0]["schema"], "default");
    assert_eq!(health["items"][0]["share"], "health");
    let schemas: Value = get(&app, "/delta-sharing/shares/health/schemas", Some(&alice))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&schemas), ["default"]);

    // Anonymous callers see the open tables only.
    let open: Value = get(
        &app,
        "/delta-sharing/shares/health/schemas/default/tables",
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(names(&open), ["vaccination-coverage"]);
    error(get(&app, TABLE, None).await, 404, "RESOURCE_DOES_NOT_EXIST").await;
    error(
        get(&app, &format!("{TABLE}/metadata"), None).await,
        401,
        "UNAUTHENTICATED",
    )
    .await;

    // Pages of one, with opaque tokens, and none on the last page.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = "/delta-sharing/shares/health/all-tables?maxResults=1".to_owned();
        if let Some(t) = &token {
            path.push_str(&format!("&pageToken={t}"));
        }
        let body: Value = get(&app, &path, Some(&alice)).await.json().await.unwrap();
        seen.extend(names(&body));
        match body.get("nextPageToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["hospital-admissions", "vaccination-coverage"]);
    error(
        get(
            &app,
            "/delta-sharing/shares/health/all-tables?pageToken=%21%21",
            Some(&alice),
        )
        .await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
    error(
        get(&app, "/delta-sharing/shares/transport", Some(&alice)).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;

    // Aggregate-only access is no table, and reading one is refused.
    let agency = app.token_in(
        "stats@agency.example",
        &[Role::Researcher],
        "Example Public Health Agency",
    );
    let theirs: Value = get(
        &app,
        "/delta-sharing/shares/health/all-tables",
        Some(&agency),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(names(&theirs), ["vaccination-coverage"]);
    error(
        query(&app, TABLE, &agency, json!({})).await,
        403,
        "PERMISSION_DENIED",
    )
    .await;

    // Two grants for one dataset: a table per grant, never a union.
    let analyst = app.token(
        "nina@nhs.example",
        &[Role::Researcher],
        &["nhs-north", "nhs-audit"],
    );
    let both: Value = get(
        &app,
        "/delta-sharing/shares/health/all-tables",
        Some(&analyst),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        names(&both),
        [
            "hospital-admissions__north-audit",
            "hospital-admissions__north-planning",
            "vaccination-coverage"
        ]
    );
}

#[tokio::test]
async fn metadata_and_query_serve_the_policy_applied_slice() {
    let app = spawn_app_with(600, |_| {}).await;
    let alice = app.alice();
    let meta = lines(get(&app, &format!("{TABLE}/metadata"), Some(&alice)).await).await;
    assert_eq!(meta.len(), 2);
    assert_eq!(meta[0], json!({"protocol": {"minReaderVersion": 1}}));
    let schema: Value =
        serde_json::from_str(meta[1]["metaData"]["schemaString"].as_str().unwrap()).unwrap();
    let fields: Vec<(&str, &str)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            ("age_band", "string"),
            ("sex", "string"),
            ("region", "string"),
            ("icd10_chapter", "string"),
            ("admission_date", "date"),
            ("length_of_stay", "integer")
        ]
    );
    assert_eq!(meta[1]["metaData"]["partitionColumns"], json!([]));

    let version = app
        .client
        .get(app.url(&format!("{TABLE}/version")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(version.status(), 200);
    assert_eq!(version.headers()["delta-table-version"], "1");

    // limitHint is applied on the server; the file is a snapshot.
    let answer = lines(
        query(
            &app,
            TABLE,
            &alice,
            json!({"limitHint": 10, "somethingNew": true}),
        )
        .await,
    )
    .await;
    assert_eq!(answer.len(), 3);
    let file = &answer[2]["file"];
    let stats: Value = serde_json::from_str(file["stats"].as_str().unwrap()).unwrap();
    assert_eq!(stats["numRecords"], 10);
    assert_eq!(file["partitionValues"], json!({}));
    assert!(
        file["expirationTimestamp"].as_i64().unwrap()
            > time::OffsetDateTime::now_utc().unix_timestamp() * 1000
    );
    let body = app
        .client
        .get(file["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        body.headers()["content-length"],
        file["size"].to_string().as_str()
    );
    let batches = decode_parquet(body.bytes().await.unwrap());
    assert_eq!(rows(&batches), 10);
    assert!(
        strings(&batches, "admission_date")
            .iter()
            .all(|d| d.ends_with("-01"))
    );

    // A predicate hint narrows on the server; one on a column the caller
    // cannot see is dropped like any hint the server cannot use.
    let north = r#"{"op":"equal","children":[{"op":"column","name":"region","valueType":"string"},{"op":"literal","value":"north","valueType":"string"}]}"#;
    let answer =
        lines(query(&app, TABLE, &alice, json!({"jsonPredicateHints": north})).await).await;
    let url = answer[2]["file"]["url"].as_str().unwrap();
    let batches = decode_parquet(
        app.client
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    );
    assert!(rows(&batches) > 0);
    assert!(strings(&batches, "region").iter().all(|r| r == "north"));
    let hidden = north.replace("\"region\"", "\"nhs_number\"");
    let plain = lines(query(&app, TABLE, &alice, json!({})).await).await;
    let hinted =
        lines(query(&app, TABLE, &alice, json!({"jsonPredicateHints": hidden})).await).await;
    assert_eq!(plain[2]["file"]["stats"], hinted[2]["file"]["stats"]);
    assert_eq!(plain[2]["file"]["id"], hinted[2]["file"]["id"]);

    // Versions by number; time travel by timestamp is refused, not guessed.
    error(
        query(&app, TABLE, &alice, json!({"version": 7})).await,
        404,
        "RESOURCE_DOES_NOT_EXIST",
    )
    .await;
    error(
        query(
            &app,
            TABLE,
            &alice,
            json!({"timestamp": "2024-01-01T00:00:00Z"}),
        )
        .await,
        400,
        "INVALID_PARAMETER_VALUE",
    )
    .await;
}

#[tokio::test]
async fn a_researcher_downloads_a_profile_for_their_own_token() {
    let app = spawn_app_with(100, |_| {}).await;
    let alice = app.alice();
    let response = app.get("/v1/me/delta-sharing-profile", Some(&alice)).await;
    assert_eq!(response.status(), 200);
    let profile: Value = response.json().await.unwrap();
    assert_eq!(profile["shareCredentialsVersion"], 1);
    assert_eq!(profile["endpoint"], app.url("/delta-sharing"));
    assert_eq!(profile["bearerToken"], alice);
    assert!(profile["expirationTime"].as_str().unwrap().contains('T'));
    assert_eq!(
        app.get("/v1/me/delta-sharing-profile", None).await.status(),
        401
    );
}
