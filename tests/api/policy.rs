//! The server refuses to start on a policy or catalogue it cannot apply.

use sluice::startup::Application;

use crate::helpers::{ROWS, settings_for};

async fn build_error(policy: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    sluice::demo_data::write_all(&dir.path().join("datasets"), ROWS, 1, None).unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy).unwrap();
    match Application::build(settings_for(dir.path())).await {
        Ok(_) => panic!("a bad policy was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn a_grant_on_a_direct_identifier_stops_the_server() {
    let err = build_error(
        r#"[[grant]]
id = "g"
subjects = ["x"]
dataset = "hospital-admissions"
purpose = "p"
columns = ["nhs_number"]
"#,
    )
    .await;
    assert!(
        err.contains("policy.toml")
            && err.contains("nhs_number")
            && err.contains("direct identifier"),
        "{err}"
    );
}

#[tokio::test]
async fn a_row_filter_on_an_unknown_column_stops_the_server() {
    let err = build_error(
        r#"[[grant]]
id = "g"
groups = ["x"]
dataset = "hospital-admissions"
purpose = "p"
row_filter = "county = 'x'"
"#,
    )
    .await;
    assert!(err.contains("grant 'g'") && err.contains("county"), "{err}");
}

#[tokio::test]
async fn unknown_keys_and_datasets_stop_the_server_with_the_line() {
    let err = build_error("[[grant]]\nid = \"g\"\nsubjects = [\"x\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\nexpiry = 2030-01-01\n").await;
    assert!(err.contains("expiry") && err.contains("line 6"), "{err}");
    let err = build_error(
        "[[grant]]\nid = \"g\"\nsubjects = [\"x\"]\ndataset = \"nope\"\npurpose = \"p\"\n",
    )
    .await;
    assert!(
        err.contains("nope") && err.contains("not in the catalogue"),
        "{err}"
    );
}

#[tokio::test]
async fn a_damaged_manifest_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let datasets = dir.path().join("datasets");
    sluice::demo_data::write_all(&datasets, ROWS, 1, None).unwrap();
    std::fs::write(dir.path().join("policy.toml"), "").unwrap();
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
