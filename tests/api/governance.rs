//! Changes that widen access need an admin: a steward's widening edit is
//! stored as a pending change (nothing opens), an admin approves or rejects
//! it, narrowing edits apply at once, and the audit trail names every
//! field's old and new value, the proposer and the approver.

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    BinaryServer, TestApp, arrow_batches, column_names, edit as patch, in_object_store, post,
    problem, register, spawn_app, spawn_app_with, strings, succeeded, upload,
};

const PUBLISHER: &str = "Example Health Data Service";
const STEWARD: &str = "sam@health-data.example";
const ADMIN: &str = "ada@sluice.example";

fn steward(app: &TestApp) -> String {
    app.token_in(STEWARD, &[Role::Steward], PUBLISHER)
}

fn admin(app: &TestApp) -> String {
    app.token(ADMIN, &[Role::Admin], &[])
}

/// A member of `nhs-north`, whose grant `north-planning` lists no columns.
fn north_analyst(app: &TestApp) -> String {
    app.token(
        "nora@nhs-north.example",
        &[Role::Researcher],
        &["nhs-north"],
    )
}

async fn json_ok(response: reqwest::Response, status: u16) -> Value {
    let got = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(got, status, "status; body {body}");
    body
}

/// The (field, old, new, widens) of a list of field changes.
fn fields(changes: &Value) -> Vec<(String, Value, Value, bool)> {
    changes
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["field"].as_str().unwrap().to_owned(),
                c["old"].clone(),
                c["new"].clone(),
                c["widens"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The attack of issue 21: an identifier opened to anyone.
fn open_nhs_number() -> Value {
    json!({"tier": "open", "columns": [{"name": "nhs_number", "classification": "none"}]})
}

#[tokio::test]
async fn a_steward_cannot_open_an_identifier_alone() {
    let app = spawn_app().await;
    let r = patch(
        &app,
        &steward(&app),
        "hospital-admissions",
        open_nhs_number(),
    )
    .await;
    let body = json_ok(r, 202).await;
    // Nothing applied; both fields wait for an admin.
    assert_eq!(body["applied_changes"], json!([]));
    assert_eq!(body["tier"], "controlled");
    let nhs = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nhs_number")
        .unwrap();
    assert_eq!(nhs["classification"], "direct-identifier");
    assert_eq!(body["pending_change"]["status"], "pending");
    assert_eq!(
        fields(&body["pending_change"]["fields"]),
        [
            ("tier".to_owned(), json!("controlled"), json!("open"), true),
            (
                "columns.nhs_number.classification".to_owned(),
                json!("direct-identifier"),
                json!("none"),
                true
            ),
        ]
    );

    // Anonymous callers still need a token; they read nothing.
    problem(
        app.data("hospital-admissions", &[("columns", "nhs_number")], None)
            .await,
        401,
        "token-required",
    )
    .await;
    // The analyst's grant lists no columns: they get every servable one,
    // and nhs_number is not among them.
    let analyst = north_analyst(&app);
    let batches = arrow_batches(
        app.data("hospital-admissions", &[("limit", "20")], Some(&analyst))
            .await,
    )
    .await;
    let names = column_names(&batches);
    assert!(names.contains(&"age_band".to_owned()), "{names:?}");
    assert!(!names.contains(&"nhs_number".to_owned()), "{names:?}");
    problem(
        app.data(
            "hospital-admissions",
            &[("columns", "nhs_number")],
            Some(&analyst),
        )
        .await,
        400,
        "unknown-column",
    )
    .await;
}

#[tokio::test]
async fn an_admin_approves_a_proposed_change_and_the_trail_names_both_people() {
    let app = spawn_app().await;
    let (steward, admin) = (steward(&app), admin(&app));
    let body = json_ok(
        patch(&app, &steward, "hospital-admissions", open_nhs_number()).await,
        202,
    )
    .await;
    let n = body["pending_change"]["number"].as_u64().unwrap();
    assert_eq!(n, 1);

    // The steward and an admin see it pending; a researcher does not.
    for token in [&steward, &admin] {
        let list = json_ok(
            app.get("/v1/datasets/hospital-admissions/changes", Some(token))
                .await,
            200,
        )
        .await;
        assert_eq!(list["changes"][0]["number"], 1);
        assert_eq!(list["changes"][0]["status"], "pending");
        assert_eq!(list["changes"][0]["proposed_by"], STEWARD);
        let shown = json_ok(
            app.get("/v1/datasets/hospital-admissions", Some(token))
                .await,
            200,
        )
        .await;
        assert_eq!(shown["pending_changes"][0]["number"], 1);
    }
    let alice = app.alice();
    problem(
        app.get("/v1/datasets/hospital-admissions/changes", Some(&alice))
            .await,
        403,
        "steward-required",
    )
    .await;
    let shown = app
        .get("/v1/datasets/hospital-admissions", Some(&alice))
        .await
        .text()
        .await
        .unwrap();
    assert!(!shown.contains("pending"), "{shown}");
    assert!(!shown.contains(STEWARD), "{shown}");

    // Only an admin decides.
    let approve = format!("/v1/datasets/hospital-admissions/changes/{n}/approve");
    problem(post(&app, &steward, &approve).await, 403, "admin-required").await;
    problem(
        post(
            &app,
            &admin,
            "/v1/datasets/hospital-admissions/changes/99/approve",
        )
        .await,
        404,
        "not-found",
    )
    .await;
    let approved = json_ok(post(&app, &admin, &approve).await, 200).await;
    assert_eq!(approved["change"]["status"], "approved");
    assert_eq!(approved["change"]["decided_by"], ADMIN);
    assert_eq!(approved["tier"], "open");
    problem(post(&app, &admin, &approve).await, 409, "change-decided").await;

    // In force: anyone reads the NHS numbers now (what the admin approved).
    let batches = arrow_batches(
        app.data(
            "hospital-admissions",
            &[("columns", "nhs_number"), ("limit", "5")],
            None,
        )
        .await,
    )
    .await;
    let numbers = strings(&batches, "nhs_number");
    assert_eq!(numbers.len(), 5);
    assert!(
        numbers
            .iter()
            .all(|v| v.len() == 10 && v.bytes().all(|b| b.is_ascii_digit())),
        "{numbers:?}"
    );

    // The trail: the proposal and the approval, field by field.
    let audit = json_ok(
        app.get("/v1/audit?dataset=hospital-admissions", Some(&admin))
            .await,
        200,
    )
    .await;
    let records = audit["records"].as_array().unwrap();
    // The record of the event that was allowed (refusals are recorded too;
    // so are intents, before each change commits).
    let find = |event: &str| {
        records
            .iter()
            .find(|r| r["event"] == event && r["decision"] != "refused" && r["phase"] != "intent")
            .unwrap_or_else(|| panic!("no {event} record in {records:?}"))
    };
    let expected = [
        ("tier".to_owned(), json!("controlled"), json!("open"), true),
        (
            "columns.nhs_number.classification".to_owned(),
            json!("direct-identifier"),
            json!("none"),
            true,
        ),
    ];
    let proposed = find("propose-change");
    assert_eq!(proposed["proposed_by"], STEWARD);
    assert_eq!(proposed["change"], 1);
    assert_eq!(fields(&proposed["changes"]), expected);
    let decided = find("approve-change");
    assert_eq!(decided["decision"], "allow");
    assert_eq!(decided["proposed_by"], STEWARD);
    assert_eq!(decided["approved_by"], ADMIN);
    assert_eq!(decided["subject"], ADMIN);
    assert_eq!(fields(&decided["changes"]), expected);
    // The steward's refused attempt is on the trail too.
    assert!(
        records.iter().any(|r| r["event"] == "approve-change"
            && r["subject"] == STEWARD
            && r["reason"] == "admin-required"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_stale_proposal_is_not_approved_and_a_rejected_one_changes_nothing() {
    let app = spawn_app().await;
    let (steward, admin) = (steward(&app), admin(&app));
    for _ in 0..2 {
        json_ok(
            patch(
                &app,
                &steward,
                "hospital-admissions",
                json!({"tier": "open"}),
            )
            .await,
            202,
        )
        .await;
    }
    // An admin moves the tier meanwhile: change 1 no longer applies.
    let direct = json_ok(
        patch(
            &app,
            &admin,
            "hospital-admissions",
            json!({"tier": "registered"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(direct["tier"], "registered");
    assert_eq!(direct["pending_change"], Value::Null);
    let body = problem(
        post(
            &app,
            &admin,
            "/v1/datasets/hospital-admissions/changes/1/approve",
        )
        .await,
        409,
        "change-stale",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("tier"), "{body}");
    let rejected = json_ok(
        post(
            &app,
            &admin,
            "/v1/datasets/hospital-admissions/changes/2/reject",
        )
        .await,
        200,
    )
    .await;
    assert_eq!(rejected["change"]["status"], "rejected");
    assert_eq!(rejected["tier"], "registered");
    // The admin's direct edit is audited as made and approved by them.
    let audit = json_ok(
        app.get("/v1/audit?dataset=hospital-admissions", Some(&admin))
            .await,
        200,
    )
    .await;
    let edit = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "edit" && r["subject"] == ADMIN && r["phase"] != "intent")
        .unwrap()
        .clone();
    assert_eq!(edit["approved_by"], ADMIN);
    assert_eq!(
        fields(&edit["changes"]),
        [(
            "tier".to_owned(),
            json!("controlled"),
            json!("registered"),
            true
        )]
    );
}

#[tokio::test]
async fn narrowing_applies_at_once_and_a_mixed_edit_is_split() {
    let app = spawn_app().await;
    let steward = steward(&app);
    let body = json_ok(
        patch(
            &app,
            &steward,
            "hospital-admissions",
            json!({"description": "Admissions, synthetic.",
                   "columns": [{"name": "region", "classification": "quasi-identifier"},
                               {"name": "age", "mask": "bucket(1)"}]}),
        )
        .await,
        202,
    )
    .await;
    assert_eq!(body["description"], "Admissions, synthetic.");
    assert_eq!(
        fields(&body["applied_changes"])
            .into_iter()
            .map(|(f, ..)| f)
            .collect::<Vec<_>>(),
        ["description", "columns.region.classification"]
    );
    assert_eq!(
        fields(&body["pending_change"]["fields"]),
        [(
            "columns.age.mask".to_owned(),
            json!("bucket(5)"),
            json!("bucket(1)"),
            true
        )]
    );
    // Region is a quasi-identifier now: redacted for alice at once.
    let batches = arrow_batches(
        app.data(
            "hospital-admissions",
            &[("columns", "region"), ("limit", "20")],
            Some(&app.alice()),
        )
        .await,
    )
    .await;
    assert!(strings(&batches, "region").iter().all(|v| v == "NULL"));

    // Purely narrowing: 200, nothing pending.
    let body = json_ok(
        patch(
            &app,
            &steward,
            "hospital-admissions",
            json!({"columns": [{"name": "age", "mask": "bucket(10)"}]}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(body["pending_change"], Value::Null);
    let age = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "age")
        .unwrap();
    assert_eq!(age["mask"], "bucket(10)");
}

#[tokio::test]
async fn proposals_work_the_same_in_an_object_store_catalogue() {
    let app = spawn_app_with(crate::helpers::ROWS, in_object_store).await;
    let steward = app.token_in(STEWARD, &[Role::Steward], PUBLISHER);
    let r = register(
        &app,
        &steward,
        &json!({"id": "wards", "title": "Wards", "description": "", "sector": "health",
        "publisher": PUBLISHER, "license": "OGL", "tier": "open",
        "columns": [{"name": "ward", "description": "Ward"},
                    {"name": "postcode", "description": "Postcode",
                     "classification": "quasi-identifier", "mask": "prefix(2)"}]}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let r = upload(
        &app,
        &steward,
        "wards",
        "text/csv",
        "ward,postcode\nA,LS1 4AB\nB,M1 2CD\n",
    )
    .await;
    assert_eq!(r.status(), 201);
    json_ok(
        patch(
            &app,
            &steward,
            "wards",
            json!({"columns": [{"name": "postcode", "mask": "prefix(4)"}]}),
        )
        .await,
        202,
    )
    .await;
    let served = arrow_batches(app.get("/v1/datasets/wards/data", None).await).await;
    assert_eq!(strings(&served, "postcode"), ["LS", "M1"]);
    json_ok(
        post(&app, &admin(&app), "/v1/datasets/wards/changes/1/approve").await,
        200,
    )
    .await;
    let served = arrow_batches(app.get("/v1/datasets/wards/data", None).await).await;
    assert_eq!(strings(&served, "postcode"), ["LS1 ", "M1 2"]);
}

/// `sluice --config … <args>`, which must succeed: what it printed.
fn cli(server: &BinaryServer, args: &[&str]) -> String {
    succeeded(&server.run(args))
}

#[tokio::test]
async fn pending_changes_survive_a_kill_and_are_decided_from_the_command_line() {
    let mut server =
        BinaryServer::with_samples("policy_poll_ms = 60000", 200, Some("hospital-admissions"));
    server.start().await;
    let (client, base) = (server.client.clone(), server.base.clone());
    let steward = server.token(STEWARD, &[Role::Steward], &[], Some(PUBLISHER));
    let admin = server.token(ADMIN, &[Role::Admin], &[], None);
    for body in [
        json!({"tier": "open"}),
        json!({"columns": [{"name": "age", "mask": "bucket(1)"}]}),
    ] {
        let r = client
            .patch(format!("{base}/v1/datasets/hospital-admissions"))
            .bearer_auth(&steward)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    server.kill(); // SIGKILL: the answers came after the commit

    server.start().await;
    let remote = ["--server", base.as_str(), "--token", admin.as_str()];
    let mut args = vec!["datasets", "changes", "hospital-admissions"];
    args.extend(remote);
    let changes: Value = serde_json::from_str(&cli(&server, &args)).unwrap();
    let pending: Vec<_> = changes["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["number"].as_u64().unwrap(), c["status"].clone()))
        .collect();
    assert_eq!(pending, [(1, json!("pending")), (2, json!("pending"))]);
    // Still controlled until approved.
    let data = format!("{base}/v1/datasets/hospital-admissions/data?limit=1");
    assert_eq!(client.get(&data).send().await.unwrap().status(), 401);
    let mut args = vec!["datasets", "approve", "hospital-admissions", "1"];
    args.extend(remote);
    let approved: Value = serde_json::from_str(&cli(&server, &args)).unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], ADMIN);
    assert_eq!(client.get(&data).send().await.unwrap().status(), 200);
    server.kill();

    // On the folder, with no server: whoever may write it decides.
    cli(&server, &["datasets", "reject", "hospital-admissions", "2"]);
    let changes: Value = serde_json::from_str(&cli(
        &server,
        &["datasets", "changes", "hospital-admissions"],
    ))
    .unwrap();
    assert_eq!(changes["changes"][1]["status"], "rejected");
    assert!(
        changes["changes"][1]["decided_by"]
            .as_str()
            .unwrap()
            .starts_with("local:")
    );
    let manifest =
        std::fs::read_to_string(server.datasets().join("hospital-admissions/dataset.toml"))
            .unwrap();
    assert!(
        manifest.contains("bucket(5)"),
        "the rejected mask did not apply"
    );
}
