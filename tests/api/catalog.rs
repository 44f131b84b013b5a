use serde_json::Value;

use crate::helpers::{problem, spawn_app};

/// `GET /v1/datasets<query>`, asserted 200.
pub async fn list(app: &crate::helpers::TestApp, query: &str) -> Value {
    let response = app.get(&format!("/v1/datasets{query}"), None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The ids of a listing, in order.
pub fn ids(body: &Value) -> Vec<String> {
    body["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_catalogue_lists_every_dataset_to_anyone() {
    let app = spawn_app().await;
    let body = list(&app, "").await;
    assert_eq!(
        ids(&body),
        [
            "hospital-admissions",
            "school-enrolment",
            "school-results",
            "vaccination-coverage"
        ]
    );
    let first = &body["datasets"][0];
    assert_eq!(first["tier"], "controlled");
    assert_eq!(first["sector"], "health");
    assert!(first["license"].is_string());
}

#[tokio::test]
async fn search_filters_by_words_sector_and_tier() {
    let app = spawn_app().await;
    assert_eq!(
        ids(&list(&app, "?sector=health").await),
        ["hospital-admissions", "vaccination-coverage"]
    );
    assert_eq!(
        ids(&list(&app, "?sector=education&tier=open").await),
        ["school-enrolment"]
    );
    assert_eq!(
        ids(&list(&app, "?q=free%20school%20meals").await),
        ["school-results"]
    );
    assert_eq!(ids(&list(&app, "?q=MMR").await), ["vaccination-coverage"]);
    assert!(ids(&list(&app, "?q=astronomy").await).is_empty());
}

#[tokio::test]
async fn paging_walks_the_catalogue_without_repeats() {
    let app = spawn_app().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let query = if token.is_empty() {
            "?page_size=3".to_string()
        } else {
            format!("?page_size=3&page_token={token}")
        };
        let body = list(&app, &query).await;
        seen.extend(ids(&body));
        match body["next_page_token"].as_str() {
            Some(next) => token = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 4);
}

#[tokio::test]
async fn bad_search_parameters_are_explained() {
    let app = spawn_app().await;
    problem(
        app.get("/v1/datasets?page_size=0", None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.get("/v1/datasets?tier=secret", None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.get("/v1/datasets?colour=red", None).await,
        400,
        "invalid-parameter",
    )
    .await;
    // A page token this server did not issue (a plain id included).
    for token in ["garbage", "hospital-admissions", "p1.%%%", "p1.Li4v"] {
        let body = problem(
            app.get(&format!("/v1/datasets?page_token={token}"), None)
                .await,
            400,
            "invalid-parameter",
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("page_token"));
    }
}

#[tokio::test]
async fn dataset_metadata_shows_schema_versions_and_the_callers_access() {
    let app = spawn_app().await;
    let response = app.get("/v1/datasets/hospital-admissions", None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["rows"], crate::helpers::ROWS);
    assert!(body["bytes"].as_u64().unwrap() > 0);
    assert_eq!(body["versions"][0]["version"], 1);
    let columns = body["columns"].as_array().unwrap();
    let patient = columns.iter().find(|c| c["name"] == "nhs_number").unwrap();
    assert_eq!(patient["classification"], "direct-identifier");
    let date = columns
        .iter()
        .find(|c| c["name"] == "admission_date")
        .unwrap();
    assert_eq!(date["type"], "Date32");
    assert_eq!(date["mask"], "month");
    assert_eq!(body["access"]["allowed"], false);
    assert_eq!(body["access"]["reason"], "token-required");

    let alice = app.alice();
    let mine: Value = app
        .get_json("/v1/datasets/hospital-admissions", Some(&alice))
        .await;
    assert_eq!(mine["access"]["allowed"], true);
    assert_eq!(mine["access"]["basis"]["id"], "los-study");
    assert_eq!(mine["access"]["max_rows"], 250);
    let visible: Vec<&str> = mine["access"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!visible.contains(&"nhs_number"));
    assert!(!visible.contains(&"postcode_district"));

    let rita = app.researcher();
    let theirs: Value = app
        .get_json("/v1/datasets/hospital-admissions", Some(&rita))
        .await;
    assert_eq!(theirs["access"]["reason"], "grant-required");
    assert!(
        theirs["access"]["how_to_request"]
            .as_str()
            .unwrap()
            .contains("Data Access Committee")
    );
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found() {
    let app = spawn_app().await;
    problem(
        app.get("/v1/datasets/no-such-thing", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/..%2F..%2Fetc%2Fpasswd", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/..%2Fpolicy/data", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/UPPER", None).await,
        404,
        "dataset-not-found",
    )
    .await;
}
