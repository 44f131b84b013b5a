//! The audit trail survives SIGKILL: the real binary is killed, a torn
//! record is left at the end of its file, and after a restart the chain
//! continues, verifies, and reports the torn line instead of hiding it.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::ROWS;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes an empty policy and a plain-HTTP config on a free port for the
/// binary; returns the config's path and the base URL.
pub fn binary_config(dir: &std::path::Path, server_extra: &str) -> (std::path::PathBuf, String) {
    std::fs::write(dir.join("policy.toml"), "").unwrap();
    let port = free_port();
    let config = dir.join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{server_extra}\n[tls]\nmode = \"off\"\n[auth]\ndev_mode = true\n[storage]\ndatasets = \"{0}/datasets\"\nstate = \"{0}/state\"\npolicy = \"{0}/policy.toml\"\n",
            dir.display()
        ),
    )
    .unwrap();
    (config, format!("http://127.0.0.1:{port}"))
}

pub fn start(config: &std::path::Path) -> Child {
    Command::new(crate::helpers::sluice_bin())
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sluice binary starts")
}

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

fn sigterm(server: &mut Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    server.wait().unwrap();
}

/// `sluice audit verify` on `dir`: whether it passed, and what it printed.
fn audit_verify(config: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(config)
        .args(["audit", "verify"])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_cut_or_rewritten_audit_tail_fails_verification_against_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    sluice::demo_data::write_all(&dir.path().join("datasets"), ROWS, 1, None).unwrap();
    let (config, base) = binary_config(dir.path(), "policy_poll_ms = 60000");
    let client = reqwest::Client::new();
    let mut server = start(&config);
    wait_up(&client, &base).await;
    fetch_some(&client, &base, 20).await;
    // SIGTERM: the server seals its tail before it exits.
    sigterm(&mut server);

    let (ok, text) = audit_verify(&config, &[]);
    assert!(ok, "{text}");
    assert!(text.contains("0 unsealed"), "{text}");
    let audit = dir.path().join("state").join("audit");
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
    let (ok, text) = audit_verify(&config, &[]);
    assert!(!ok, "a cut tail passed: {text}");
    assert!(text.contains("cut"), "{text}");
    // Also when the checkpoint file goes too, if the head was kept elsewhere
    // (the checkpoint's log line).
    std::fs::remove_file(sluice::audit::checkpoint::checkpoint_path(&audit)).unwrap();
    let (ok, text) = audit_verify(&config, &[]);
    assert!(!ok && text.contains("no signed checkpoint"), "{text}");
    let key = newest.public_key.clone();
    let (ok, text) = audit_verify(
        &config,
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

pub async fn wait_up(client: &reqwest::Client, base: &str) {
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server did not start");
}

async fn fetch_some(client: &reqwest::Client, base: &str, n: usize) {
    for _ in 0..n {
        let body = client
            .get(format!(
                "{base}/v1/datasets/vaccination-coverage/data?limit=10"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(!body.is_empty());
    }
    // Outcome records are written as streams end; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_audit_chain_survives_sigkill_and_reports_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    sluice::demo_data::write_all(&dir.path().join("datasets"), ROWS, 1, None).unwrap();
    let (config, base) = binary_config(dir.path(), "policy_poll_ms = 60000");
    let client = reqwest::Client::new();

    let mut server = start(&config);
    wait_up(&client, &base).await;
    fetch_some(&client, &base, 5).await;
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    // What a crash in the middle of a write leaves: half a line.
    let audit = dir.path().join("state").join("audit");
    let newest = sluice::audit::audit_files(&audit).unwrap().pop().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(b"{\"time\":\"2026-11-26T00:00:00Z\",\"event\":\"data\",\"pha")
        .unwrap();
    drop(file);

    let mut server = start(&config);
    wait_up(&client, &base).await;
    fetch_some(&client, &base, 3).await;
    server.kill().unwrap();
    server.wait().unwrap();

    let report = sluice::audit::verify(&audit, &anchor(&dir.path().join("state")))
        .expect("the chain verifies across the crash");
    assert_eq!(report.torn.len(), 1, "the torn record is reported");
    assert!(
        report.checkpoints >= 1,
        "the restart sealed the first run's records"
    );
    assert!(report.records >= 16, "{} records", report.records);
    assert!(report.files >= 2, "writing resumed in a fresh file");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_and_refuses_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 300_000;
    sluice::demo_data::write_all(
        &dir.path().join("datasets"),
        rows,
        1,
        Some("vaccination-coverage"),
    )
    .unwrap();
    let (config, base) = binary_config(dir.path(), "shutdown_grace_secs = 20");
    let client = reqwest::Client::new();
    let mut server = start(&config);
    wait_up(&client, &base).await;

    let mut response = client
        .get(format!(
            "{base}/v1/datasets/vaccination-coverage/data?format=csv"
        ))
        .send()
        .await
        .unwrap();
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused while the stream drains.
    assert!(
        reqwest::Client::new()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
    while let Some(chunk) = response.chunk().await.expect("the stream is not cut") {
        body.extend_from_slice(&chunk);
    }
    let lines = body.iter().filter(|&&b| b == b'\n').count() as u64;
    assert_eq!(lines, rows + 1, "every row and the header arrived");
    let exit = server.wait().unwrap();
    assert!(exit.success(), "clean exit after draining: {exit:?}");
}

/// A token for a steward of `org`, signed with the binary's dev key.
pub fn steward_token(dir: &std::path::Path, org: &str) -> String {
    use sluice::auth::Role;
    use sluice::auth::dev::{DevKey, TokenRequest};
    DevKey::load_or_create(&dir.join("state"))
        .unwrap()
        .mint(&TokenRequest {
            sub: "sam@observatory.example".into(),
            roles: vec![Role::Steward],
            groups: Vec::new(),
            organisation: Some(org.into()),
            ttl_secs: 3600,
            issuer: "sluice-dev".into(),
            audience: "sluice".into(),
        })
        .unwrap()
}

const V2_ROWS: usize = 300_000;

async fn versions_and_rows(client: &reqwest::Client, base: &str) -> Vec<(u64, u64)> {
    let meta: serde_json::Value = client
        .get(format!("{base}/v1/datasets/crash-test"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["rows"].as_u64().unwrap()))
        .collect()
}

async fn served_rows(client: &reqwest::Client, base: &str, version: u64) -> usize {
    let body = client
        .get(format!(
            "{base}/v1/datasets/crash-test/data?version={version}&format=csv"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines().count() - 1
}

#[tokio::test]
async fn sigkill_at_any_moment_of_an_upload_leaves_the_old_or_the_whole_new_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("datasets")).unwrap();
    let (config, base) = binary_config(dir.path(), "policy_poll_ms = 60000");
    let client = reqwest::Client::new();
    let mut server = start(&config);
    wait_up(&client, &base).await;
    let token = steward_token(dir.path(), "Observatory");
    let manifest = serde_json::json!({
        "id": "crash-test", "title": "Crash test", "description": "", "sector": "test",
        "publisher": "Observatory", "license": "CC0-1.0", "tier": "open",
        "sort_by": ["n"],
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
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        if !matches!(upload.await.unwrap(), Ok(r) if r.status() == 201) {
            killed_mid_upload += 1;
        }
        server = start(&config);
        wait_up(&client, &base).await;

        let versions = versions_and_rows(&client, &base).await;
        assert_eq!(
            versions[0],
            (1, 3),
            "version 1 is intact after a kill at {delay_ms} ms"
        );
        assert_eq!(served_rows(&client, &base, 1).await, 3);
        for &(number, rows) in &versions[1..] {
            assert_eq!(rows, V2_ROWS as u64, "version {number} is whole");
            assert_eq!(served_rows(&client, &base, number).await, V2_ROWS);
        }
        let staging = std::fs::read_dir(dir.path().join("datasets/.staging"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(staging, 0, "recovery cleared the staging area");
    }
    eprintln!(
        "kills during an upload: {killed_mid_upload} of 9; versions after: {:?}",
        versions_and_rows(&client, &base).await
    );
    assert!(killed_mid_upload > 0, "no kill landed during an upload");
    server.kill().unwrap();
    server.wait().unwrap();
}
