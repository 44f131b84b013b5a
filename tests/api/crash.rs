//! The audit trail survives SIGKILL: the real binary is killed, a torn
//! record is left at the end of its file, and after a restart the chain
//! continues, verifies, and reports the torn line instead of hiding it.

use std::io::Write;
use std::time::Duration;

use crate::helpers::{BinaryServer, ROWS};

/// What `sluice audit verify` trusts on the server's machine: the
/// checkpoint key in the state folder.
pub fn anchor(state: &std::path::Path) -> sluice::audit::Anchor {
    let key =
        sluice::audit::checkpoint::SigningKey::load_or_create(&state.join("audit-signing-key"))
            .expect("the server made its checkpoint key");
    sluice::audit::Anchor {
        public_key: Some(key.public_key().to_vec()),
        head: None,
    }
}

/// `sluice audit verify` on the server's folder: whether it passed, and
/// what it printed.
fn audit_verify(server: &BinaryServer, extra: &[&str]) -> (bool, String) {
    let out = server.run(&[&["audit", "verify"], extra].concat());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_cut_or_rewritten_audit_tail_fails_verification_against_signed_checkpoints() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    server.start().await;
    fetch_some(&server, 20).await;
    // SIGTERM: the server seals its tail before it exits.
    server.signal("TERM");
    server.wait();

    let (ok, text) = audit_verify(&server, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("0 unsealed"), "{text}");
    let audit = server.state().join("audit");
    let checkpoints = sluice::audit::checkpoint::read(&audit).unwrap();
    let newest = checkpoints
        .last()
        .expect("a checkpoint at shutdown")
        .clone();

    // Drop the newest ten records, as an intruder covering their tracks.
    let file = sluice::audit::audit_files(&audit).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    std::fs::write(&file, lines[..lines.len() - 10].concat()).unwrap();
    let (ok, text) = audit_verify(&server, &[]);
    assert!(!ok, "a cut tail passed: {text}");
    assert!(text.contains("cut"), "{text}");
    // Also when the checkpoint file goes too, if the head was kept elsewhere
    // (the checkpoint's log line).
    std::fs::remove_file(sluice::audit::checkpoint::checkpoint_path(&audit)).unwrap();
    let (ok, text) = audit_verify(&server, &[]);
    assert!(!ok && text.contains("no signed checkpoint"), "{text}");
    let key = newest.public_key.clone();
    let (ok, text) = audit_verify(
        &server,
        &[
            "--public-key",
            &key,
            "--head",
            &newest.head,
            audit.to_str().unwrap(),
        ],
    );
    assert!(!ok && text.contains("not in the chain"), "{text}");
}

