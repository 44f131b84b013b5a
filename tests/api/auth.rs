use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem, spawn_app, spawn_app_with};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(app: &TestApp) -> Value {
    json!({
        "sub": "rita@uni.example",
        "iss": app.settings.auth.issuer,
        "aud": app.settings.auth.audience,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 300,
        "roles": ["researcher"],
    })
}

fn dev_key(app: &TestApp) -> EncodingKey {
    let pem = std::fs::read(app.state_dir().join("dev-signing-key.pem")).unwrap();
    EncodingKey::from_ed_pem(&pem).unwrap()
}

fn sign(app: &TestApp, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("sluice-dev".into());
    jsonwebtoken::encode(&header, claims, &dev_key(app)).unwrap()
}

fn with(app: &TestApp, key: &str, value: Value) -> String {
    let mut c = claims(app);
    c[key] = value;
    sign(app, &c)
}

fn without(app: &TestApp, key: &str) -> String {
    let mut c = claims(app);
    c.as_object_mut().unwrap().remove(key);
    sign(app, &c)
}

/// A token with a hand-made header and no valid signature.
fn forged(header: Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string()),
        signature
    )
}

/// What a forged or otherwise unusable token is told: nothing that helps
/// a forger.
const GENERIC: &str = "the bearer token is not valid";

async fn refused(app: &TestApp, authorization: &str, why: &str) {
    refused_saying(app, authorization, why, GENERIC).await
}

/// A 401 whose body and `WWW-Authenticate` say `detail` (RFC 6750's
/// `error_description`): what the token's holder can act on.
async fn refused_saying(app: &TestApp, authorization: &str, why: &str, detail: &str) {
    let response = app
        .client
        .get(app.url("/v1/datasets/school-results/data?limit=1"))
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer") && c.contains("error=\"invalid_token\"")),
        "{why}: challenge {challenge:?}"
    );
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.contains(&format!("error_description=\"{detail}\""))),
        "{why}: {challenge:?}"
    );
    let body = problem(response, 401, "invalid-token").await;
    assert_eq!(body["detail"], detail, "{why}");
}

#[tokio::test]
async fn a_valid_token_is_accepted() {
    let app = spawn_app().await;
    let token = sign(&app, &claims(&app));
    let response = app
        .data("school-results", &[("limit", "1")], Some(&token))
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn every_kind_of_bad_token_gets_a_401_that_says_what_its_holder_can_fix() {
    const MISSING: &str = "the token lacks a required claim (sub, exp, iss or aud)";
    const MALFORMED: &str = "the token is not a JWT (three base64url parts)";
    let app = spawn_app().await;
    let c = claims(&app);
    let bearer = |t: String| format!("Bearer {t}");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            bearer(forged(json!({"alg": "none", "typ": "JWT"}), &c, "")),
            "alg none",
            MALFORMED,
        ),
        (
            bearer(forged(json!({"alg": "none", "kid": "sluice-dev"}), &c, "")),
            "alg none with kid",
            MALFORMED,
        ),
        (
            bearer(forged(
                json!({"alg": "EdDSA", "kid": "sluice-dev"}),
                &c,
                "AAAA",
            )),
            "bad signature",
            GENERIC,
        ),
        (
            bearer(with(&app, "exp", json!(now() - 120))),
            "expired",
            "the token has expired: get a new one",
        ),
        (
            bearer(with(&app, "exp", json!(format!("{}", now() + 300)))),
            "exp as a string",
            GENERIC,
        ),
        (
            bearer(with(&app, "nbf", json!(now() + 300))),
            "not yet valid",
            "the token is not valid yet (its nbf is in the future): check the clocks",
        ),
        (
            bearer(with(&app, "iat", json!(now() + 3600))),
            "issued in the future",
            "the token was issued in the future (its iat): check the clocks",
        ),
        (
            bearer(with(&app, "iss", json!("https://evil.example"))),
            "wrong issuer",
            "the token's issuer (iss) is not one this server trusts",
        ),
        (
            bearer(with(&app, "aud", json!("another-service"))),
            "wrong audience",
            "the token is for another audience (aud), not this server",
        ),
        (bearer(without(&app, "sub")), "no subject", GENERIC),
        (bearer(without(&app, "exp")), "no expiry", MISSING),
        (bearer(without(&app, "iss")), "no issuer", MISSING),
        (bearer(without(&app, "aud")), "no audience", MISSING),
        (bearer("not.a.token".into()), "garbage", MALFORMED),
        (
            bearer("x".repeat(9000)),
            "oversized",
            "the token is larger than this server accepts",
        ),
        (
            "Basic YWxpY2U6c2VjcmV0".into(),
            "basic auth",
            "send the token as 'Authorization: Bearer <token>'",
        ),
        (
            "Bearer".into(),
            "empty bearer",
            "send the token as 'Authorization: Bearer <token>'",
        ),
    ];
    for (authorization, why, detail) in cases {
        refused_saying(&app, &authorization, why, detail).await;
    }
}

