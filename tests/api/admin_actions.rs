//! An admin's actions are first class (issue 33): `sluice access revoke`
//! takes a grant out of the policy file and says so to the researcher;
//! pending dataset changes are listed across datasets (API, CLI, /admin);
//! a rejection carries a reason the steward sees, and the audit trail
//! records who rejected.

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    BinaryServer, ROWS, TEST_POLICY, audit_records, edit, problem, spawn_app, succeeded,
    write_policy,
};

#[tokio::test]
async fn a_revoked_grant_leaves_the_policy_and_the_researcher_is_told_why() {
    let server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    // A hand-written grant after the approval's, with a comment: it stays.
    write_policy(server.policy(), TEST_POLICY);
    let store = sluice::access_request::RequestStore::open(&server.state()).unwrap();
    let id = store
        .create(sluice::access_request::NewRequest {
            dataset: sluice::domain::DatasetId::parse("hospital-admissions").unwrap(),
            subject: "carol@uni.example".into(),
            organisation: None,
            project_title: "Stays".into(),
            purpose: "A study".into(),
            columns: vec!["region".into()],
            duration_days: 30,
        })
        .unwrap()
        .id;
    succeeded(&server.run(&["access", "approve", &id]));
    let body = sluice::policy::apply::live_body(&server.policy()).unwrap();
    let with_more = format!(
        "{body}\n# kept by hand\n[[grant]]\nid = \"after\"\nsubjects = [\"x@y\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\n"
    );
    write_policy(server.policy(), &with_more);
    let grants = |server: &BinaryServer| -> Vec<String> {
        let text = std::fs::read_to_string(server.policy()).unwrap();
        sluice::policy::Policy::parse(&text, "p")
            .unwrap()
            .grants
            .into_iter()
            .map(|g| g.id)
            .collect()
    };
    assert!(grants(&server).contains(&id));

    let refused = server.run(&["access", "revoke", &id, "--reason", " "]);
    assert!(!refused.status.success());
    let out = succeeded(&server.run(&["access", "revoke", &id, "--reason", "the project ended"]));
    assert!(out.contains("removed from"), "{out}");
    let after = grants(&server);
    assert!(!after.contains(&id), "{after:?}");
    assert!(after.contains(&"after".to_string()) && after.contains(&"los-study".to_string()));
    let text = std::fs::read_to_string(server.policy()).unwrap();
    assert!(text.contains("# kept by hand"));
    assert!(!text.contains(&format!("# Access request {id}")));
    sluice::policy::seal::unseal(&text).expect("still sealed");

    let request = store.get(&id).unwrap();
    assert_eq!(request.status.as_str(), "revoked");
    assert_eq!(request.reason.as_deref(), Some("the project ended"));
    let again = server.run(&["access", "revoke", &id, "--reason", "x"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is revoked"));
    let listed = succeeded(&server.run(&["access", "list", "--status", "revoked"]));
    assert!(listed.contains(&id), "{listed}");
}

async fn post(
    app: &crate::helpers::TestApp,
    token: &str,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn pending_changes_are_listed_across_datasets_and_a_rejection_says_why() {
    let app = spawn_app().await;
    let steward = app.token_in(
        "sam@health-data.example",
        &[Role::Steward],
        "Example Health Data Service",
    );
    let admin = app.token("ada@sluice.example", &[Role::Admin], &[]);
    let r = edit(
        &app,
        &steward,
        "hospital-admissions",
        json!({"tier": "open"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    let listed: Value = app.get_json("/v1/changes", Some(&admin)).await;
    let change = &listed["changes"][0];
    assert_eq!(change["dataset"], "hospital-admissions");
    let number = change["number"].as_u64().unwrap();
    // Stewards see their publisher's; researchers nothing.
    let theirs: Value = app.get_json("/v1/changes", Some(&steward)).await;
    assert_eq!(theirs["changes"].as_array().unwrap().len(), 1);
    problem(
        app.get("/v1/changes", Some(&app.researcher())).await,
        403,
        "steward-required",
    )
    .await;
    // The admin page lists it.
    let session = crate::web::dev_sign_in(&app, "ada@sluice.example", "").await;
    let page = crate::web::page(&app, "/admin", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Dataset changes waiting (1)"), "{page}");

    let path = format!("/v1/datasets/hospital-admissions/changes/{number}/reject");
    let r = post(
        &app,
        &admin,
        &path,
        Some(json!({"reason": "open data needs the DAC's sign-off"})),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen: Value = app
        .get_json("/v1/datasets/hospital-admissions/changes", Some(&steward))
        .await;
    assert_eq!(seen["changes"][0]["status"], "rejected");
    assert_eq!(
        seen["changes"][0]["reason"],
        "open data needs the DAC's sign-off"
    );
    let rejected = audit_records(&app, "hospital-admissions")
        .await
        .into_iter()
        .filter(|r| r["event"] == "reject-change")
        .find(|r| r["decision"] == "allow" || r["outcome"].is_string() && r["phase"].is_null())
        .expect("a reject-change record");
    assert_eq!(rejected["rejected_by"], "ada@sluice.example");
    assert!(rejected.get("approved_by").is_none(), "{rejected}");
    assert_eq!(rejected["reason"], "open data needs the DAC's sign-off");
    let listed: Value = app.get_json("/v1/changes", Some(&admin)).await;
    assert_eq!(listed["changes"], json!([]));
}
