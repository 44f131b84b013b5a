//! The pages for people, sessions and their forms' CSRF defence, and
//! access requests from the API to `sluice access approve|reject`.
//! (The browser test in tests/browser drives the same pages in Chromium
//! against a real OpenID provider.)

use std::time::Duration;

use reqwest::header::{ACCEPT, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use reqwest::redirect::Policy;
use sluice::auth::Role;

use crate::helpers::{BinaryServer, TestApp, problem, spawn_app, spawn_app_with, succeeded};

const SESSION: &str = "__Host-sluice-session";
const PRE: &str = "__Host-sluice-pre";

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// A page as a browser asks for it, with these cookies.
pub(crate) async fn page(app: &TestApp, path: &str, cookies: &str) -> reqwest::Response {
    browser()
        .get(app.url(path))
        .header(ACCEPT, "text/html,application/xhtml+xml")
        .header(COOKIE, cookies)
        .send()
        .await
        .unwrap()
}

/// `name=value` of a cookie the answer sets, and its whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| (v.split(';').next().unwrap().to_owned(), v.to_owned()))
}

/// The CSRF token in a page's forms.
fn csrf_in(html: &str) -> String {
    let start = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// Posts a form as a browser on this site would.
async fn post_form(
    app: &TestApp,
    path: &str,
    cookies: &str,
    origin: Option<&str>,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = browser()
        .post(app.url(path))
        .header(COOKIE, cookies)
        .form(form);
    if let Some(origin) = origin {
        request = request.header(ORIGIN, origin);
    }
    request.send().await.unwrap()
}

/// Signs in as a dev identity; returns the session cookie (`name=value`).
pub(crate) async fn dev_sign_in(app: &TestApp, identity: &str, cookies: &str) -> String {
    let sign_in = page(app, "/auth/sign-in", cookies).await;
    let pre = set_cookie(&sign_in, PRE).map(|c| c.0);
    let cookies = match pre {
        Some(pre) if cookies.is_empty() => pre,
        Some(pre) => format!("{cookies}; {pre}"),
        None => cookies.to_owned(),
    };
    let csrf = csrf_in(&sign_in.text().await.unwrap());
    let answer = post_form(
        app,
        "/auth/dev",
        &cookies,
        Some(&app.base),
        &[
            ("csrf", &csrf),
            ("identity", identity),
            ("next", "/datasets"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()[LOCATION], "/datasets");
    set_cookie(&answer, SESSION).expect("a session cookie").0
}

#[tokio::test]
async fn pages_answer_browsers_with_html_and_programs_with_json() {
    let app = spawn_app().await;
    let home = page(&app, "/", "").await;
    assert_eq!(home.status(), 200);
    assert_eq!(home.headers()["content-type"], "text/html; charset=utf-8");
    let csp = home.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(home.headers()["cache-control"], "no-store");
    let html = home.text().await.unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html><html lang=\"en\">"),
        "{html}"
    );
    assert_eq!(html.matches("<h1").count(), 1);
    assert!(
        html.contains("href=\"/datasets?sector=health\""),
        "sectors link to search"
    );

    // The same addresses answer JSON to programs.
    let json = app.get_json("/datasets/hospital-admissions", None).await;
    let v1 = app.get_json("/v1/datasets/hospital-admissions", None).await;
    assert_eq!(json, v1);
    let list = app.get_json("/datasets?q=vaccine", None).await;
    assert_eq!(list["datasets"][0]["id"], "vaccination-coverage");

    // Search results and facets, the same semantics as the API.
    let results = page(&app, "/datasets?q=vaccine&tier=open", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        results.contains("href=\"/datasets/vaccination-coverage\""),
        "{results}"
    );
    assert!(!results.contains("href=\"/datasets/hospital-admissions\""));
    // Paging keeps the page size and the search.
    let first = page(&app, "/datasets?q=school&page_size=1", "")
        .await
        .text()
        .await
        .unwrap();
    let next = &first[first
        .find("href=\"/datasets?q=school&amp;page_size=1&amp;page_token=")
        .expect("a next link")..];
    let next = next[6..next.find("\" rel=\"next\"").unwrap()].replace("&amp;", "&");
    let second = page(&app, &next, "").await.text().await.unwrap();
    let shown = |html: &str| html.matches("<h3><a href=\"/datasets/").count();
    assert_eq!((shown(&first), shown(&second)), (1, 1));
    assert_ne!(
        first[first.find("<h3><a href=").unwrap()..][..60].to_owned(),
        second[second.find("<h3><a href=").unwrap()..][..60].to_owned()
    );
    let bad = page(&app, "/datasets?tier=secret", "").await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("<h1>That did not work</h1>")
    );
    let missing = page(&app, "/datasets/no-such-thing", "").await;
    assert_eq!(missing.status(), 404);

    // A controlled dataset shows no rows to an anonymous visitor; an open one
    // shows its first 20 rows, and the preview is audited like any read.
    let controlled = page(&app, "/datasets/hospital-admissions", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(controlled.contains("You may not read this dataset"));
    assert!(!controlled.contains("id=\"preview\""));
    let open = page(&app, "/datasets/vaccination-coverage", "")
        .await
        .text()
        .await
        .unwrap();
    let preview = &open[open.find("id=\"preview\"").unwrap()..];
    let body = &preview[preview.find("<tbody>").unwrap()..preview.find("</tbody>").unwrap()];
    assert_eq!(body.matches("<tr>").count(), 20);
    // The outcome record is written when the engine's side of the stream
    // ends, which may be just after the page has its last row.
    let mut records = Vec::new();
    for _ in 0..50 {
        records = crate::helpers::audit_records(&app, "vaccination-coverage").await;
        if records
            .iter()
            .any(|r| r["event"] == "data" && r["rows"] == 20)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "data" && r["rows"] == 20),
        "{records:?}"
    );
}

