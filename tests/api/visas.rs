//! Issue 21, part 4: GA4GH Passport visas checked to the letter, with a
//! local visa issuer's keys. The policy's `visa_grant` opens
//! `hospital-admissions` (aggregate-only) to a visa whose value is exactly
//! `https://sluice.example/datasets/hospital-admissions`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sluice::auth::Role;

use crate::helpers::{ROWS, TestApp, problem, spawn_app_with};

const ISS: &str = "https://visas.example";
const URL: &str = "https://sluice.example/datasets/hospital-admissions";
const AGGREGATE: &str = "/v1/datasets/hospital-admissions/aggregate?group_by=region";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A visa issuer with its own ES256 key and JWKS file.
struct Issuer {
    key: EncodingKey,
    dir: tempfile::TempDir,
}

impl Issuer {
    fn new() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let jwks = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "kid": "visa-1",
            "x": B64.encode(&raw[1..33]), "y": B64.encode(&raw[33..65]) }] });
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("jwks.json"), jwks.to_string()).unwrap();
        Self {
            key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            dir,
        }
    }

    fn trusted(&self) -> sluice::config::VisaIssuer {
        sluice::config::VisaIssuer {
            issuer: ISS.into(),
            jwks_file: self.dir.path().join("jwks.json"),
        }
    }

    /// A visa from `ISS` about `sub`; `edit` changes its claims.
    fn visa(&self, sub: &str, kind: &str, value: &str, edit: impl FnOnce(&mut Value)) -> String {
        let mut claims = json!({ "iss": ISS, "sub": sub, "iat": now(), "exp": now() + 300,
            "ga4gh_visa_v1": { "type": kind, "value": value, "source": "https://dac.example",
                               "by": "dac", "asserted": now() - 3600 } });
        edit(&mut claims);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("visa-1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }

    fn grant(&self, sub: &str, value: &str) -> String {
        self.visa(sub, "ControlledAccessGrants", value, |_| {})
    }
}

/// A token for `sub` (signed by the server's development key) carrying `visas`.
fn passport(app: &TestApp, sub: &str, visas: &[String]) -> String {
    let claims = json!({ "sub": sub, "iss": app.settings.auth.issuer, "aud": app.settings.auth.audience,
        "iat": now(), "exp": now() + 300, "roles": ["researcher"], "ga4gh_passport_v1": visas });
    let pem = std::fs::read(app.state_dir().join("dev-signing-key.pem")).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("sluice-dev".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_pem(&pem).unwrap()).unwrap()
}

async fn app_trusting(issuer: &Issuer, broker_asserts_identity: bool) -> TestApp {
    let trusted = issuer.trusted();
    spawn_app_with(ROWS, move |s| {
        s.auth.visa_issuers = vec![trusted];
        s.auth.passport_broker_asserts_identity = broker_asserts_identity;
    })
    .await
}

/// Whether carol's passport opens the dataset: 200, or 403 grant-required
/// (the token itself stays valid either way).
async fn opens(app: &TestApp, sub: &str, visas: &[String]) -> bool {
    let token = passport(app, sub, visas);
    let response = app.get(AGGREGATE, Some(&token)).await;
    if response.status() == 200 {
        return true;
    }
    problem(response, 403, "grant-required").await;
    false
}

#[tokio::test]
async fn a_visa_value_must_be_the_configured_url_exactly() {
    let issuer = Issuer::new();
    let app = app_trusting(&issuer, false).await;
    for accepted in [
        URL,
        "HTTPS://Sluice.EXAMPLE:443/datasets/hospital-admissions",
    ] {
        assert!(
            opens(&app, "carol", &[issuer.grant("carol", accepted)]).await,
            "{accepted}"
        );
    }
    for refused in [
        "hospital-admissions",
        "https://evil.example/datasets/hospital-admissions",
        "https://sluice.example/?x=/datasets/hospital-admissions",
        "https://sluice.example/#/datasets/hospital-admissions",
        "https://sluice.example/datasets/hospital-admissions?x=1",
        "https://sluice.example/datasets/hospital-admissions#x",
        "urn:x:/datasets/hospital-admissions",
        "https://sluice.example/v1/datasets/hospital-admissions",
        "https://sluice.example/datasets/hospital-admissions/",
        // Forms a lenient URL parser would repair into the right one.
        "https://sluice.example:0443/datasets/hospital-admissions",
        "https://sluice.example\\datasets\\hospital-admissions",
        "https:/sluice.example/datasets/hospital-admissions",
        " https://sluice.example/datasets/hospital-admissions",
        "https://sluice.example/datasets/hospital-admissions\t",
        "https://sluice.example/datasets/%2e%2e/datasets/hospital-admissions",
        "https://sluice.example/datasets/../datasets/hospital-admissions",
    ] {
        assert!(
            !opens(&app, "carol", &[issuer.grant("carol", refused)]).await,
            "{refused}"
        );
    }
}

#[tokio::test]
async fn a_visa_with_conditions_is_refused() {
    let issuer = Issuer::new();
    let app = app_trusting(&issuer, false).await;
    let role = issuer.visa("carol", "AffiliationAndRole", "faculty@uni.example", |_| {});
    // The condition would even hold: carol carries the visa it asks for.
    let conditional = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["ga4gh_visa_v1"]["conditions"] = json!([[{
            "type": "AffiliationAndRole",
            "value": "const:faculty@uni.example",
            "by": "const:dac"
        }]]);
    });
    assert!(!opens(&app, "carol", &[role.clone(), conditional]).await);
    let empty = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["ga4gh_visa_v1"]["conditions"] = json!([]);
    });
    assert!(!opens(&app, "carol", &[empty]).await);
    // The same visa without conditions opens it.
    assert!(opens(&app, "carol", &[role, issuer.grant("carol", URL)]).await);
    // `asserted` is required.
    let unasserted = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["ga4gh_visa_v1"]
            .as_object_mut()
            .unwrap()
            .remove("asserted");
    });
    assert!(!opens(&app, "carol", &[unasserted]).await);
}

