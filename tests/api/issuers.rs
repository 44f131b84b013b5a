//! Keys from the identity provider, live (issue 34): an issuer configured
//! by its URL alone is found by OpenID discovery over HTTPS under a private
//! CA (`ca_file`); a key the provider adds verifies at its first token, one
//! it removes stops within the refresh interval, a flood of unknown `kid`s
//! costs at most one read, and the last good keys stay while the provider
//! is down. Claims are mapped as configured (Keycloak's nested roles).
//!
//! The provider here is a small HTTPS server in the test, so the test can
//! rotate its keys, take it down and count its reads.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sluice::config::IssuerSettings;

use crate::helpers::{TestApp, spawn_app_with};

/// What the provider publishes, whether it answers, and how often its keys
/// were read.
#[derive(Default)]
struct Provider {
    issuer: String,
    keys: Vec<Value>,
    down: bool,
    jwks_reads: usize,
}

type Shared = Arc<Mutex<Provider>>;

async fn discovery(p: web::Data<Shared>) -> HttpResponse {
    let p = p.lock().unwrap();
    if p.down {
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Ok().json(json!({
        "issuer": p.issuer,
        "jwks_uri": format!("{}/keys", p.issuer),
    }))
}

async fn jwks(p: web::Data<Shared>) -> HttpResponse {
    let mut p = p.lock().unwrap();
    p.jwks_reads += 1;
    if p.down {
        return HttpResponse::ServiceUnavailable().finish();
    }
    HttpResponse::Ok().json(json!({ "keys": p.keys }))
}

/// Starts the provider over HTTPS with a certificate of a CA made here;
/// returns its state and the CA file.
async fn start_provider(dir: &std::path::Path) -> (Shared, std::path::PathBuf) {
    let certs = sluice::tls::DevCertificate::in_state(dir);
    certs.ensure().unwrap();
    let config = sluice::tls::server_config(&certs.cert, &certs.key).unwrap();
    let shared: Shared = Arc::default();
    let data = web::Data::new(shared.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route(
                "/.well-known/openid-configuration",
                web::get().to(discovery),
            )
            .route("/keys", web::get().to(jwks))
    })
    .workers(1)
    .bind_rustls_0_23("127.0.0.1:0", (*config).clone())
    .unwrap();
    let port = server.addrs()[0].port();
    shared.lock().unwrap().issuer = format!("https://localhost:{port}");
    tokio::spawn(server.run());
    (shared, certs.ca.clone())
}

/// An Ed25519 key: its JWK and its signing half.
fn key(kid: &str) -> (Value, EncodingKey) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "kid": kid,
                     "x": B64.encode(pair.public_key_raw())});
    (
        jwk,
        EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
    )
}

fn token(issuer: &str, kid: &str, key: &EncodingKey) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "sub": "kim@uni.example", "iss": issuer, "aud": "sluice",
        "iat": now, "nbf": now, "exp": now + 300,
        "realm_access": {"roles": ["research-staff", "offline_access"]},
        "org_name": "University of Example",
    });
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Polls until `token`'s answer has `status`, for at most `limit`.
async fn until(app: &TestApp, token: &str, status: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if me(app, token).await.0 == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn keys_rotate_at_the_provider_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, ca) = start_provider(dir.path()).await;
    let (jwk_a, key_a) = key("key-a");
    let (jwk_b, key_b) = key("key-b");
    provider.lock().unwrap().keys = vec![jwk_a.clone()];
    let issuer = provider.lock().unwrap().issuer.clone();

    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.auth.dev_mode = false;
        s.server.public_url = Some("https://data.example.org".into());
        s.auth.issuers = vec![IssuerSettings {
            issuer: issuer.clone(),
            audience: None,
            jwks_uri: None,
            jwks_file: None,
            ca_file: Some(ca.clone()),
            refresh_secs: 2,
            min_refresh_secs: 5,
            roles_claim: "realm_access.roles".into(),
            groups_claim: "groups".into(),
            organisation_claim: "org_name".into(),
            roles_map: [("research-staff".to_owned(), "researcher".to_owned())].into(),
        }];
    })
    .await;
    // The keys are read at start (a token that came first would make them
    // be read at once, which this test keeps for the rotation below).
    let start = Instant::now();
    while provider.lock().unwrap().jwks_reads == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let a = token(&issuer, "key-a", &key_a);
    assert_eq!(
        me(&app, &a).await.0,
        200,
        "the provider's key is read at start"
    );
    let (_, who) = me(&app, &a).await;
    assert_eq!(who["roles"], json!(["researcher"]), "{who}");
    assert_eq!(who["organisation"], "University of Example");

    // The provider adds a key: its first token verifies.
    provider.lock().unwrap().keys = vec![jwk_a.clone(), jwk_b.clone()];
    let b = token(&issuer, "key-b", &key_b);
    assert_eq!(me(&app, &b).await.0, 200, "a new kid reads the keys again");

    // A flood of made-up kids: all refused, at most one read of the keys
    // beyond the scheduled ones.
    let reads_before = provider.lock().unwrap().jwks_reads;
    let start = Instant::now();
    for i in 0..100 {
        let (_, other) = key(&format!("made-up-{i}"));
        let forged = token(&issuer, &format!("made-up-{i}"), &other);
        assert_eq!(me(&app, &forged).await.0, 401);
    }
    let scheduled = start.elapsed().as_secs() as usize / 2 + 1;
    let reads = provider.lock().unwrap().jwks_reads - reads_before;
    assert!(
        reads <= scheduled + 1,
        "{reads} reads for 100 unknown kids in {:?}",
        start.elapsed()
    );

    // The provider removes key A: it stops within the refresh interval;
    // B goes on.
    provider.lock().unwrap().keys = vec![jwk_b.clone()];
    assert!(
        until(&app, &a, 401, Duration::from_secs(6)).await,
        "a removed key stops working"
    );
    assert_eq!(me(&app, &b).await.0, 200);

    // The provider is down: the last good keys stay in force.
    provider.lock().unwrap().down = true;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(provider.lock().unwrap().jwks_reads > reads_before + reads);
    assert_eq!(me(&app, &b).await.0, 200, "the last good keys are kept");

    // Tokens of an issuer not configured are refused.
    let stranger = token("https://elsewhere.example", "key-b", &key_b);
    assert_eq!(me(&app, &stranger).await.0, 401);
}
