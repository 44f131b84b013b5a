use crate::helpers::{problem, spawn_app};

#[tokio::test]
async fn health_and_readiness_answer_ok() {
    let app = spawn_app().await;
    let health = app.get("/healthz", None).await;
    assert_eq!(health.status(), 200);
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["datasets"], 4);
    // A draft is its stewards' business: readiness counts published
    // datasets only.
    let draft = app
        .client
        .post(app.url("/v1/datasets"))
        .bearer_auth(app.admin())
        .json(
            &serde_json::json!({"id": "secret-draft", "title": "T", "description": "d",
            "sector": "health", "publisher": "P", "license": "CC-BY-4.0", "tier": "controlled"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(draft.status(), 201);
    let body: serde_json::Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(body["datasets"], 4);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz", None).await;
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36);
    let missing = app.get("/v1/nothing-here", None).await;
    let header = missing.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = problem(missing, 404, "not-found").await;
    assert_eq!(body["request_id"], header);
}