#[tokio::test]
async fn tokens_signed_by_another_key_or_algorithm_are_refused() {
    let app = spawn_app().await;
    let c = claims(&app);
    // A different Ed25519 key under the same kid.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("sluice-dev".into());
    let token = jsonwebtoken::encode(
        &header,
        &c,
        &EncodingKey::from_ed_pem(other.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    refused(&app, &format!("Bearer {token}"), "foreign key").await;
    // HS256 with the server's public key as the secret (algorithm confusion).
    let jwks = sluice::auth::dev::DevKey::load_or_create(&app.state_dir())
        .unwrap()
        .jwks_json();
    let x: Value = serde_json::from_str(&jwks).unwrap();
    let public = B64.decode(x["keys"][0]["x"].as_str().unwrap()).unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("sluice-dev".into());
    let token = jsonwebtoken::encode(&header, &c, &EncodingKey::from_secret(&public)).unwrap();
    refused(&app, &format!("Bearer {token}"), "HS256 confusion").await;
    // A critical header extension we do not understand.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("sluice-dev".into());
    let signed = jsonwebtoken::encode(&header, &c, &dev_key(&app)).unwrap();
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    parts[0] =
        B64.encode(json!({"alg": "EdDSA", "kid": "sluice-dev", "crit": ["exp"]}).to_string());
    refused(&app, &format!("Bearer {}", parts.join(".")), "crit header").await;
}

#[tokio::test]
async fn tokens_from_a_jwks_file_are_verified_for_rs256_es256_and_eddsa() {
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::PublicKeyParts;

    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let rsa_key = rsa::RsaPrivateKey::new(&mut rand08::thread_rng(), 2048).unwrap();
    let ec_raw = ec.public_key_raw();
    let jwks = json!({ "keys": [
        { "kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
          "x": B64.encode(&ec_raw[1..33]), "y": B64.encode(&ec_raw[33..65]) },
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": B64.encode(ed.public_key_raw()) },
        { "kty": "RSA", "kid": "rsa-1", "alg": "RS256",
          "n": B64.encode(rsa_key.n().to_bytes_be()), "e": B64.encode(rsa_key.e().to_bytes_be()) },
    ]});
    let jwks_dir = tempfile::tempdir().unwrap();
    let jwks_path = jwks_dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.auth.jwks_file = Some(jwks_path.clone());
        s.auth.dev_mode = false;
        s.server.public_url = Some("https://data.example.org".into());
        s.auth.issuer = "https://idp.example".into();
    })
    .await;
    let c = claims(&app);
    let rsa_pem = rsa_key.to_pkcs8_pem(Default::default()).unwrap();
    let keys = [
        (
            Algorithm::ES256,
            "ec-1",
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
        ),
        (
            Algorithm::EdDSA,
            "ed-1",
            EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
        ),
        (
            Algorithm::RS256,
            "rsa-1",
            EncodingKey::from_rsa_pem(rsa_pem.as_bytes()).unwrap(),
        ),
    ];
    for (alg, kid, key) in &keys {
        let mut header = Header::new(*alg);
        header.kid = Some(kid.to_string());
        let token = jsonwebtoken::encode(&header, &c, key).unwrap();
        let response = app
            .data("school-results", &[("limit", "1")], Some(&token))
            .await;
        assert_eq!(response.status(), 200, "{alg:?}");
        // Without a kid, the key is found by algorithm.
        let token = jsonwebtoken::encode(&Header::new(*alg), &c, key).unwrap();
        assert_eq!(
            app.data("school-results", &[("limit", "1")], Some(&token))
                .await
                .status(),
            200,
            "{alg:?} without kid"
        );
    }
    // The RSA key signing as PS256 is not what the key is pinned to.
    let mut header = Header::new(Algorithm::PS256);
    header.kid = Some("rsa-1".into());
    let token = jsonwebtoken::encode(&header, &c, &keys[2].2).unwrap();
    refused(&app, &format!("Bearer {token}"), "PS256 on an RS256 key").await;
    // Dev mode is off: the dev key is not trusted.
    let dev = sluice::auth::dev::DevKey::load_or_create(&app.state_dir()).unwrap();
    let token = dev
        .mint(&sluice::auth::dev::TokenRequest {
            sub: "x".into(),
            roles: vec![sluice::auth::Role::Researcher],
            groups: vec![],
            organisation: None,
            ttl_secs: 60,
            issuer: "https://idp.example".into(),
            audience: "sluice".into(),
        })
        .unwrap();
    refused(
        &app,
        &format!("Bearer {token}"),
        "dev key with dev mode off",
    )
    .await;
}