#[tokio::test]
async fn a_visa_for_someone_else_opens_nothing_unless_linked_to_the_holder() {
    let issuer = Issuer::new();
    let app = app_trusting(&issuer, false).await;
    let mallorys = issuer.grant("mallory", URL);
    assert!(!opens(&app, "carol", std::slice::from_ref(&mallorys)).await);
    assert!(opens(&app, "mallory", std::slice::from_ref(&mallorys)).await);

    let link = |sub: &str, value: &str| issuer.visa(sub, "LinkedIdentities", value, |_| {});
    let encoded_iss = "https%3A%2F%2Fvisas.example";
    // carol's own trusted LinkedIdentities visa says she is `c-123` at the issuer.
    let carol_is_c123 = link(
        "carol",
        &format!("c-123,{encoded_iss};x,https%3A%2F%2Fother.example"),
    );
    assert!(
        opens(
            &app,
            "carol",
            &[carol_is_c123.clone(), issuer.grant("c-123", URL)]
        )
        .await
    );
    // It links c-123 at this issuer only, and only for carol.
    let c123_elsewhere = link("carol", "c-123,https%3A%2F%2Fother.example");
    assert!(!opens(&app, "carol", &[c123_elsewhere, issuer.grant("c-123", URL)]).await);
    assert!(!opens(&app, "dave", &[carol_is_c123, issuer.grant("c-123", URL)]).await);
    // mallory cannot link herself to carol's token.
    let mallory_claims_carol = link("mallory", &format!("carol,{encoded_iss}"));
    assert!(!opens(&app, "carol", &[mallory_claims_carol, mallorys.clone()]).await);
    // A link signed by an untrusted key counts for nothing.
    let forger = Issuer::new();
    let forged = forger.visa(
        "carol",
        "LinkedIdentities",
        &format!("mallory,{encoded_iss}"),
        |_| {},
    );
    assert!(!opens(&app, "carol", &[forged, mallorys.clone()]).await);

    // A server configured to trust the passport broker's word takes it.
    let trusting = app_trusting(&issuer, true).await;
    assert!(opens(&trusting, "carol", &[mallorys]).await);
}

