//! Search as people expect it: stems ("vaccine" finds "vaccination"),
//! sectors, publishers and column names count, prefixes work, results are
//! ranked, and listings say how big and how fresh each dataset is.

use serde_json::Value;

use crate::catalog::{ids as listed_ids, list};
use crate::helpers::{TestApp, spawn_app};

async fn ids(app: &TestApp, query: &str) -> Vec<String> {
    listed_ids(&list(app, &format!("?{query}")).await)
}

#[tokio::test]
async fn words_match_by_stem_field_and_prefix_and_rank_by_where_they_match() {
    let app = spawn_app().await;
    // A stem: the title says "vaccination", a column is "vaccine".
    assert_eq!(ids(&app, "q=vaccine").await, ["vaccination-coverage"]);
    // A sector: both health datasets, the one with "health" in more and
    // weightier places (keywords "public health", publisher) first.
    assert_eq!(
        ids(&app, "q=health").await,
        ["vaccination-coverage", "hospital-admissions"]
    );
    // A column name (`postcode_district`) and a prefix of it.
    assert_eq!(ids(&app, "q=postcode").await, ["hospital-admissions"]);
    assert_eq!(ids(&app, "q=postc").await, ["hospital-admissions"]);
    // A publisher, and every word must match.
    assert_eq!(
        ids(&app, "q=Department+for+Education").await,
        ["school-results", "school-enrolment"]
    );
    assert_eq!(
        ids(&app, "q=education+attainment").await,
        ["school-results"]
    );
    assert!(ids(&app, "q=education+vaccine").await.is_empty());
    // Two letters are too few for a prefix.
    assert!(ids(&app, "q=va").await.is_empty());
}

#[tokio::test]
async fn ranked_results_page_without_repeats_and_listings_show_size_and_freshness() {
    let app = spawn_app().await;
    let all = ids(&app, "q=synthetic").await;
    assert_eq!(all.len(), 4);
    let mut walked = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let query = match &token {
            Some(t) => format!("/v1/datasets?q=synthetic&page_size=1&page_token={t}"),
            None => "/v1/datasets?q=synthetic&page_size=1".to_owned(),
        };
        let body: Value = app.get(&query, None).await.json().await.unwrap();
        walked.extend(listed_ids(&body));
        match body["next_page_token"].as_str() {
            Some(next) => token = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(walked, all, "pages walk the ranking in order");

    let body: Value = app
        .get("/v1/datasets?q=vaccine", None)
        .await
        .json()
        .await
        .unwrap();
    let listed = &body["datasets"][0];
    assert!(listed["rows"].as_u64().unwrap() > 0);
    assert!(listed["updated"].as_str().unwrap().starts_with("20"));
    assert!(
        listed["columns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "vaccine")
    );
}

#[tokio::test]
async fn what_others_cannot_see_does_not_move_their_scores() {
    let app = spawn_app().await;
    async fn token(app: &TestApp) -> String {
        let body = list(app, "?q=synthetic&page_size=1").await;
        body["next_page_token"].as_str().unwrap().to_owned()
    }
    let before = token(&app).await;
    // A steward's draft full of the word, and one without it: page tokens
    // carry scores, and a score counted over hidden datasets would tell.
    let steward = crate::helpers::observatory_steward(&app);
    for (id, title) in [("hidden-a", "Synthetic synthetic"), ("hidden-b", "Other")] {
        let mut manifest = crate::steward_helpers::manifest(id, serde_json::json!([]));
        manifest["title"] = Value::from(title);
        let r = crate::helpers::register(&app, &steward, &manifest).await;
        assert_eq!(r.status(), 201);
    }
    assert_eq!(token(&app).await, before);
}
