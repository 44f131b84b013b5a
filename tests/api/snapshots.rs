//! Issue 14, part 1: policy-applied snapshots served as files through
//! short-lived signed links, with byte ranges, and closed as soon as the
//! access they were issued under changes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{
    TestApp, audit_records, column_names, decode_parquet, footer_keys, problem, rows,
    spawn_app_with, strings,
};

const ID: &str = "hospital-admissions";

async fn snapshot(app: &TestApp, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/datasets/{ID}/snapshot")))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn link(app: &TestApp, token: &str, body: Value) -> Value {
    let response = snapshot(app, Some(token), body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn fast_policy_poll(s: &mut sluice::config::Settings) {
    s.server.policy_poll_ms = 100;
}

#[tokio::test]
async fn a_link_serves_the_callers_slice_as_a_file_with_ranges() {
    let app = spawn_app_with(600, fast_policy_poll).await;
    let alice = app.alice();
    let issued = link(&app, &alice, json!({"filter": "length_of_stay > 3"})).await;
    let url = issued["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&app.base), "{url}");
    let size = issued["size"].as_u64().unwrap();

    // No Authorization header: the link is the proof.
    let whole = app.client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.headers()["content-length"], size.to_string().as_str());
    assert_eq!(
        whole.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    let bytes = whole.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size);

    // The same rows as the stream of the same slice: alice's grant's
    // columns only, at most its 250-row cap, masks applied.
    let batches = decode_parquet(bytes.clone());
    assert_eq!(rows(&batches) as u64, issued["rows"].as_u64().unwrap());
    assert!(rows(&batches) <= 250);
    let streamed = decode_parquet(
        app.data(
            ID,
            &[("filter", "length_of_stay > 3"), ("format", "parquet")],
            Some(&alice),
        )
        .await
        .bytes()
        .await
        .unwrap(),
    );
    assert_eq!(column_names(&batches), column_names(&streamed));
    assert_eq!(
        column_names(&batches),
        [
            "age_band",
            "sex",
            "region",
            "icd10_chapter",
            "admission_date",
            "length_of_stay"
        ]
    );
    assert_eq!(rows(&batches), rows(&streamed));
    assert!(
        strings(&batches, "length_of_stay")
            .iter()
            .all(|v| v.parse::<i64>().unwrap() > 3)
    );
    let raw_dates: BTreeSet<String> = app.raw_column(ID, "admission_date").into_iter().collect();
    let served_dates = strings(&batches, "admission_date");
    assert!(
        served_dates.iter().all(|d| d.ends_with("-01")),
        "admission_date is served masked to the month"
    );
    assert!(raw_dates.iter().any(|d| !served_dates.contains(d)));

    // The footer carries provenance and nothing from the source file.
    let keys = footer_keys(bytes.clone());
    assert!(
        keys.iter()
            .all(|k| k.starts_with("sluice.") || k == "ARROW:schema"),
        "{keys:?}"
    );

    // HEAD: the size without the body.
    let head = app.client.head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], size.to_string().as_str());
    assert!(head.bytes().await.unwrap().is_empty());

    // A suffix range (how Parquet readers fetch the footer first), a
    // range from an offset (a resumed download) and one past the end.
    let ranged = |range: String| {
        let request = app.client.get(&url).header("range", range);
        async move { request.send().await.unwrap() }
    };
    let tail = ranged("bytes=-8".into()).await;
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.headers()["content-range"],
        format!("bytes {}-{}/{size}", size - 8, size - 1).as_str()
    );
    assert_eq!(tail.bytes().await.unwrap(), bytes.slice(bytes.len() - 8..));
    let resumed = ranged(format!("bytes={}-", size / 2)).await;
    assert_eq!(resumed.status(), 206);
    let mut joined = bytes.slice(..(size / 2) as usize).to_vec();
    joined.extend_from_slice(&resumed.bytes().await.unwrap());
    assert_eq!(joined, bytes.to_vec());
    let past = ranged(format!("bytes={}-", size + 10)).await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );

    // Asking again finds the same file.
    let again = link(&app, &alice, json!({"filter": "length_of_stay > 3"})).await;
    assert_eq!(again["etag"], issued["etag"]);
    let again = app
        .client
        .get(again["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);

    // Each use is audited to alice, ranged reads too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let records = audit_records(&app, ID).await;
    let reads: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "snapshot-read" && r["phase"] == "outcome")
        .collect();
    assert!(reads.len() >= 5, "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|r| r["subject"] == "alice@uni.example" && r["grant"] == "los-study")
    );
    assert!(reads.iter().any(|r| r["bytes"] == 8));
    assert!(records.iter().any(|r| r["event"] == "snapshot"
        && r["phase"] == "outcome"
        && r["rows"] == issued["rows"]));
}

