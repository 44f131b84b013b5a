//! Issue 19, the first hour: what a new researcher sees when they ask who
//! they are, or get a column, a quote or a grant wrong. Each answer teaches
//! the fix and names nothing the caller may not see.

use serde_json::Value;

use crate::helpers::{problem, spawn_app};
use sluice::auth::Role;

const ID: &str = "hospital-admissions";

#[tokio::test]
async fn me_says_who_i_am_what_grants_name_me_and_what_i_can_read() {
    let app = spawn_app().await;
    problem(app.get("/v1/me", None).await, 401, "token-required").await;

    let me: Value = app.get_json("/v1/me", Some(&app.alice())).await;
    assert_eq!(me["subject"], "alice@uni.example");
    assert_eq!(me["roles"], serde_json::json!(["researcher"]));
    assert!(me["token_expires"].as_str().unwrap().starts_with("20"));
    let grants = me["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "only alice's own grant: {grants:?}");
    assert_eq!(grants[0]["id"], "los-study");
    assert_eq!(grants[0]["purpose"], "Length-of-stay study");
    assert_eq!(grants[0]["expired"], false);
    let datasets = me["datasets"].as_array().unwrap();
    let admissions = datasets.iter().find(|d| d["id"] == ID).expect("listed");
    assert_eq!(admissions["mode"], "rows");
    assert_eq!(admissions["basis"]["id"], "los-study");
    // Open data is readable by her too, on the tier's basis.
    assert!(
        datasets
            .iter()
            .any(|d| d["id"] == "vaccination-coverage" && d["basis"]["kind"] == "open")
    );

    // A member of the DP network sees the budget of the grant naming them.
    let dana = app.token_in(
        "dana@network.example",
        &[Role::Researcher],
        "DP Research Network",
    );
    let me: Value = app.get("/v1/me", Some(&dana)).await.json().await.unwrap();
    let grant = &me["grants"].as_array().unwrap()[0];
    assert_eq!(grant["id"], "dp-network");
    assert_eq!(grant["mode"], "dp");
    assert_eq!(grant["privacy_budget"]["remaining"], 2.0);
    assert!(
        me["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == ID && d["mode"] == "dp")
    );
}

#[tokio::test]
async fn an_unknown_column_names_the_usable_ones_and_the_nearest_and_nothing_hidden() {
    let app = spawn_app().await;
    let body = problem(
        app.data(ID, &[("columns", "age_bnad")], Some(&app.alice()))
            .await,
        400,
        "unknown-column",
    )
    .await;
    assert_eq!(body["column"], "age_bnad");
    assert_eq!(body["did_you_mean"], "age_band");
    // Exactly the columns alice's grant shows her.
    assert_eq!(
        body["usable_columns"],
        serde_json::json!([
            "admission_date",
            "age_band",
            "icd10_chapter",
            "length_of_stay",
            "region",
            "sex"
        ])
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("did you mean 'age_band'?"), "{detail}");
    for hidden in [
        "nhs_number",
        "patient_id",
        "postcode_district",
        "discharge_destination",
    ] {
        assert!(
            !body.to_string().contains(hidden),
            "{hidden} leaked: {body}"
        );
    }
    // A hidden column asked for by name gets the same kind of answer.
    let hidden = problem(
        app.data(ID, &[("columns", "nhs_number")], Some(&app.alice()))
            .await,
        400,
        "unknown-column",
    )
    .await;
    assert_eq!(hidden["usable_columns"], body["usable_columns"]);
    assert!(hidden.get("did_you_mean").is_none());
}

#[tokio::test]
async fn filters_written_wrong_say_how_to_write_them() {
    let app = spawn_app().await;
    let alice = app.alice();
    let body = problem(
        app.data(ID, &[("filter", "region = \"north\"")], Some(&alice))
            .await,
        400,
        "invalid-filter",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("text takes single quotes: 'north'"),
        "{detail}"
    );

    let body = problem(
        app.data(ID, &[("filter", "length_of_stay = 'seven'")], Some(&alice))
            .await,
        400,
        "invalid-filter",
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("length_of_stay (whole number) = 'seven' (text)"),
        "{detail}"
    );
}

#[tokio::test]
async fn a_grant_that_is_not_yours_lists_yours_and_nothing_of_anyone_elses() {
    let app = spawn_app().await;
    let alice = app.alice();
    let mut bodies = Vec::new();
    for named in ["north-planning", "no-such-grant"] {
        let mut body = problem(
            app.data(ID, &[("grant", named), ("limit", "1")], Some(&alice))
                .await,
            403,
            "grant-required",
        )
        .await;
        assert_eq!(body["your_grants"], serde_json::json!(["los-study"]));
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    // Whether another person's grant exists is not told.
    assert_eq!(bodies[0], bodies[1]);
    assert!(!bodies[0].to_string().contains("north-planning"));
}

#[tokio::test]
async fn a_route_for_admins_says_it_needs_the_admin_role() {
    let app = spawn_app().await;
    let body = problem(
        app.get("/v1/audit", Some(&app.researcher())).await,
        403,
        "role-required",
    )
    .await;
    assert_eq!(body["detail"], "this needs a token with the 'admin' role");
}

#[tokio::test]
async fn a_saved_parquet_file_says_where_it_came_from_and_nothing_of_the_grants_filter() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let app = spawn_app().await;
    // The north-planning grant has a row filter; its values stay out.
    let token = app.token("nora@nhs.example", &[Role::Researcher], &["nhs-north"]);
    let response = app
        .data(ID, &[("format", "parquet"), ("limit", "5")], Some(&token))
        .await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let reader = SerializedFileReader::new(bytes).expect("a Parquet file");
    let pairs: std::collections::HashMap<String, String> = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .expect("key-value metadata")
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect();
    assert_eq!(pairs["sluice.dataset"], ID);
    assert_eq!(pairs["sluice.version"], "1");
    assert_eq!(pairs["sluice.mode"], "rows");
    assert!(pairs["sluice.access"].starts_with("grant north-planning: "));
    assert!(!pairs["sluice.license"].is_empty());
    let citation = &pairs["sluice.citation"];
    assert!(citation.contains("(version 1, published 20"), "{citation}");
    for (key, value) in &pairs {
        assert!(
            !value.contains("north'"),
            "{key} carries the row filter: {value}"
        );
    }
}
