//! Editing a dataset's manifest: an edit applies to every version at once;
//! an invalid edit is refused and changes nothing; the audit trail names
//! who changed each field, from what to what, and each refused edit.

use serde_json::{Value, json};

use crate::helpers::{
    arrow_batches, audit_records, column_names, edit, problem, problem_saying, spawn_app,
};
use crate::steward_helpers::{assert_nothing_left, published_twice};

/// Describes the data anew and makes `clinic` a direct identifier.
fn rename_and_hide_clinic() -> Value {
    json!({"description": "Renamed", "columns": [{"name": "clinic", "classification": "direct-identifier"}]})
}

#[tokio::test]
async fn an_edit_applies_to_every_version() {
    let app = spawn_app().await;
    let token = published_twice(&app, "edited").await;
    let r = edit(&app, &token, "edited", rename_and_hide_clinic()).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["description"], "Renamed");
    for version in [1, 2] {
        let got = arrow_batches(
            app.get(&format!("/v1/datasets/edited/data?version={version}"), None)
                .await,
        )
        .await;
        assert_eq!(column_names(&got), ["month", "visits"], "version {version}");
    }
}

#[tokio::test]
async fn an_invalid_edit_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let token = published_twice(&app, "edited").await;
    for invalid in [json!({"colour": "red"}), json!({"license": ""})] {
        problem(
            edit(&app, &token, "edited", invalid).await,
            422,
            "invalid-manifest",
        )
        .await;
    }
    // A mask on a number.
    problem_saying(
        edit(&app, &token, "edited", json!({"columns": [{"name": "visits", "classification": "quasi-identifier", "mask": "prefix(2)"}]})).await,
        422,
        "invalid-manifest",
        "visits",
    )
    .await;
    problem(
        edit(
            &app,
            &token,
            "edited",
            json!({"columns": [{"name": "nope", "description": "?"}]}),
        )
        .await,
        422,
        "invalid-manifest",
    )
    .await;
    let meta: Value = app.get_json("/v1/datasets/edited", None).await;
    assert_eq!(meta["license"], "CC-BY-4.0");
    assert_nothing_left(&app, "edited", &["1", "2"]);
}

#[tokio::test]
async fn the_audit_trail_names_who_changed_each_field_from_what_to_what_and_each_refusal() {
    let app = spawn_app().await;
    let token = published_twice(&app, "edited").await;
    let refused = edit(&app, &token, "edited", json!({"colour": "red"})).await;
    problem(refused, 422, "invalid-manifest").await;
    // A refusal is recorded without waiting for the disk; the edit after it
    // is recorded durably, and with it what came before.
    let r = edit(&app, &token, "edited", rename_and_hide_clinic()).await;
    assert_eq!(r.status(), 200);
    let records = audit_records(&app, "edited").await;
    let edit = records
        .iter()
        .find(|r| r["event"] == "edit" && r["decision"] == "allow")
        .expect("an edit record");
    assert_eq!(edit["subject"], "sam@observatory.example");
    assert_eq!(edit["proposed_by"], "sam@observatory.example");
    assert_eq!(
        edit["changes"],
        json!([
            {"field": "description", "old": "Visits per clinic and month", "new": "Renamed"},
            {"field": "columns.clinic.classification", "old": "none", "new": "direct-identifier"},
        ])
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "edit" && r["decision"] == "refused")
    );
}
