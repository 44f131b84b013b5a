//! Issue 32, in part: an approval grants what was asked and no more; only
//! researchers ask; request ids never replace each other; files Sluice
//! creates are its own; personal answers are not cached.

use sluice::auth::Role;

use crate::helpers::{BinaryServer, ROWS, TEST_POLICY, spawn_app, succeeded, write_policy};

fn request(server: &BinaryServer, subject: &str, organisation: Option<&str>) -> String {
    let store = sluice::access_request::RequestStore::open(&server.state()).unwrap();
    store
        .create(sluice::access_request::NewRequest {
            dataset: sluice::domain::DatasetId::parse("hospital-admissions").unwrap(),
            subject: subject.into(),
            organisation: organisation.map(str::to_owned),
            project_title: "Two columns".into(),
            purpose: "A study of stays".into(),
            columns: vec!["region".into(), "length_of_stay".into()],
            duration_days: 30,
        })
        .unwrap()
        .id
}

fn grant(server: &BinaryServer, id: &str) -> sluice::policy::Grant {
    let text = std::fs::read_to_string(server.policy()).unwrap();
    sluice::policy::Policy::parse(&text, "p")
        .unwrap()
        .grants
        .into_iter()
        .find(|g| g.id == id)
        .expect("the approval's grant")
}