#[tokio::test]
async fn two_visas_make_one_grant_and_the_audit_names_the_visa() {
    let issuer = Issuer::new();
    let app = app_trusting(&issuer, false).await;
    let early = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["exp"] = json!(now() + 120);
    });
    let later_value = "https://SLUICE.example/datasets/hospital-admissions";
    let later = issuer.visa("carol", "ControlledAccessGrants", later_value, |c| {
        c["exp"] = json!(now() + 600);
        c["ga4gh_visa_v1"]["asserted"] = json!(1_700_000_000);
    });
    let token = passport(&app, "carol", &[early, later]);
    let meta: Value = app
        .get_json("/v1/datasets/hospital-admissions", Some(&token))
        .await;
    assert_eq!(meta["access"]["allowed"], true, "{meta}");
    assert_eq!(meta["access"]["basis"]["id"], "visa:hospital-admissions");
    let response = app.get(AGGREGATE, Some(&token)).await;
    assert_eq!(response.status(), 200);
    let _ = response.bytes().await.unwrap();

    let admin = app.token("root@example", &[Role::Admin], &[]);
    let mut visa = Value::Null;
    for _ in 0..50 {
        let page: Value = app
            .get_json(
                "/v1/audit?sub=carol&dataset=hospital-admissions",
                Some(&admin),
            )
            .await;
        if let Some(record) = page["records"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event"] == "aggregate" && r["decision"] == "allow")
        {
            assert_eq!(record["grant"], "visa:hospital-admissions");
            visa = record["visa"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        visa,
        json!({ "issuer": ISS, "subject": "carol", "value": later_value, "asserted": 1_700_000_000 })
    );
    // The chain still verifies with the new member. The server is live:
    // the checkpoint that vouches for the first records is written by the
    // trail's writer just after them, so allow it a moment.
    let mut verified = Err(None);
    for _ in 0..40 {
        match sluice::audit::verify(
            &app.state_dir().join("audit"),
            &crate::crash::anchor(&app.state_dir()),
        ) {
            Ok(report) => {
                verified = Ok(report);
                break;
            }
            Err(e) => verified = Err(Some(e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    verified.expect("the chain verifies");
}

#[tokio::test]
async fn a_trusted_controlled_access_visa_counts_as_a_grant_and_bad_ones_open_nothing() {
    let issuer = Issuer::new();
    let trusted = issuer.trusted();
    let app = spawn_app_with(ROWS, |s| s.auth.visa_issuers = vec![trusted]).await;
    let sub = "rita@uni.example";
    let token = passport(&app, sub, &[issuer.grant(sub, URL)]);
    assert_eq!(app.get(AGGREGATE, Some(&token)).await.status(), 200);
    // The visa_grant is aggregate-only.
    problem(
        app.data("hospital-admissions", &[], Some(&token)).await,
        403,
        "aggregate-only",
    )
    .await;

    let expired = issuer.visa(sub, "ControlledAccessGrants", URL, |c| {
        c["exp"] = json!(now() - 120)
    });
    let untrusted = issuer.visa(sub, "ControlledAccessGrants", URL, |c| {
        c["iss"] = json!("https://other.example")
    });
    let cases = [
        ("expired", expired),
        ("untrusted issuer", untrusted),
        (
            "other type",
            issuer.visa(sub, "AffiliationAndRole", URL, |_| {}),
        ),
        (
            "other dataset",
            issuer.grant(sub, "https://sluice.example/datasets/school-results"),
        ),
        ("garbage", "not-a-jwt".to_string()),
        // Signed by another key under the trusted issuer's name.
        ("forged", Issuer::new().grant(sub, URL)),
    ];
    for (why, visa) in cases {
        let token = passport(&app, sub, &[visa]);
        // The token itself stays valid; the visa grants nothing.
        assert_eq!(
            app.get("/v1/datasets/school-results/data?limit=1", Some(&token))
                .await
                .status(),
            200,
            "{why}"
        );
        assert_eq!(
            app.get(AGGREGATE, Some(&token)).await.status(),
            403,
            "{why}"
        );
    }
}

#[tokio::test]
async fn visas_about_nobody_or_asserted_in_the_future_open_nothing() {
    let issuer = Issuer::new();
    let app = app_trusting(&issuer, false).await;
    let future = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["ga4gh_visa_v1"]["asserted"] = json!(now() + 365 * 86400)
    });
    let negative = issuer.visa("carol", "ControlledAccessGrants", URL, |c| {
        c["ga4gh_visa_v1"]["asserted"] = json!(-5)
    });
    assert!(!opens(&app, "carol", &[future]).await);
    assert!(!opens(&app, "carol", &[negative]).await);
    // A token whose subject is empty is no token at all.
    let nobody = passport(&app, "", &[issuer.grant("", URL)]);
    problem(
        app.get(AGGREGATE, Some(&nobody)).await,
        401,
        "invalid-token",
    )
    .await;
}
