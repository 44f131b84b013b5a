//! A new version's data is compared with the version it replaces before it
//! is served: a steward who re-uploads a dataset with an identifier moved
//! into a column classified lower gets the version held for an admin, with
//! what was found in words, and readers keep the old version; the same
//! kind of data (more rows, rows or headers in another order) publishes
//! in one step as before.

use serde_json::{Value, json};

use crate::helpers::{
    OBSERVATORY, TestApp, arrow_batches, get, observatory_steward as steward, post, problem,
    publish, register, spawn_app, strings, upload,
};

const ID: &str = "swap-target";

fn manifest() -> Value {
    json!({
        "id": ID,
        "title": "Swap target",
        "description": "A column, an identifier and a bucketed number",
        "sector": "health",
        "publisher": OBSERVATORY,
        "license": "CC-BY-4.0",
        "tier": "open",
        "columns": [
            {"name": "a", "description": "plain"},
            {"name": "secret", "description": "an identifier", "classification": "direct-identifier"},
            {"name": "q", "description": "a number", "classification": "quasi-identifier", "mask": "bucket(10)", "type": "int64"},
        ],
    })
}

/// `rows` lines of `a,secret,q` with distinct identifiers.
fn people(rows: usize) -> Vec<[String; 3]> {
    (0..rows)
        .map(|i| {
            [
                ["north", "south", "east"][i % 3].to_owned(),
                format!("S{:05}", i * 7919 % 100_003),
                (20 + i % 60).to_string(),
            ]
        })
        .collect()
}

fn csv(header: &str, rows: &[[String; 3]]) -> String {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(&row.join(","));
        text.push('\n');
    }
    text
}

