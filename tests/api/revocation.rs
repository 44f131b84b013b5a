//! Issue 21, part 2: a steward's catalogue edit can never block a
//! revocation. `patient_id` becomes a direct identifier while the grant
//! `los-study-2026` still lists it; the admin then revokes
//! `north-capacity-planning`. The revocation takes effect on the poll, on
//! SIGHUP and across a restart of the real binary; the server starts;
//! `/readyz` reports the stale column; alice keeps reading, without it.

use std::time::Duration;

use serde_json::{Value, json};
use sluice::auth::Role;
use sluice::auth::dev::DevKey;

use crate::helpers::{
    BinaryServer, ROWS, arrow_batches, column_names, problem, rows, spawn_app_with, strings,
    token_request,
};

const ID: &str = "hospital-admissions";
const PUBLISHER: &str = "Example Health Data Service";

const LOS: &str = r#"
[[grant]]
id = "los-study-2026"
subjects = ["alice@uni.example"]
dataset = "hospital-admissions"
purpose = "Length-of-stay study"
columns = ["patient_id", "age_band", "region", "length_of_stay"]
expires = 2099-12-31
"#;

const NORTH: &str = r#"
[[grant]]
id = "north-capacity-planning"
groups = ["nhs-north-analysts"]
dataset = "hospital-admissions"
purpose = "Bed capacity planning for the northern region"
row_filter = "region = 'north'"
expires = 2099-12-31
"#;

/// Tokens minted with the server's development key.
struct Tokens(DevKey);

impl Tokens {
    fn mint(&self, sub: &str, roles: &[Role], groups: &[&str], org: Option<&str>) -> String {
        self.0
            .mint(&token_request(sub, roles, groups, org))
            .unwrap()
    }
    fn analyst(&self) -> String {
        self.mint(
            "ann@nhs-north.example",
            &[Role::Researcher],
            &["nhs-north-analysts"],
            None,
        )
    }
    fn alice(&self) -> String {
        self.mint("alice@uni.example", &[Role::Researcher], &[], None)
    }
    fn steward(&self) -> String {
        self.mint("sam@hds.example", &[Role::Steward], &[], Some(PUBLISHER))
    }
    fn admin(&self) -> String {
        self.mint("root@hds.example", &[Role::Admin], &[], None)
    }
}

async fn get(client: &reqwest::Client, url: String, token: &str) -> reqwest::Response {
    client.get(url).bearer_auth(token).send().await.unwrap()
}

