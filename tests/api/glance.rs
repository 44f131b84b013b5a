//! "Your columns at a glance" on a dataset's page (issue 33, "look before
//! you ask"): from the rows the visitor may read, kept per version and
//! access so a page view does not read the data again, and nothing for a
//! visitor who may not read rows.

use crate::helpers::{audit_records, spawn_app};

/// A page as a browser with these cookies gets it.
async fn html(app: &crate::helpers::TestApp, path: &str, cookies: &str) -> String {
    crate::web::page(app, path, cookies)
        .await
        .text()
        .await
        .unwrap()
}

/// The aggregate-only organisation's released counts by region.
async fn region_counts(app: &crate::helpers::TestApp) -> Vec<arrow::array::RecordBatch> {
    use crate::helpers::{agency, aggregate, arrow_batches};
    arrow_batches(
        aggregate(
            app,
            &agency(app),
            &[("group_by", "region"), ("measures", "count")],
        )
        .await,
    )
    .await
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
    let page = html(&app, "/datasets/vaccination-coverage", "").await;
    assert!(page.contains("Your columns at a glance"), "{page}");
    assert!(page.contains("From the first "), "{page}");
    let first = reads(&audit_records(&app, "vaccination-coverage").await);
    // A second view reads the 20-row preview again; the kept overview is
    // shown again, and recorded as shown.
    let _ = html(&app, "/datasets/vaccination-coverage", "").await;
    let records = audit_records(&app, "vaccination-coverage").await;
    assert_eq!(reads(&records), first + 2);
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "page overview, kept" && r["event"] == "data"),
        "{records:?}"
    );

    // A visitor who may not read the rows sees no overview.
    let page = html(&app, "/datasets/hospital-admissions", "").await;
    assert!(!page.contains("Your columns at a glance"));
}

/// The counts an aggregate-only visitor's page shows are the ones their own
/// aggregate answers release, read through the same audited path; nothing
/// from single rows.
#[tokio::test]
async fn an_aggregate_only_visitor_sees_the_counts_their_answers_release() {
    use crate::helpers::strings;
    let app = spawn_app().await;
    let session = crate::web::dev_sign_in(&app, "stats@agency.example", "").await;
    let page = html(&app, "/datasets/hospital-admissions", &session).await;
    assert!(page.contains("Your fields at a glance"), "{page}");
    assert!(!page.contains("Your columns at a glance"), "{page}");
    assert!(!page.contains("From the first "), "{page}");

    let released = region_counts(&app).await;
    let (regions, counts) = (strings(&released, "region"), strings(&released, "count"));
    assert!(!regions.is_empty());
    let region_table = &page[page.find("<code>region</code>").expect("a region table")..];
    let region_table = &region_table[..region_table.find("</table>").unwrap()];
    for (region, count) in regions.iter().zip(&counts) {
        let cell = format!("<th scope=\"row\">{region}</th><td>{count}</td>");
        assert!(region_table.contains(&cell), "{cell} in {region_table}");
    }
    let records = audit_records(&app, "hospital-admissions").await;
    assert!(
        records.iter().any(|r| r["event"] == "aggregate"
            && r["subject"] == "stats@agency.example"
            && r["phase"] == "decision"),
        "the page's counts are audited as the visitor's aggregate answers"
    );
    assert!(
        !records
            .iter()
            .any(|r| r["event"] == "data" && r["subject"] == "stats@agency.example")
    );

    // The disclosure rules tighten: the page releases no more than the
    // answers do now (nothing here: no category holds a million records).
    let tighter = crate::helpers::TEST_POLICY.to_owned() + "\n[disclosure]\nmin_count = 1000000\n";
    crate::helpers::write_policy(&app.settings.storage.policy, &tighter);
    let mut withheld = false;
    for _ in 0..50 {
        if crate::helpers::rows(&region_counts(&app).await) == 0 {
            withheld = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(withheld, "the tighter policy is in force");
    let page = html(&app, "/datasets/hospital-admissions", &session).await;
    assert!(!page.contains("Your fields at a glance"), "{page}");
}

/// A DP visitor's page names the fields and their declared categories, and
/// spends none of their budget.
#[tokio::test]
async fn a_dp_visitor_sees_fields_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("dp-policy.toml");
    crate::helpers::write_policy(
        &policy,
        format!(
            "{}\n[[grant]]\nid = \"ohrn\"\norganisations = [\"Open Health Research Network\"]\ndataset = \"hospital-admissions\"\npurpose = \"DP statistics\"\nmode = \"dp\"\nepsilon = 2.0\nepsilon_per_query = 0.5\nproject = \"ohrn\"\n",
            crate::helpers::TEST_POLICY
        ),
    );
    let app = crate::helpers::spawn_app_with(crate::helpers::ROWS, |s| {
        s.storage.policy = policy.clone();
    })
    .await;
    let session = crate::web::dev_sign_in(&app, "dp@network.example", "").await;
    let page = html(&app, "/datasets/hospital-admissions", &session).await;
    assert!(page.contains("Your fields at a glance"), "{page}");
    assert!(page.contains("spends privacy budget"), "{page}");
    assert!(
        page.contains("north, south, east, west, midlands, london"),
        "{page}"
    );
    let records = audit_records(&app, "hospital-admissions").await;
    assert!(
        !records
            .iter()
            .any(|r| r["subject"] == "dp@network.example" && r["phase"] == "decision"),
        "a page view reads nothing under a DP grant: {records:?}"
    );
}