/// Registers the dataset and publishes `first` as version 1.
async fn published(app: &TestApp, first: &str) -> String {
    let token = steward(app);
    let r = register(app, &token, &manifest()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = upload(app, &token, ID, "text/csv", first.to_owned()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    token
}

/// What an anonymous reader gets of column `a`.
async fn anonymous_a(app: &TestApp) -> Vec<String> {
    let r = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/data?columns=a")),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    strings(&arrow_batches(r).await, "a")
}

async fn upload_json(app: &TestApp, token: &str, body: String) -> Value {
    let r = upload(app, token, ID, "text/csv", body).await;
    let status = r.status();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{answer}");
    answer
}

#[tokio::test]
async fn swapping_an_identifier_into_an_open_column_waits_for_an_admin() {
    let app = spawn_app().await;
    let token = published(&app, "a,secret,q\nx,S1,37\n").await;
    assert_eq!(anonymous_a(&app).await, ["x"]);

    let answer = upload_json(&app, &token, "a,secret,q\nS1,x,37\n".into()).await;
    assert_eq!(answer["in_review"], true, "{answer}");
    let change = answer["change"].as_u64().expect("a change number");
    let findings = answer["findings"].to_string();
    assert!(
        findings.contains("column 'a'") && findings.contains("column 'secret'"),
        "{findings}"
    );
    // Readers keep version 1, and the held version is not readable by
    // number either.
    assert_eq!(anonymous_a(&app).await, ["x"]);
    let held = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/data?version=2&columns=a")),
        None,
    )
    .await;
    assert_eq!(held.status(), 404);
    // The steward cannot publish it alone.
    problem(publish(&app, &token, ID).await, 409, "approval-required").await;
    assert_eq!(anonymous_a(&app).await, ["x"]);
    let r = post(
        &app,
        &token,
        &format!("/v1/datasets/{ID}/changes/{change}/approve"),
    )
    .await;
    assert_eq!(r.status(), 403);

    // The admin sees the findings and approves: now it is served.
    let admin = app.admin();
    let listed: Value = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/changes")),
        Some(&admin),
    )
    .await
    .json()
    .await
    .unwrap();
    let pending = &listed["changes"][0];
    assert_eq!(pending["status"], "pending");
    assert!(
        pending["findings"][0]
            .as_str()
            .unwrap()
            .contains("'secret'")
    );
    let r = post(
        &app,
        &admin,
        &format!("/v1/datasets/{ID}/changes/{change}/approve"),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(anonymous_a(&app).await, ["S1"]);
}

#[tokio::test]
async fn a_rejected_version_is_never_served_and_a_later_upload_publishes() {
    let app = spawn_app().await;
    let people = people(300);
    let token = published(&app, &csv("a,secret,q", &people)).await;

    // Half the rows swapped.
    let mut swapped = people.clone();
    for row in swapped.iter_mut().step_by(2) {
        row.swap(0, 1);
    }
    let answer = upload_json(&app, &token, csv("a,secret,q", &swapped)).await;
    let change = answer["change"].as_u64().expect("held");
    let admin = app.admin();
    let r = post(
        &app,
        &admin,
        &format!("/v1/datasets/{ID}/changes/{change}/reject"),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    problem(publish(&app, &token, ID).await, 409, "nothing-to-publish").await;

    // The same kind of data again publishes at once, and the rejected
    // version stays unreadable, below the published one.
    let answer = upload_json(&app, &token, csv("a,secret,q", &people[..200])).await;
    assert_eq!(answer["in_review"], false, "{answer}");
    assert_eq!(answer["version"], 3);
    let r = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/data?version=2&columns=a")),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    assert!(!anonymous_a(&app).await.iter().any(|a| a.starts_with('S')));

    // A held version replaced by an upload that publishes at once is gone
    // too: not readable by number, not listed.
    let answer = upload_json(&app, &token, csv("a,secret,q", &swapped)).await;
    let held = answer["version"].as_u64().unwrap();
    assert!(answer["change"].is_u64(), "{answer}");
    let answer = upload_json(&app, &token, csv("a,secret,q", &people)).await;
    assert_eq!(answer["in_review"], false, "{answer}");
    let r = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/data?version={held}&columns=a")),
        None,
    )
    .await;
    assert_eq!(r.status(), 404);
    let described: Value = get(&app.client, app.url(&format!("/v1/datasets/{ID}")), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        !described["versions"]
            .to_string()
            .contains(&format!("\"version\":{held}")),
        "{described}"
    );
}

#[tokio::test]
async fn the_same_kind_of_data_publishes_in_one_step() {
    let app = spawn_app().await;
    let people = people(300);
    let token = published(&app, &csv("a,secret,q", &people)).await;

    // More rows, in reverse order, with the headers in another order.
    let mut more = self::people(400);
    more.reverse();
    let reordered: Vec<[String; 3]> = more
        .iter()
        .map(|[a, s, q]| [q.clone(), a.clone(), s.clone()])
        .collect();
    let answer = upload_json(&app, &token, csv("q,a,secret", &reordered)).await;
    assert_eq!(answer["in_review"], false, "{answer}");
    assert_eq!(answer["findings"], json!([]));
    assert_eq!(anonymous_a(&app).await.len(), 400);
}

#[tokio::test]
async fn other_swaps_are_found_too() {
    let app = spawn_app().await;
    let people = people(300);
    let token = published(&app, &csv("a,secret,q", &people)).await;

    // Identifiers in the open column, rows shuffled, headers reordered.
    let mut moved: Vec<[String; 3]> = people
        .iter()
        .map(|[a, s, q]| [s.clone(), a.clone(), q.clone()])
        .collect();
    moved.reverse();
    let reordered: Vec<[String; 3]> = moved
        .iter()
        .map(|[a, s, q]| [s.clone(), q.clone(), a.clone()])
        .collect();
    let answer = upload_json(&app, &token, csv("secret,q,a", &reordered)).await;
    assert!(answer["change"].is_u64(), "{answer}");

    // A masked column whose values change shape: exact values scaled
    // past the buckets the mask was chosen for.
    let answer = upload_json(
        &app,
        &token,
        csv(
            "a,secret,q",
            &people
                .iter()
                .map(|[a, s, q]| [a.clone(), s.clone(), format!("{q}0031")])
                .collect::<Vec<_>>(),
        ),
    )
    .await;
    let findings = answer["findings"].to_string();
    assert!(findings.contains("masked column 'q'"), "{findings}");
    // The first held version was replaced, and its change closed.
    let listed: Value = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}/changes")),
        Some(&token),
    )
    .await
    .json()
    .await
    .unwrap();
    let statuses: Vec<&str> = listed["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["rejected", "pending"], "{listed}");
    assert!(
        listed["changes"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("replaced")
    );
}