async fn fetch_some(server: &BinaryServer, n: usize) {
    for _ in 0..n {
        let body = server
            .get("/v1/datasets/vaccination-coverage/data?limit=10", None)
            .await
            .bytes()
            .await
            .unwrap();
        assert!(!body.is_empty());
    }
    // Outcome records are written as streams end; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_audit_chain_survives_sigkill_and_cuts_and_records_a_torn_record() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", ROWS, None);
    server.start().await;
    fetch_some(&server, 5).await;
    server.kill(); // SIGKILL

    // What a crash in the middle of a write leaves: half a line.
    let audit = server.state().join("audit");
    let newest = sluice::audit::audit_files(&audit).unwrap().pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(b"{\"time\":\"2026-11-26T00:00:00Z\",\"event\":\"data\",\"pha")
        .unwrap();
    drop(file);

    server.start().await;
    fetch_some(&server, 3).await;
    server.kill();

    let report = sluice::audit::verify(&audit, &anchor(&server.state()))
        .expect("the chain verifies across the crash");
    assert!(
        report.torn.is_empty(),
        "the torn end was cut: {:?}",
        report.torn
    );
    assert!(
        report.checkpoints >= 1,
        "the restart sealed the first run's records"
    );
    assert!(report.records >= 16, "{} records", report.records);
    // The restart says what it cut, in the trail itself.
    let records = sluice::audit::read_all(&audit).unwrap();
    let repair = records
        .iter()
        .find(|r| r.event == sluice::audit::Event::AuditRepair)
        .expect("a repair record");
    assert!(
        repair.reason.as_deref().unwrap().contains("cut 50 bytes"),
        "{repair:?}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_and_refuses_new_connections() {
    let rows = 300_000;
    let mut server = BinaryServer::with_samples(
        "shutdown_grace_secs = 20",
        rows,
        Some("vaccination-coverage"),
    );
    server.start().await;

    let mut response = server
        .client
        .get(server.url("/v1/datasets/vaccination-coverage/data?format=csv"))
        .send()
        .await
        .unwrap();
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    server.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the stream drains.
    assert!(
        reqwest::Client::new()
            .get(server.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    while let Some(chunk) = response.chunk().await.expect("the stream is not cut") {
        body.extend_from_slice(&chunk);
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, rows + 1, "every row and the header arrived");
    let exit = server.wait();
    assert!(exit.success(), "clean exit after draining: {exit:?}");
}

const V2_ROWS: usize = 300_000;

async fn versions_and_rows(server: &BinaryServer) -> Vec<(u64, u64)> {
    let meta = server.get_json("/v1/datasets/crash-test", None).await;
    meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["rows"].as_u64().unwrap()))
        .collect()
}

async fn served_rows(server: &BinaryServer, version: u64) -> usize {
    let csv = format!("/v1/datasets/crash-test/data?version={version}&format=csv");
    let body = server.get(&csv, None).await.text().await.unwrap();
    body.lines().count() - 1
}

#[tokio::test]
async fn sigkill_at_any_moment_of_an_upload_leaves_the_old_or_the_whole_new_version() {
    let mut server = BinaryServer::empty("policy_poll_ms = 60000");
    server.start().await;
    let token = server.steward("Observatory");
    let client = server.client.clone();
    let base = server.base.clone();
    let manifest = serde_json::json!({
        "id": "crash-test", "title": "Crash test", "description": "", "sector": "test",
        "publisher": "Observatory", "license": "CC0-1.0", "tier": "open",
        "sort_by": ["n"],
        "columns": [
            {"name": "n", "description": "a number"},
            {"name": "label", "description": "its name"},
        ],
    });
    let r = client
        .post(format!("{base}/v1/datasets"))
        .bearer_auth(&token)
        .json(&manifest)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let put = |body: String| {
        client
            .put(format!("{base}/v1/datasets/crash-test/data"))
            .bearer_auth(&token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
    };
    assert_eq!(
        put("n,label\n1,one\n2,two\n3,three\n".into())
            .await
            .unwrap()
            .status(),
        201
    );
    let mut v2 = String::from("n,label\n");
    for i in (0..V2_ROWS).rev() {
        v2.push_str(&format!("{i},label number {i}\n"));
    }

    // Kill points spread over the upload: while the body streams, while
    // the worker normalises and sorts, around the commit, after it.
    let mut killed_mid_upload = 0;
    for delay_ms in [0u64, 20, 80, 200, 400, 700, 1000, 1500, 2500] {
        let upload = tokio::spawn(put(v2.clone()));
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill(); // SIGKILL
        if !matches!(upload.await.unwrap(), Ok(r) if r.status() == 201) {
            killed_mid_upload += 1;
        }
        server.start().await;

        let versions = versions_and_rows(&server).await;
        assert_eq!(
            versions[0],
            (1, 3),
            "version 1 is intact after a kill at {delay_ms} ms"
        );
        assert_eq!(served_rows(&server, 1).await, 3);
        for &(number, rows) in &versions[1..] {
            assert_eq!(rows, V2_ROWS as u64, "version {number} is whole");
            assert_eq!(served_rows(&server, number).await, V2_ROWS);
        }
        let staging = std::fs::read_dir(server.datasets().join(".staging"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staging, 0, "recovery cleared the staging area");
    }
    eprintln!(
        "kills during an upload: {killed_mid_upload} of 9; versions after: {:?}",
        versions_and_rows(&server).await
    );
    assert!(killed_mid_upload > 0, "no kill landed during an upload");
    server.kill();
}
