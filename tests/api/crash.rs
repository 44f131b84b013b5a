//! The audit trail survives SIGKILL: the real binary is killed, a torn
//! record is left at the end of its file, and after a restart the chain
//! continues, verifies, and reports the torn line instead of hiding it.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::ROWS;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes an empty policy and a plain-HTTP config on a free port for the
/// binary; returns the config's path and the base URL.
fn binary_config(dir: &std::path::Path, server_extra: &str) -> (std::path::PathBuf, String) {
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

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the sluice binary starts")
}

async fn wait_up(client: &reqwest::Client, base: &str) {
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

    let report = sluice::audit::verify(&audit).expect("the chain verifies across the crash");
    assert_eq!(report.torn.len(), 1, "the torn record is reported");
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