#[tokio::test]
async fn a_link_holds_only_as_signed_and_while_the_access_holds() {
    let app = spawn_app_with(300, fast_policy_poll).await;
    let alice = app.alice();
    let issued = link(
        &app,
        &alice,
        json!({"columns": ["region", "length_of_stay"]}),
    )
    .await;
    let url = issued["url"].as_str().unwrap().to_owned();
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);

    let (path, query) = url.split_once('?').unwrap();
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let expires: i64 = param("expires").parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(expires > now && expires <= now + 900);

    // Tampered: another signature, a later expiry, another file, no ticket.
    let mut signature = param("signature");
    signature.replace_range(0..1, if signature.starts_with('A') { "B" } else { "A" });
    let forged = [
        format!(
            "{path}?ticket={}&expires={expires}&signature={signature}",
            param("ticket")
        ),
        format!(
            "{path}?ticket={}&expires={}&signature={}",
            param("ticket"),
            expires + 3600,
            param("signature")
        ),
        format!(
            "{}/{}.parquet?{query}",
            path.rsplit_once('/').unwrap().0,
            "0".repeat(64)
        ),
        path.to_owned(),
    ];
    for forged in forged {
        problem(
            app.client.get(&forged).send().await.unwrap(),
            403,
            "link-invalid",
        )
        .await;
    }
    let unknown_ticket = format!(
        "{path}?ticket=AAAAAAAAAAAAAAAAAAAAAA&expires={expires}&signature={}",
        param("signature")
    );
    problem(
        app.client.get(&unknown_ticket).send().await.unwrap(),
        403,
        "link-expired",
    )
    .await;
    let past = format!(
        "{path}?ticket={}&expires={}&signature={}",
        param("ticket"),
        now - 1,
        param("signature")
    );
    problem(
        app.client.get(&past).send().await.unwrap(),
        403,
        "link-expired",
    )
    .await;

    // The admin revokes alice's grant: the link closes with the next poll.
    let policy = std::fs::read_to_string(&app.settings.storage.policy).unwrap();
    let revoked = policy.replace(
        "subjects = [\"alice@uni.example\"]",
        "subjects = [\"carol@uni.example\"]",
    );
    assert_ne!(policy, revoked);
    crate::helpers::write_policy(&app.settings.storage.policy, revoked);
    let mut status = 200;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = app.client.get(&url).send().await.unwrap().status().as_u16();
        if status != 200 {
            break;
        }
    }
    assert_eq!(status, 403);
    problem(
        app.client.get(&url).send().await.unwrap(),
        403,
        "link-expired",
    )
    .await;
    // And she gets no new one.
    problem(
        snapshot(&app, Some(&alice), json!({})).await,
        403,
        "grant-required",
    )
    .await;
}