/// The steward's edit: `patient_id` becomes a direct identifier.
async fn steward_hides_patient_id(client: &reqwest::Client, base: &str, tokens: &Tokens) {
    let response = client
        .patch(format!("{base}/v1/datasets/{ID}"))
        .bearer_auth(tokens.steward())
        .json(&json!({"columns": [{"name": "patient_id", "classification": "direct-identifier"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

/// Waits until the analyst's data request answers `status`.
async fn analyst_gets(client: &reqwest::Client, base: &str, tokens: &Tokens, status: u16) {
    for _ in 0..60 {
        let r = get(
            client,
            format!("{base}/v1/datasets/{ID}/data?limit=5"),
            &tokens.analyst(),
        )
        .await;
        if r.status().as_u16() == status {
            if status == 403 {
                problem(r, 403, "grant-required").await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the analyst never got {status}");
}

/// Alice's grant still serves rows, and no longer `patient_id`.
async fn alice_reads_without_patient_id(client: &reqwest::Client, base: &str, tokens: &Tokens) {
    let batches = arrow_batches(
        get(
            client,
            format!("{base}/v1/datasets/{ID}/data"),
            &tokens.alice(),
        )
        .await,
    )
    .await;
    assert!(rows(&batches) > 0);
    assert_eq!(
        column_names(&batches),
        ["age_band", "region", "length_of_stay"]
    );
    let asked = get(
        client,
        format!("{base}/v1/datasets/{ID}/data?columns=patient_id"),
        &tokens.alice(),
    )
    .await;
    problem(asked, 400, "unknown-column").await;
}

/// `/readyz` counts the warning for everyone and names it for admins.
async fn readyz_warns(client: &reqwest::Client, base: &str, tokens: &Tokens) {
    let public: Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(public["status"], "ready");
    assert_eq!(public["policy_warnings"], 1, "{public}");
    assert!(public.get("policy_warning_details").is_none(), "{public}");
    let admin: Value = get(client, format!("{base}/readyz"), &tokens.admin())
        .await
        .json()
        .await
        .unwrap();
    let details = admin["policy_warning_details"].to_string();
    assert!(
        details.contains("los-study-2026")
            && details.contains("patient_id")
            && details.contains("direct identifier"),
        "{admin}"
    );
}

#[tokio::test]
async fn a_steward_edit_does_not_block_a_revocation_by_poll() {
    let app = spawn_app_with(ROWS, |s| s.server.policy_poll_ms = 100).await;
    let policy = app.settings.storage.policy.clone();
    crate::helpers::write_policy(&policy, format!("{LOS}{NORTH}"));
    let tokens = Tokens(DevKey::load_or_create(&app.state_dir()).unwrap());
    let (client, base) = (&app.client, app.base.as_str());
    analyst_gets(client, base, &tokens, 200).await;
    // Before the edit alice sees patient_id, as a pseudonym.
    let before = arrow_batches(
        get(
            client,
            app.url(&format!(
                "/v1/datasets/{ID}/data?columns=patient_id&limit=3"
            )),
            &tokens.alice(),
        )
        .await,
    )
    .await;
    assert_eq!(strings(&before, "patient_id")[0].len(), 32);

    steward_hides_patient_id(client, base, &tokens).await;
    crate::helpers::write_policy(&policy, LOS);
    analyst_gets(client, base, &tokens, 403).await;
    alice_reads_without_patient_id(client, base, &tokens).await;
    readyz_warns(client, base, &tokens).await;
}

#[tokio::test]
async fn a_steward_edit_does_not_block_a_revocation_by_sighup_or_restart() {
    // Polling is slow here: only SIGHUP reloads within the test.
    let mut server = BinaryServer::with_samples("policy_poll_ms = 600000", ROWS, None);
    let policy = server.policy();
    crate::helpers::write_policy(&policy, format!("{LOS}{NORTH}"));
    let (client, base) = (server.client.clone(), server.base.clone());
    let tokens = Tokens(DevKey::load_or_create(&server.state()).unwrap());

    server.start().await;
    analyst_gets(&client, &base, &tokens, 200).await;
    steward_hides_patient_id(&client, &base, &tokens).await;
    crate::helpers::write_policy(&policy, LOS);
    server.signal("HUP");
    analyst_gets(&client, &base, &tokens, 403).await;
    server.kill();

    // The restart starts (the edit is on disk), and the revocation holds.
    server.start().await;
    analyst_gets(&client, &base, &tokens, 403).await;
    alice_reads_without_patient_id(&client, &base, &tokens).await;
    readyz_warns(&client, &base, &tokens).await;
    server.kill();

    // `sluice policy check` warns and succeeds.
    let check = server.run(&["policy", "check"]);
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning")
            && stderr.contains("los-study-2026")
            && stderr.contains("patient_id"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_grant_whose_row_filter_no_longer_resolves_serves_nothing() {
    let app = spawn_app_with(ROWS, |s| s.server.policy_poll_ms = 100).await;
    let tokens = Tokens(DevKey::load_or_create(&app.state_dir()).unwrap());
    // `county` is not a column (as after a column is dropped): the file
    // still loads, and the grant fails closed instead of serving every row.
    crate::helpers::write_policy(
        &app.settings.storage.policy,
        format!(
            "{LOS}{}",
            NORTH.replace("region = 'north'", "county = 'north'")
        ),
    );
    let mut suspended = false;
    for _ in 0..60 {
        let r = get(
            &app.client,
            app.url(&format!("/v1/datasets/{ID}/data?limit=5")),
            &tokens.analyst(),
        )
        .await;
        // Before the reload: no grant (403 grant-required); never rows.
        assert_eq!(r.status(), 403);
        let body: Value = r.json().await.unwrap();
        if body["type"] == "grant-suspended" {
            assert_eq!(body["grant"], "north-capacity-planning", "{body}");
            suspended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        suspended,
        "the policy with the broken row filter was not loaded"
    );
    let meta: Value = get(
        &app.client,
        app.url(&format!("/v1/datasets/{ID}")),
        &tokens.analyst(),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(meta["access"]["allowed"], false);
    assert_eq!(meta["access"]["reason"], "grant-suspended");
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["policy_warnings"], 1, "{ready}");
    // Alice's grant is untouched.
    assert_eq!(
        get(
            &app.client,
            app.url(&format!("/v1/datasets/{ID}/data?limit=5")),
            &tokens.alice()
        )
        .await
        .status(),
        200
    );
}
