//! `GET /v1/datasets/{id}/citation`: how a researcher cites the version
//! they used, as CFF or BibTeX, with hostile metadata kept inside its
//! fields, and nothing about datasets the caller may not see.

use serde_json::json;

use crate::helpers::{observatory_steward, problem, register, spawn_app, upload};

#[tokio::test]
async fn a_version_is_cited_as_cff_and_bibtex() {
    let app = spawn_app().await;
    let response = app
        .get("/v1/datasets/vaccination-coverage/citation", None)
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/x-yaml")
    );
    let cff = response.text().await.unwrap();
    let described: serde_json::Value = app
        .get("/v1/datasets/vaccination-coverage", None)
        .await
        .json()
        .await
        .unwrap();
    let title = described["title"].as_str().unwrap();
    assert!(cff.starts_with("cff-version: 1.2.0\n"), "{cff}");
    assert!(cff.contains("type: dataset\n"), "{cff}");
    assert!(cff.contains(&format!("title: {}\n", json!(title))), "{cff}");
    assert!(cff.contains("version: \"1\"\n"), "{cff}");
    assert!(
        cff.contains("/v1/datasets/vaccination-coverage\"\n"),
        "{cff}"
    );

    let bib = app
        .get(
            "/v1/datasets/vaccination-coverage/citation?format=bibtex&version=1",
            None,
        )
        .await;
    assert_eq!(bib.status(), 200);
    let bib = bib.text().await.unwrap();
    assert!(bib.starts_with("@misc{vaccination-coverage_v1,\n"), "{bib}");
    assert!(bib.contains(&format!("  title = {{{title}}},\n")), "{bib}");
    assert!(bib.trim_end().ends_with('}'));

    problem(
        app.get(
            "/v1/datasets/vaccination-coverage/citation?format=ris",
            None,
        )
        .await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.get(
            "/v1/datasets/vaccination-coverage/citation?version=99",
            None,
        )
        .await,
        404,
        "version-not-found",
    )
    .await;
}

#[tokio::test]
async fn drafts_are_not_cited_to_others_and_hostile_titles_stay_in_their_field() {
    let app = spawn_app().await;
    let steward = observatory_steward(&app);
    let mut manifest = json!({
        "id": "hostile-title",
        "title": "Evil} , author = {Mallory\n",
        "description": "d",
        "sector": "health",
        "publisher": crate::helpers::OBSERVATORY,
        "license": "CC-BY-4.0",
        "tier": "open",
        "columns": [
            { "name": "a", "description": "a number", "classification": "none" },
        ],
    });
    // A line break in a title is refused at the door (issue 32) …
    assert_eq!(register(&app, &steward, &manifest).await.status(), 422);
    // … braces are not: they are escaped where the title is written.
    manifest["title"] = json!("Evil} , author = {Mallory");
    assert_eq!(register(&app, &steward, &manifest).await.status(), 201);
    // A draft has no version to cite, and others do not see it at all.
    problem(
        app.get("/v1/datasets/hostile-title/citation", None).await,
        404,
        "dataset-not-found",
    )
    .await;
    problem(
        app.get("/v1/datasets/hostile-title/citation", Some(&steward))
            .await,
        404,
        "version-not-found",
    )
    .await;

    let uploaded = upload(&app, &steward, "hostile-title", "text/csv", "a\n1\n2\n").await;
    assert_eq!(uploaded.status(), 201, "{:?}", uploaded.text().await);
    let bib = app
        .get("/v1/datasets/hostile-title/citation?format=bibtex", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        bib.contains("  title = {Evil\\} , author = \\{Mallory},\n"),
        "{bib}"
    );
    assert_eq!(bib.matches("author = {").count(), 1, "{bib}");
    let cff = app
        .get("/v1/datasets/hostile-title/citation", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        cff.contains("title: \"Evil} , author = {Mallory\"\n"),
        "{cff}"
    );
}
