//! The server refuses to start on a policy an admin wrote wrong, or a
//! catalogue it cannot read; a grant that drifted from the catalogue loads
//! with a warning and serves only what is still safe.

use sluice::startup::Application;

use sluice::auth::Role;

use crate::helpers::{
    ROWS, TestApp, arrow_batches, column_names, problem, settings_for, spawn_app_with,
};

async fn build_error(policy: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    sluice::demo_data::write_all(&dir.path().join("datasets"), ROWS, 1, None).unwrap();
    crate::helpers::write_policy(dir.path().join("policy.toml"), policy);
    match Application::build(settings_for(dir.path())).await {
        Ok(_) => panic!("a bad policy was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

/// A server started on `policy` (written to its own file), and the
/// policy warnings its `/readyz` shows an admin.
async fn started_with(policy: &str) -> (TestApp, tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.toml");
    crate::helpers::write_policy(&file, policy);
    let app = spawn_app_with(ROWS, |s| s.storage.policy = file.clone()).await;
    let admin = app.token("root@example", &[Role::Admin], &[]);
    let ready: serde_json::Value = app.get("/readyz", Some(&admin)).await.json().await.unwrap();
    let warnings = ready["policy_warning_details"]
        .as_array()
        .expect("details for an admin")
        .iter()
        .map(|w| w.as_str().unwrap().to_owned())
        .collect();
    (app, dir, warnings)
}

#[tokio::test]
async fn a_grant_on_a_direct_identifier_loads_with_a_warning_and_never_serves_it() {
    let (app, _dir, warnings) = started_with(
        r#"[[grant]]
id = "g"
subjects = ["x"]
dataset = "hospital-admissions"
purpose = "p"
columns = ["nhs_number", "region"]
"#,
    )
    .await;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("grant 'g'")
            && warnings[0].contains("nhs_number")
            && warnings[0].contains("direct identifier"),
        "{warnings:?}"
    );
    let x = app.token("x", &[Role::Researcher], &[]);
    let batches = arrow_batches(app.data("hospital-admissions", &[], Some(&x)).await).await;
    assert_eq!(column_names(&batches), ["region"]);
    problem(
        app.data(
            "hospital-admissions",
            &[("columns", "nhs_number")],
            Some(&x),
        )
        .await,
        400,
        "unknown-column",
    )
    .await;
}

#[tokio::test]
async fn a_row_filter_on_an_unknown_column_loads_and_fails_closed() {
    let (app, _dir, warnings) = started_with(
        r#"[[grant]]
id = "g"
groups = ["x"]
dataset = "hospital-admissions"
purpose = "p"
row_filter = "county = 'x'"
"#,
    )
    .await;
    assert!(
        warnings.len() == 1 && warnings[0].contains("county"),
        "{warnings:?}"
    );
    let x = app.token("someone", &[Role::Researcher], &["x"]);
    let body = problem(
        app.data("hospital-admissions", &[], Some(&x)).await,
        403,
        "grant-suspended",
    )
    .await;
    assert_eq!(body["grant"], "g");
}

#[tokio::test]
async fn a_grant_on_an_unknown_dataset_loads_with_a_warning() {
    let (_app, _dir, warnings) = started_with(
        "[[grant]]\nid = \"g\"\nsubjects = [\"x\"]\ndataset = \"nope\"\npurpose = \"p\"\n",
    )
    .await;
    assert!(
        warnings.len() == 1 && warnings[0].contains("'nope' is not in the catalogue"),
        "{warnings:?}"
    );
}

#[tokio::test]
async fn mistakes_only_an_admin_can_make_still_stop_the_server() {
    let err = build_error("[[grant]]\nid = \"g\"\nsubjects = [\"x\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\nexpiry = 2030-01-01\n").await;
    assert!(err.contains("expiry") && err.contains("line 6"), "{err}");
    let grant = "[[grant]]\nid = \"g\"\ngroups = [\"x\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\n";
    let err = build_error(&format!("{grant}row_filter = \"region IN (SELECT 1)\"\n")).await;
    assert!(
        err.contains("grant 'g'") && err.contains("row_filter"),
        "{err}"
    );
    let err = build_error(&format!(
        "{grant}columns = [\"region\"]\nunmask = [\"age\"]\n"
    ))
    .await;
    assert!(err.contains("unmask") && err.contains("age"), "{err}");
    let err = build_error(&format!("{grant}{grant}")).await;
    assert!(err.contains("used by another grant"), "{err}");
    let err = build_error(
        "[[visa_grant]]\ndataset = \"hospital-admissions\"\nvalue = \"hospital-admissions\"\n",
    )
    .await;
    assert!(err.contains("value") && err.contains("line"), "{err}");
}

#[tokio::test]
async fn a_damaged_manifest_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = dir.path().join("datasets");
    sluice::demo_data::write_all(&datasets, ROWS, 1, None).unwrap();
    crate::helpers::write_policy(dir.path().join("policy.toml"), "");
    let manifest = datasets.join("school-results").join("dataset.toml");
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace("license = ", "licence = ");
    std::fs::write(&manifest, text).unwrap();
    let err = match Application::build(settings_for(dir.path())).await {
        Ok(_) => panic!("a bad manifest was accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("school-results/dataset.toml") && err.contains("licence"),
        "{err}"
    );
}

/// Issue 21, part 5: the poller compares content, not modification time
/// and length. An edit of the same length with the time put back is a
/// revocation all the same.
#[tokio::test]
async fn a_same_length_edit_with_the_time_put_back_is_picked_up_by_the_poll() {
    let app = spawn_app_with(ROWS, |s| s.server.policy_poll_ms = 100).await;
    let file = app.settings.storage.policy.clone();
    let rita = app.researcher();
    let grant = "\n[[grant]]\nid = \"rita\"\nsubjects = [\"rita@uni.example\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\n";
    let granted = format!("{}{grant}", crate::helpers::TEST_POLICY);
    crate::helpers::write_policy(&file, &granted);
    wait_for_status(&app, &rita, 200).await;

    let before = std::fs::metadata(&file).unwrap().modified().unwrap();
    let revoked = granted.replace("\"rita@uni.example\"", "\"rxta@uni.example\"");
    assert_eq!(revoked.len(), granted.len());
    crate::helpers::write_policy(&file, &revoked);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(before)
        .unwrap();
    let after = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (after.modified().unwrap(), after.len()),
        (before, sluice::policy::seal::seal(&granted).len() as u64)
    );
    wait_for_status(&app, &rita, 403).await;
}

async fn wait_for_status(app: &TestApp, token: &str, status: u16) {
    for _ in 0..50 {
        let r = app
            .data("hospital-admissions", &[("limit", "1")], Some(token))
            .await;
        if r.status() == status {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the policy change was not picked up (wanted {status})");
}
