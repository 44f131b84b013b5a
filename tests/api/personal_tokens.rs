//! Personal access tokens (issue 34): made by a person with their own
//! token, shown once, used by programs as their owner (narrowed to a
//! dataset or grant when asked, never as an admin), listed with last use,
//! audited under the person, revoked at once, and closed with the owner's
//! grant.

use serde_json::{Value, json};

use crate::helpers::{TestApp, audit_records, problem, spawn_app};

async fn create(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/me/tokens"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn made(app: &TestApp, token: &str, body: Value) -> Value {
    let r = create(app, token, body).await;
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

async fn status(app: &TestApp, path: &str, token: &str) -> u16 {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

const DATA: &str = "/v1/datasets/hospital-admissions/data?limit=5&format=csv";

#[tokio::test]
async fn a_personal_token_reads_as_its_owner_until_revoked() {
    let app = spawn_app().await;
    let alice = app.alice();
    let pat = made(&app, &alice, json!({"name": "laptop"})).await;
    let text = pat["token"].as_str().unwrap().to_owned();
    assert!(text.starts_with("sluice_pat_"), "{pat}");
    let id = pat["id"].as_str().unwrap().to_owned();

    // The same rows as its owner's own token.
    let rows = |token: String| {
        let app = &app;
        async move {
            app.client
                .get(app.url(DATA))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert_eq!(rows(text.clone()).await, rows(alice.clone()).await);
    let me: Value = app.get_json("/v1/me", Some(&text)).await;
    assert_eq!(me["subject"], "alice@uni.example");

    // Listed with last use, never with its secret.
    let listed: Value = app.get_json("/v1/me/tokens", Some(&alice)).await;
    let first = &listed["tokens"][0];
    assert_eq!(first["id"], id.as_str());
    assert!(first["last_used"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&text[20..]), "{listed}");
    assert!(!listed.to_string().contains("hash"), "{listed}");

    // Each use is in the trail under the person, with the token.
    let records = audit_records(&app, "hospital-admissions").await;
    assert!(records.iter().any(|r| r["subject"] == "alice@uni.example"
        && r["personal_token"] == id.as_str()
        && r["event"] == "data"));

    // A personal token makes no tokens; nobody else revokes it.
    let refused = create(&app, &text, json!({"name": "another"})).await;
    problem(refused, 403, "personal-token-refused").await;
    let theirs = app
        .client
        .delete(app.url(&format!("/v1/me/tokens/{id}")))
        .bearer_auth(app.researcher())
        .send()
        .await
        .unwrap();
    problem(theirs, 404, "token-not-found").await;
    assert_eq!(status(&app, DATA, &text).await, 200);

    // Its owner revokes it: refused at once, saying why.
    let revoked = app
        .client
        .delete(app.url(&format!("/v1/me/tokens/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let r = app
        .client
        .get(app.url(DATA))
        .bearer_auth(&text)
        .send()
        .await
        .unwrap();
    let body = problem(r, 401, "invalid-token").await;
    assert!(
        body["detail"].as_str().unwrap().contains("revoked"),
        "{body}"
    );
    let listed: Value = app.get_json("/v1/me/tokens", Some(&alice)).await;
    assert_eq!(listed["tokens"], json!([]));
    // Nothing of it is left to pile up.
    let kept = app.state_dir().join("personal-tokens");
    let left: Vec<_> = walk(&kept);
    assert!(left.is_empty(), "{left:?}");

    // A forged secret for a real id opens nothing.
    let forged = format!("sluice_pat_{id}_{}", "A".repeat(43));
    assert_eq!(status(&app, "/v1/me", &forged).await, 401);
}

#[tokio::test]
async fn a_token_is_narrowed_as_asked_and_never_wider_than_its_owner() {
    let app = spawn_app().await;
    let alice = app.alice();
    // Only one dataset.
    let school = made(
        &app,
        &alice,
        json!({"name": "school only", "dataset": "school-results", "days": 7}),
    )
    .await;
    let school = school["token"].as_str().unwrap().to_owned();
    assert_eq!(
        status(&app, "/v1/datasets/school-results/data?limit=1", &school).await,
        200
    );
    let r = app
        .client
        .get(app.url(DATA))
        .bearer_auth(&school)
        .send()
        .await
        .unwrap();
    problem(r, 403, "token-scope").await;

    // A narrowed token reads; it does not ask for access.
    let r = app
        .client
        .post(app.url("/v1/datasets/hospital-admissions/access-requests"))
        .bearer_auth(&school)
        .json(&json!({"project_title": "p", "purpose": "q", "columns": ["region"], "duration_days": 90}))
        .send()
        .await
        .unwrap();
    problem(r, 403, "personal-token-refused").await;

    // A dataset that is not there, or a grant for another dataset: refused
    // when made, not found useless later.
    let r = create(
        &app,
        &alice,
        json!({"name": "x", "dataset": "no-such-dataset"}),
    )
    .await;
    problem(r, 400, "invalid-parameter").await;
    let r = create(
        &app,
        &alice,
        json!({"name": "x", "dataset": "school-results", "grant": "los-study"}),
    )
    .await;
    problem(r, 400, "invalid-parameter").await;
    // Nobody: refused before any body is read.
    let r = app
        .client
        .post(app.url("/v1/me/tokens"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    problem(r, 401, "token-required").await;

    // Through a grant the owner holds; not one they do not.
    let r = create(
        &app,
        &alice,
        json!({"name": "x", "grant": "north-planning"}),
    )
    .await;
    problem(r, 400, "invalid-parameter").await;
    let study = made(&app, &alice, json!({"name": "study", "grant": "los-study"})).await;
    let study = study["token"].as_str().unwrap().to_owned();
    assert_eq!(status(&app, DATA, &study).await, 200);
    // What it shows of its owner is what it opens.
    let me: Value = app.get_json("/v1/me", Some(&school)).await;
    assert_eq!(me["grants"], json!([]), "{me}");
    let names: Vec<&str> = me["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(names, ["school-results"], "{me}");

    // Longer than the server allows, or unnamed: refused.
    let r = create(&app, &alice, json!({"name": "x", "days": 3650})).await;
    problem(r, 400, "invalid-parameter").await;
    let r = create(&app, &alice, json!({"name": " "})).await;
    problem(r, 400, "invalid-parameter").await;

    // An admin's token is not an admin.
    let admin = app.admin();
    let theirs = made(&app, &admin, json!({"name": "scripts"})).await;
    let theirs = theirs["token"].as_str().unwrap().to_owned();
    assert_eq!(status(&app, "/v1/changes", &admin).await, 200);
    assert_eq!(status(&app, "/v1/changes", &theirs).await, 403);

    // The owner's grant goes: so does what the token reads.
    let without = crate::helpers::TEST_POLICY.replace(
        "subjects = [\"alice@uni.example\"]",
        "subjects = [\"someone-else@uni.example\"]",
    );
    crate::helpers::write_policy(&app.settings.storage.policy, &without);
    let mut closed = false;
    for _ in 0..50 {
        if status(&app, DATA, &study).await == 403 {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(closed, "a revoked grant closes the token too");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