/// Finding 3: a north-only analyst asking for two columns gets two
/// columns of the north; an aggregate-only organisation gets aggregates;
/// the admin can say otherwise, and sees what was asked before deciding.
#[tokio::test]
async fn an_approval_carries_the_requesters_limits_and_the_admin_can_change_them() {
    let server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    let policy = format!(
        "{TEST_POLICY}\n[[grant]]\nid = \"nora-north\"\nsubjects = [\"nora@nhs.example\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\nrow_filter = \"region = 'north'\"\nmax_rows = 400\n"
    );
    write_policy(server.policy(), &policy);

    let nora = request(&server, "nora@nhs.example", None);
    let listed = succeeded(&server.run(&["access", "list"]));
    for shown in [
        "nora@nhs.example",
        "region, length_of_stay",
        "A study of stays",
        "Two columns",
    ] {
        assert!(listed.contains(shown), "{shown} not in {listed}");
    }
    let out = succeeded(&server.run(&["access", "approve", &nora]));
    assert!(out.contains("rows where region = 'north'"), "{out}");
    let given = grant(&server, &nora);
    assert_eq!(given.row_filter.as_deref(), Some("region = 'north'"));
    assert_eq!(given.max_rows, Some(400));
    assert_eq!(given.columns.unwrap().len(), 2);

    let agency = request(
        &server,
        "stats@agency.example",
        Some("Example Public Health Agency"),
    );
    succeeded(&server.run(&["access", "approve", &agency]));
    assert_eq!(
        grant(&server, &agency).mode,
        sluice::domain::Mode::Aggregate
    );

    // A DP-only organisation: the admin must say what to give.
    let dp = request(&server, "dana@network.example", Some("DP Research Network"));
    let refused = server.run(&["access", "approve", &dp]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--mode"));
    succeeded(&server.run(&[
        "access",
        "approve",
        &dp,
        "--mode",
        "aggregate",
        "--row-filter",
        "region = 'south'",
        "--expires",
        "2027-01-31",
    ]));
    let given = grant(&server, &dp);
    assert_eq!(given.mode, sluice::domain::Mode::Aggregate);
    assert_eq!(given.row_filter.as_deref(), Some("region = 'south'"));
    assert_eq!(given.expires.unwrap().to_string(), "2027-01-31");
}

/// Findings 3 and 4: only researchers file requests; ids never replace
/// each other; the files Sluice creates are owner-only; answers to
/// credentialed requests say `private, no-store`.
#[tokio::test]
async fn only_researchers_ask_ids_are_new_files_are_private_and_personal_answers_uncached() {
    let app = spawn_app().await;
    let ask = |token: String| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/datasets/hospital-admissions/access-requests"))
                .bearer_auth(token)
                .json(&serde_json::json!({
                    "project_title": "t", "purpose": "p", "columns": ["region"], "duration_days": 30
                }))
                .send()
                .await
                .unwrap()
        }
    };
    let steward = app.token("sam@observatory.example", &[Role::Steward], &[]);
    crate::helpers::problem(ask(steward).await, 403, "role-required").await;
    assert_eq!(ask(app.researcher()).await.status(), 201);

    let me = app.get("/v1/me", Some(&app.researcher())).await;
    assert_eq!(me.headers()["cache-control"], "private, no-store");
    let listed = app.get("/v1/datasets", Some(&app.researcher())).await;
    assert_eq!(listed.headers()["cache-control"], "private, no-store");

    // Many requests on one day: every id is a file of its own.
    let store = sluice::access_request::RequestStore::open(&app.state_dir()).unwrap();
    let mut ids = std::collections::HashSet::new();
    for n in 0..20 {
        let request = store
            .create(sluice::access_request::NewRequest {
                dataset: sluice::domain::DatasetId::parse("hospital-admissions").unwrap(),
                subject: format!("r{}@uni.example", n % 3),
                organisation: None,
                project_title: "t".into(),
                purpose: "p".into(),
                columns: vec!["region".into()],
                duration_days: 30,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ids.insert(request.id));
    }

    // The binary creates what it writes owner-only.
    use std::os::unix::fs::PermissionsExt;
    let mut server = BinaryServer::with_samples("", ROWS, None);
    server.start().await;
    assert_eq!(
        server
            .get("/v1/datasets/vaccination-coverage/data?limit=1", None)
            .await
            .status(),
        200
    );
    server.kill();
    let audit = server.state().join("audit");
    for file in sluice::audit::audit_files(&audit).unwrap() {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
}

/// Finding 6: text that would not show as itself is refused at the door:
/// a newline in a token's subject, a right-to-left override in an access
/// request's organisation, a zero-width space in a manifest's publisher.
#[tokio::test]
async fn control_and_invisible_characters_are_refused_at_the_door() {
    let app = spawn_app().await;
    let forged = app.token("eve@uni.example\n[[grant]]", &[Role::Researcher], &[]);
    crate::helpers::problem(app.get("/v1/me", Some(&forged)).await, 401, "invalid-token").await;

    let asked = app
        .client
        .post(app.url("/v1/datasets/hospital-admissions/access-requests"))
        .bearer_auth(app.researcher())
        .json(&serde_json::json!({
            "project_title": "t", "purpose": "p", "columns": ["region"], "duration_days": 30,
            "organisation": "Agency \u{202E}evil"
        }))
        .send()
        .await
        .unwrap();
    let body = crate::helpers::problem(asked, 400, "invalid-parameter").await;
    assert!(
        body["detail"].as_str().unwrap().contains("U+202E"),
        "{body}"
    );

    let steward = crate::helpers::observatory_steward(&app);
    let manifest = serde_json::json!({
        "id": "hidden-publisher", "title": "t", "description": "d", "sector": "health",
        "publisher": format!("{}\u{200B}", crate::helpers::OBSERVATORY),
        "license": "CC0-1.0", "tier": "open",
    });
    let registered = crate::helpers::register(&app, &steward, &manifest).await;
    assert!(
        registered.status().is_client_error(),
        "{}",
        registered.status()
    );
}

/// The Delta Sharing endpoint `app` writes for a request that claims to
/// come through a proxy for evil.example.
async fn endpoint(app: &crate::helpers::TestApp) -> String {
    let profile: serde_json::Value = app
        .client
        .get(app.url("/v1/me/delta-sharing-profile"))
        .bearer_auth(app.researcher())
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "https")
        .header("Forwarded", "host=evil.example;proto=https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    profile["endpoint"].as_str().unwrap().to_owned()
}

/// Finding 5: forwarding headers are believed only from a configured
/// proxy; from anyone else, links use the connection's own host.
#[tokio::test]
async fn forwarded_hosts_count_only_from_trusted_proxies() {
    let app = spawn_app().await;
    let ours = endpoint(&app).await;
    assert!(!ours.contains("evil"), "{ours}");
    assert!(ours.starts_with(&app.base), "{ours}");

    let proxied = crate::helpers::spawn_app_with(ROWS, |s| {
        s.server.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let forwarded = endpoint(&proxied).await;
    assert!(
        forwarded.starts_with("https://evil.example/"),
        "{forwarded}"
    );
}

/// Finding 5: a pre-sign-in cookie the client chose (a planted one) is not
/// taken as the binding of the forms' CSRF tokens: the server issues its own.
#[tokio::test]
async fn a_planted_pre_sign_in_cookie_is_replaced_by_one_the_server_issued() {
    let app = spawn_app().await;
    let planted = "p".repeat(48);
    let page = app
        .client
        .get(app.url("/auth/sign-in"))
        .header("Cookie", format!("__Host-sluice-pre={planted}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let set: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let pre = set
        .iter()
        .find(|c| c.starts_with("__Host-sluice-pre="))
        .unwrap_or_else(|| panic!("no new binding in {set:?}"));
    assert!(!pre.contains(&planted), "{pre}");
}
