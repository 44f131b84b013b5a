//! "Your columns at a glance" on a dataset's page (issue 33, "look before
//! you ask"): from the rows the visitor may read, kept per version and
//! access so a page view does not read the data again, and nothing for a
//! visitor who may not read rows.

use crate::helpers::{audit_records, spawn_app};

async fn html(app: &crate::helpers::TestApp, path: &str) -> String {
    crate::web::page(app, path, "").await.text().await.unwrap()
}

fn reads(records: &[serde_json::Value]) -> usize {
    records
        .iter()
        .filter(|r| r["event"] == "data" && r["phase"] == "decision")
        .count()
}

#[tokio::test]
async fn an_open_datasets_columns_are_shown_at_a_glance_once_read() {
    let app = spawn_app().await;
    let page = html(&app, "/datasets/vaccination-coverage").await;
    assert!(page.contains("Your columns at a glance"), "{page}");
    assert!(page.contains("From the first "), "{page}");
    let first = reads(&audit_records(&app, "vaccination-coverage").await);
    // A second view reads the 20-row preview again, not the overview.
    let _ = html(&app, "/datasets/vaccination-coverage").await;
    let second = reads(&audit_records(&app, "vaccination-coverage").await);
    assert_eq!(second, first + 1, "the overview is kept, not read again");

    // A visitor who may not read the rows sees no overview.
    let page = html(&app, "/datasets/hospital-admissions").await;
    assert!(!page.contains("Your columns at a glance"));
}