#[tokio::test]
async fn dev_sign_in_needs_the_forms_token_from_this_site_and_makes_a_new_session_each_time() {
    let app = spawn_app().await;
    let sign_in = page(&app, "/auth/sign-in", "").await;
    let (pre, pre_header) = set_cookie(&sign_in, PRE).expect("a pre-session cookie");
    for flag in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(pre_header.contains(flag), "{pre_header}");
    }
    let csrf = csrf_in(&sign_in.text().await.unwrap());
    let alice = [("identity", "alice@uni.example"), ("next", "/")];
    let with = |token: &'static str| {
        let mut form = vec![("csrf", token)];
        form.extend(alice);
        form
    };

    // No token, a wrong token, the right token without its cookie, or from another origin: 403.
    for (cookies, form, origin) in [
        (pre.clone(), alice.to_vec(), Some(app.base.clone())),
        (pre.clone(), with("forged"), Some(app.base.clone())),
        (
            String::new(),
            vec![("csrf", csrf.as_str()), alice[0], alice[1]],
            Some(app.base.clone()),
        ),
        (
            pre.clone(),
            vec![("csrf", csrf.as_str()), alice[0], alice[1]],
            Some("https://evil.example".to_owned()),
        ),
    ] {
        let answer = post_form(&app, "/auth/dev", &cookies, origin.as_deref(), &form).await;
        assert_eq!(answer.status(), 403);
        assert!(set_cookie(&answer, SESSION).is_none());
        assert!(
            answer
                .text()
                .await
                .unwrap()
                .contains("did not come from this site")
        );
    }
    // An unknown identity is refused; the right token, cookie and origin sign in.
    let unknown = post_form(
        &app,
        "/auth/dev",
        &pre,
        None,
        &[("csrf", &csrf), ("identity", "mallory@evil.example")],
    )
    .await;
    assert_eq!(unknown.status(), 400);
    let answer = post_form(
        &app,
        "/auth/dev",
        &pre,
        Some(&app.base),
        &[
            ("csrf", &csrf),
            ("identity", "alice@uni.example"),
            ("next", "//evil.example/"),
        ],
    )
    .await;
    assert_eq!(answer.status(), 303);
    assert_eq!(answer.headers()[LOCATION], "/", "no open redirect");
    let (session, header) = set_cookie(&answer, SESSION).unwrap();
    for flag in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(header.contains(flag), "{header}");
    }
    let home = page(&app, "/", &session).await.text().await.unwrap();
    assert!(home.contains("Signed in as <strong>alice@uni.example</strong>"));

    // Signing in again makes a new session; the old id is dead.
    let again = dev_sign_in(&app, "carol@uni.example", &session).await;
    assert_ne!(again, session);
    let old = page(&app, "/", &session).await.text().await.unwrap();
    assert!(!old.contains("Signed in as"));
    let new = page(&app, "/", &again).await.text().await.unwrap();
    assert!(new.contains("Signed in as <strong>carol@uni.example</strong>"));

    // Sign-out needs the session's token (the pre-session one does not do),
    // and ends the session on the server.
    let refused = post_form(
        &app,
        "/auth/sign-out",
        &again,
        Some(&app.base),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(refused.status(), 403);
    assert!(
        page(&app, "/", &again)
            .await
            .text()
            .await
            .unwrap()
            .contains("Signed in as")
    );
    let token = csrf_in(&new);
    let out = post_form(
        &app,
        "/auth/sign-out",
        &again,
        Some(&app.base),
        &[("csrf", &token)],
    )
    .await;
    assert_eq!(out.status(), 303);
    assert!(set_cookie(&out, SESSION).unwrap().1.contains("Max-Age=0"));
    assert!(
        !page(&app, "/", &again)
            .await
            .text()
            .await
            .unwrap()
            .contains("Signed in as")
    );

    // Sign-ins and sign-outs are in the audit trail (written in the
    // writer's next group, without waiting).
    let mut events: Vec<String> = Vec::new();
    for _ in 0..50 {
        let trail = app.get_json("/v1/audit", Some(&app.admin())).await;
        events = trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["event"].as_str().map(str::to_owned))
            .collect();
        if events.iter().any(|e| e == "sign-out") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        events.iter().filter(|e| **e == "sign-in").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| **e == "sign-out").count(),
        1,
        "{events:?}"
    );
}