#[tokio::test]
async fn aggregate_only_and_anonymous_callers_get_no_controlled_snapshot() {
    let app = spawn_app_with(200, |_| {}).await;
    let agency = app.token_in(
        "stats@agency.example",
        &[Role::Researcher],
        "Example Public Health Agency",
    );
    problem(
        snapshot(&app, Some(&agency), json!({})).await,
        403,
        "aggregate-only",
    )
    .await;
    problem(snapshot(&app, None, json!({})).await, 401, "token-required").await;
    problem(
        snapshot(&app, Some(&app.alice()), json!({"columns": ["nhs_number"]})).await,
        400,
        "unknown-column",
    )
    .await;
    problem(
        snapshot(&app, Some(&app.alice()), json!({"format": "csv"})).await,
        400,
        "invalid-parameter",
    )
    .await;

    // Open data needs no token, and its link works like any other.
    let response = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/snapshot"))
        .json(&json!({"limit": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let issued: Value = response.json().await.unwrap();
    let file = app
        .client
        .get(issued["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(rows(&decode_parquet(file.bytes().await.unwrap())), 7);
}

#[tokio::test]
async fn concurrent_requests_for_one_snapshot_write_it_once() {
    let app = spawn_app_with(2000, |_| {}).await;
    let alice = app.alice();
    let body = json!({"columns": ["region", "age_band", "length_of_stay"]});
    let answers = futures::future::join_all((0..6).map(|_| link(&app, &alice, body.clone()))).await;
    let etags: BTreeSet<&str> = answers
        .iter()
        .map(|a| a["etag"].as_str().unwrap())
        .collect();
    assert_eq!(etags.len(), 1);
    let files: Vec<_> = std::fs::read_dir(app.state_dir().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].ends_with(".parquet"));
}

#[tokio::test]
async fn the_cache_keeps_its_size_limit_and_cuts_an_evicted_snapshot_again() {
    let app = spawn_app_with(600, |s| s.snapshots.max_bytes = 13_000).await;
    let alice = app.alice();
    let first = link(&app, &alice, json!({"filter": "region = 'north'"})).await;
    for region in ["south", "east", "west", "midlands"] {
        link(
            &app,
            &alice,
            json!({"filter": format!("region = '{region}'")}),
        )
        .await;
    }
    let sizes: Vec<u64> = std::fs::read_dir(app.state_dir().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    assert!(sizes.iter().sum::<u64>() <= 13_000, "{sizes:?}");
    assert!(sizes.len() < 5, "some were evicted: {sizes:?}");
    // The first link still works: its file is cut again, with the same
    // bytes (file order, no retrieval time), so the same ETag.
    let file = app
        .client
        .get(first["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", first["etag"].as_str().unwrap())
    );
    let batches = decode_parquet(file.bytes().await.unwrap());
    assert_eq!(rows(&batches) as u64, first["rows"].as_u64().unwrap());
    assert!(strings(&batches, "region").iter().all(|r| r == "north"));

    // A slice larger than the whole cache is refused, not half-written.
    let app = spawn_app_with(600, |s| s.snapshots.max_bytes = 2_000).await;
    problem(
        snapshot(&app, Some(&app.alice()), json!({})).await,
        422,
        "snapshot-too-large",
    )
    .await;
    let left = std::fs::read_dir(app.state_dir().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn links_are_bounded_per_caller_and_their_uses_count_against_the_caller() {
    let app = spawn_app_with(300, |s| {
        s.snapshots.max_links_per_caller = 2;
        s.limits.requests_per_minute = 60;
        s.limits.request_burst = 8;
    })
    .await;
    let alice = app.alice();
    let first = link(&app, &alice, json!({"limit": 1})).await;
    link(&app, &alice, json!({"limit": 2})).await;
    let full = problem(
        snapshot(&app, Some(&alice), json!({"limit": 3})).await,
        429,
        "too-many-links",
    )
    .await;
    assert!(full["detail"].as_str().unwrap().contains("2 unexpired"));
    // Others are not locked out by alice.
    let response = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/snapshot"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Reading a link spends the rate budget of the caller it was issued to.
    let url = first["url"].as_str().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(app.client.head(url).send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn the_same_page_is_the_same_rows_every_time() {
    let app = spawn_app_with(30_000, |_| {}).await;
    let query = [("offset", "12345"), ("limit", "40"), ("format", "csv")];
    let mut answers = BTreeSet::new();
    for _ in 0..6 {
        let body = app
            .data("vaccination-coverage", &query, None)
            .await
            .text()
            .await
            .unwrap();
        answers.insert(body);
    }
    assert_eq!(answers.len(), 1);
}
