use sluice::config::TlsMode;

use crate::helpers::{arrow_batches, rows, spawn_app_with};

#[tokio::test]
async fn data_is_served_over_https_with_the_generated_certificate() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| s.tls.mode = TlsMode::SelfSigned).await;
    assert!(app.base.starts_with("https://"));
    let ca_pem = std::fs::read(app.state_dir().join("tls").join("ca.pem"))
        .expect("CA written on first start");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "https://localhost:{}/v1/datasets/vaccination-coverage/data?limit=25",
        app.base.rsplit(':').next().unwrap()
    );
    let response = client
        .get(url)
        .send()
        .await
        .expect("TLS handshake with the generated CA");
    assert_eq!(rows(&arrow_batches(response).await), 25);

    // A client that does not trust the CA cannot connect.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(app.url("/healthz")).send().await.is_err());
}