#[tokio::test]
async fn a_session_ends_when_idle_and_never_authorises_the_api() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| s.auth.session_idle_secs = 1).await;
    let session = dev_sign_in(&app, "alice@uni.example", "").await;
    // Alice holds a grant; her page shows it...
    let html = page(&app, "/datasets/hospital-admissions", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("You may read this dataset"), "{html}");
    // ...but the cookie is not an API credential: the API wants a token.
    let api = browser()
        .get(app.url("/v1/datasets/hospital-admissions/data?format=csv"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    problem(api, 401, "token-required").await;
    let me = browser()
        .get(app.url("/v1/me"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    // Idle past its limit, the session is gone.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let later = page(&app, "/datasets/hospital-admissions", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(later.contains("You are not signed in"));
    // Pages for stewards and admins send the signed-out to sign in, and refuse other roles.
    let steward = page(&app, "/steward", "").await;
    assert_eq!(steward.status(), 303);
    assert_eq!(steward.headers()[LOCATION], "/auth/sign-in?next=%2Fsteward");
    let carol = dev_sign_in(&app, "carol@uni.example", "").await;
    assert_eq!(page(&app, "/admin", &carol).await.status(), 403);
    let ada = dev_sign_in(&app, "ada@sluice.example", "").await;
    assert_eq!(page(&app, "/admin", &ada).await.status(), 200);
}

#[tokio::test]
async fn access_requests_are_checked_kept_audited_and_listed_for_their_owner_and_admins() {
    let app = spawn_app().await;
    let carol = app.token("carol@uni.example", &[Role::Researcher], &[]);
    let dave = app.token("dave@uni.example", &[Role::Researcher], &[]);
    let url = app.url("/v1/datasets/hospital-admissions/access-requests");
    let send = |token: Option<String>, body: serde_json::Value| {
        let mut request = app.client.post(url.clone()).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let good = serde_json::json!({
        "project_title": "Stays",
        "purpose": "Length of stay by region",
        "columns": ["region", "length_of_stay"],
        "duration_days": 90,
    });
    problem(
        send(None, good.clone()).await.unwrap(),
        401,
        "token-required",
    )
    .await;
    for (field, value) in [
        ("columns", serde_json::json!(["nhs_number"])),
        ("columns", serde_json::json!(["no_such_column"])),
        ("columns", serde_json::json!([])),
        ("duration_days", serde_json::json!(0)),
        ("project_title", serde_json::json!("  ")),
    ] {
        let mut body = good.clone();
        body[field] = value;
        problem(
            send(Some(carol.clone()), body).await.unwrap(),
            400,
            "invalid-parameter",
        )
        .await;
    }
    // Someone who may already read every row and column has nothing to ask
    // for; someone with less (alice: some columns, a row cap) may ask.
    let open = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/access-requests"))
        .bearer_auth(&carol)
        .json(&serde_json::json!({"project_title": "t", "purpose": "p", "columns": ["region"], "duration_days": 30}))
        .send()
        .await
        .unwrap();
    problem(open, 409, "access-held").await;
    let alice = send(Some(app.alice()), good.clone()).await.unwrap();
    assert_eq!(alice.status(), 201, "{}", alice.text().await.unwrap());
    let created = send(Some(carol.clone()), good.clone()).await.unwrap();
    assert_eq!(created.status(), 201);
    let created: serde_json::Value = created.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["subject"], "carol@uni.example");

    let mine = app.get_json("/v1/access-requests", Some(&carol)).await;
    assert_eq!(mine["requests"].as_array().unwrap().len(), 1);
    let others = app.get_json("/v1/access-requests", Some(&dave)).await;
    assert_eq!(
        others["requests"].as_array().unwrap().len(),
        0,
        "not someone else's"
    );
    let all = app
        .get_json("/v1/access-requests?status=pending", Some(&app.admin()))
        .await;
    assert_eq!(all["requests"][0]["id"], created["id"]);
    let bad = app
        .get("/v1/access-requests?status=maybe", Some(&app.admin()))
        .await;
    problem(bad, 400, "invalid-parameter").await;

    let records = crate::helpers::audit_records(&app, "hospital-admissions").await;
    let record = records
        .iter()
        .find(|r| r["event"] == "access-request" && r["grant"] == created["id"])
        .expect("audited");
    assert_eq!(record["decision"], "pending");

    // At most 20 waiting per researcher.
    for _ in 1..sluice::access_request::MAX_PENDING_PER_SUBJECT {
        assert_eq!(
            send(Some(carol.clone()), good.clone())
                .await
                .unwrap()
                .status(),
            201
        );
    }
    let over = send(Some(carol.clone()), good.clone()).await.unwrap();
    problem(over, 429, "too-many-access-requests").await;
}

#[tokio::test]
async fn an_approval_writes_a_checked_grant_that_the_server_applies_and_a_rejection_says_why() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 100", 300, None);
    server.start().await;
    let carol = server.token("carol@uni.example", &[Role::Researcher], &[], None);
    let ask = |columns: serde_json::Value| {
        server
            .client
            .post(server.url("/v1/datasets/hospital-admissions/access-requests"))
            .bearer_auth(&carol)
            .json(&serde_json::json!({
                "project_title": "Stays \"quoted\"\n[[grant]]",
                "purpose": "Length of stay by region",
                "columns": columns,
                "duration_days": 30,
            }))
            .send()
    };
    let first: serde_json::Value = ask(serde_json::json!(["region", "length_of_stay"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: serde_json::Value = ask(serde_json::json!(["sex"]))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (first_id, second_id) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    let data = "/v1/datasets/hospital-admissions/data?format=csv&limit=5";
    assert_eq!(server.get(data, Some(&carol)).await.status(), 403);

    // A policy file that does not load is never replaced.
    let policy = std::fs::read_to_string(server.policy()).unwrap();
    std::fs::write(server.policy(), format!("{policy}\n[[grant]]\nid = 3\n")).unwrap();
    let refused = server.run(&["access", "approve", first_id]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing was changed"));
    assert!(
        std::fs::read_to_string(server.policy())
            .unwrap()
            .ends_with("id = 3\n")
    );
    std::fs::write(server.policy(), &policy).unwrap();

    let out = succeeded(&server.run(&["access", "approve", first_id, "--by", "ada"]));
    assert!(out.contains(&format!("approved {first_id}")), "{out}");
    let written = std::fs::read_to_string(server.policy()).unwrap();
    assert!(
        written.contains(&format!(
            "# Access request {first_id}: asked by carol@uni.example"
        )),
        "{written}"
    );
    let parsed: toml::Table = toml::from_str(&written).unwrap();
    let grants = parsed["grant"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "the title cannot add a grant: {written}");
    assert_eq!(grants[0]["columns"].as_array().unwrap().len(), 2);
    succeeded(&server.run(&["policy", "check"]));
    // Deciding twice is refused.
    let twice = server.run(&["access", "approve", first_id]);
    assert!(String::from_utf8_lossy(&twice.stderr).contains("already approved"));

    // The server's reload applies it: exactly the columns asked for.
    let mut csv = String::new();
    for _ in 0..50 {
        let answer = server.get(data, Some(&carol)).await;
        if answer.status() == 200 {
            csv = answer.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(csv.lines().next(), Some("region,length_of_stay"), "{csv}");

    let reason_missing = server.run(&["access", "reject", second_id, "--reason", " "]);
    assert!(!reason_missing.status.success());
    succeeded(&server.run(&[
        "access",
        "reject",
        second_id,
        "--reason",
        "sex is not needed for this purpose",
        "--by",
        "ada",
    ]));
    let listed = server.get_json("/v1/access-requests", Some(&carol)).await;
    let second = listed["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == second_id)
        .unwrap()
        .clone();
    assert_eq!(second["status"], "rejected");
    assert_eq!(second["reason"], "sex is not needed for this purpose");
    let pending = succeeded(&server.run(&["access", "list", "--status", "pending"]));
    assert!(pending.trim().is_empty(), "{pending}");

    // The server records both decisions in its audit trail.
    let admin = server.token("ada@sluice.example", &[Role::Admin], &[], None);
    let mut decisions = Vec::new();
    for _ in 0..50 {
        let trail = server
            .get_json("/v1/audit?dataset=hospital-admissions", Some(&admin))
            .await;
        decisions = trail["records"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["event"] == "access-request" && r["decision"] != "pending")
            .map(|r| {
                // Who decided: `approved_by` for an approval, `rejected_by`
                // for a rejection.
                let who = if r["decision"] == "allow" {
                    "approved_by"
                } else {
                    "rejected_by"
                };
                (r["grant"].clone(), r["decision"].clone(), r[who].clone())
            })
            .collect();
        if decisions.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        decisions,
        vec![
            (first_id.into(), "allow".into(), "ada".into()),
            (second_id.into(), "deny".into(), "ada".into()),
        ],
        "{decisions:?}"
    );
}

#[tokio::test]
async fn a_form_body_that_trickles_is_cut_at_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(crate::helpers::ROWS, |s| s.limits.body_timeout_secs = 1).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /auth/dev HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\ncsrf="
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers before the body ends")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    // ...and the connection closes: the rest of the body is never read.
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // A form too large is refused as a page, not cut text.
    let big = "x".repeat(70_000);
    let answer = post_form(&app, "/auth/dev", "", None, &[("csrf", &big)]).await;
    assert_eq!(answer.status(), 413);
    assert_eq!(answer.headers()["content-type"], "text/html; charset=utf-8");
}

/// One way to ask for access: the form, with the publisher's own words
/// about requests inside it; a visitor who is not signed in is told to
/// sign in, not pointed at a form that is not there.
#[tokio::test]
async fn a_dataset_page_offers_one_way_to_ask() {
    let app = spawn_app().await;
    let anonymous = page(&app, "/datasets/hospital-admissions", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(anonymous.contains("to see your own access or to ask for it"));
    assert!(!anonymous.contains("ask for one below"));
    assert!(
        !anonymous.contains("dac@health-data.example"),
        "{anonymous}"
    );

    let session = dev_sign_in(&app, "carol@uni.example", "").await;
    let signed_in = page(&app, "/datasets/hospital-admissions", &session)
        .await
        .text()
        .await
        .unwrap();
    let form = &signed_in[signed_in.find("Ask for access").expect("the form")..];
    assert!(
        form.contains("What the publisher asks of requests: apply to the Data Access Committee"),
        "{form}"
    );
    assert_eq!(signed_in.matches("dac@health-data.example").count(), 1);
}

/// Issue 34: a signed-in researcher makes a personal token on a page, sees
/// it once, uses it from a program, and revokes it there.
#[tokio::test]
async fn personal_tokens_are_made_and_revoked_on_a_page() {
    let app = spawn_app().await;
    assert_ne!(page(&app, "/me/tokens", "").await.status(), 200);
    let session = dev_sign_in(&app, "alice@uni.example", "").await;
    let tokens_page = page(&app, "/me/tokens", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(tokens_page.contains("Make a token"), "{tokens_page}");
    let csrf = csrf_in(&tokens_page);
    let made = post_form(
        &app,
        "/me/tokens",
        &session,
        Some(&app.base),
        &[
            ("csrf", &csrf),
            ("name", "notebook"),
            ("scope", "dataset:hospital-admissions"),
            ("days", "7"),
        ],
    )
    .await;
    assert_eq!(made.status(), 200);
    let shown = made.text().await.unwrap();
    let start = shown
        .find("sluice_pat_")
        .expect("the new token, shown once");
    let token: String = shown[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let read = app
        .data("hospital-admissions", &[("limit", "1")], Some(&token))
        .await;
    assert_eq!(read.status(), 200);
    // Listed (not shown again), then revoked from the page.
    let listed = page(&app, "/me/tokens", &session)
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("notebook") && listed.contains("dataset hospital-admissions"));
    assert!(!listed.contains(&token), "shown once only");
    let id = &token["sluice_pat_".len().."sluice_pat_".len() + 16];
    let revoked = post_form(
        &app,
        &format!("/me/tokens/{id}/revoke"),
        &session,
        Some(&app.base),
        &[("csrf", &csrf_in(&listed))],
    )
    .await;
    assert_eq!(revoked.status(), 303);
    let read = app
        .data("hospital-admissions", &[("limit", "1")], Some(&token))
        .await;
    assert_eq!(read.status(), 401);
}

/// Issue 34: a web session is known to every replica sharing the store (and
/// survives a restart, which is a replica that starts later), and signing
/// out on one ends it on all within seconds. The second server here shares
/// the first's state folder, where sessions are kept without a bucket.
#[tokio::test]
async fn a_session_is_known_to_every_replica_and_ends_everywhere() {
    let a = spawn_app().await;
    let audit = tempfile::tempdir().unwrap();
    let state = a.state_dir();
    let b = spawn_app_with(crate::helpers::ROWS, |s| {
        s.storage.state = state.clone();
        s.audit.dir = Some(audit.path().to_path_buf());
    })
    .await;
    let session = dev_sign_in(&a, "alice@uni.example", "").await;
    let on_b = page(&b, "/me/tokens", &session).await;
    assert_eq!(on_b.status(), 200, "b knows a's session");
    // A form b shows is accepted by a: one CSRF key for all replicas.
    let form_on_b = on_b.text().await.unwrap();
    let signed_out = post_form(
        &a,
        "/auth/sign-out",
        &session,
        Some(&a.base),
        &[("csrf", &csrf_in(&form_on_b))],
    )
    .await;
    assert_eq!(signed_out.status(), 303);
    assert_ne!(page(&a, "/me/tokens", &session).await.status(), 200);
    let mut ended = false;
    for _ in 0..40 {
        if page(&b, "/me/tokens", &session).await.status() != 200 {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ended, "signed out on a, so on b within seconds");
}
