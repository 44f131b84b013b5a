//! Issue 5: pseudonyms, organisations, aggregate-only access and live policy
//! reload (what aggregates release is in `aggregates.rs`, visas in
//! `visas.rs`).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use sluice::auth::Role;

use crate::helpers::{
    TestApp, agency, arrow_batches, problem, rows, spawn_app, spawn_app_with, strings,
};

#[tokio::test]
async fn pseudonyms_link_within_a_project_and_not_across() {
    let app = spawn_app().await;
    let both = app.token(
        "dan@nhs.example",
        &[Role::Researcher],
        &["nhs-north", "nhs-audit"],
    );
    let id = "hospital-admissions";
    problem(app.data(id, &[], Some(&both)).await, 400, "grant-ambiguous").await;
    let fetch = |grant: &'static str| {
        let app = &app;
        let both = both.clone();
        async move {
            let b = arrow_batches(
                app.data(
                    id,
                    &[("columns", "patient_id"), ("grant", grant)],
                    Some(&both),
                )
                .await,
            )
            .await;
            strings(&b, "patient_id")
        }
    };
    let planning = fetch("north-planning").await;
    let again = fetch("north-planning").await;
    let audit = fetch("north-audit").await;
    assert_eq!(
        planning, again,
        "the same project gives the same pseudonyms"
    );
    assert_eq!(planning.len(), audit.len());
    assert!(
        planning
            .iter()
            .all(|p| p.len() == 32 && p.chars().all(|c| c.is_ascii_hexdigit()))
    );
    assert!(
        planning.iter().zip(&audit).all(|(a, b)| a != b),
        "projects must be unlinkable"
    );
    // Patients with several admissions keep one pseudonym: linkage works.
    let mut seen = HashMap::new();
    for p in &planning {
        *seen.entry(p).or_insert(0) += 1;
    }
    assert!(seen.values().any(|&n| n > 1));
    // A filter on a raw id finds nothing; one on the pseudonym finds the rows.
    let raw = app.raw_column(id, "patient_id")[0].clone();
    let by_raw = arrow_batches(
        app.data(
            id,
            &[
                ("filter", &format!("patient_id = '{raw}'")),
                ("grant", "north-planning"),
            ],
            Some(&both),
        )
        .await,
    )
    .await;
    assert_eq!(rows(&by_raw), 0);
    let pseudo = planning[0].clone();
    let by_pseudo = arrow_batches(
        app.data(
            id,
            &[
                ("filter", &format!("patient_id = '{pseudo}'")),
                ("grant", "north-planning"),
            ],
            Some(&both),
        )
        .await,
    )
    .await;
    assert_eq!(rows(&by_pseudo), seen[&pseudo]);
}

/// Issue 32: two projects asking the same question got the same rows in
/// the same order, so zipping the answers linked every pseudonym of one
/// project to the other's. Rows now come in each project's own order.
#[tokio::test]
async fn two_projects_get_the_same_rows_in_unrelated_orders() {
    let app = spawn_app().await;
    let both = app.token(
        "dan@nhs.example",
        &[Role::Researcher],
        &["nhs-north", "nhs-audit"],
    );
    // Columns both grants show alike (planning unmasks the admission date).
    let columns = "patient_id,age_band,sex,length_of_stay";
    let fetch = |grant: &'static str, paged: bool| {
        let app = &app;
        let both = both.clone();
        async move {
            let mut query = vec![("columns", columns), ("grant", grant)];
            if paged {
                query.push(("limit", "1000"));
            }
            let b = arrow_batches(app.data("hospital-admissions", &query, Some(&both)).await).await;
            let rest: Vec<String> = (0..rows(&b))
                .map(|i| {
                    ["age_band", "sex", "length_of_stay"]
                        .iter()
                        .map(|c| strings(&b, c)[i].clone())
                        .collect::<Vec<_>>()
                        .join("|")
                })
                .collect();
            (strings(&b, "patient_id"), rest)
        }
    };
    for paged in [false, true] {
        let (planning, planning_rows) = fetch("north-planning", paged).await;
        let (audit, audit_rows) = fetch("north-audit", paged).await;
        assert!(planning.len() > 50, "{}", planning.len());
        // The same rows...
        let (mut a, mut b) = (planning_rows.clone(), audit_rows.clone());
        a.sort();
        b.sort();
        assert_eq!(a, b, "both projects see the same rows");
        // ...in orders that do not line up.
        let aligned = planning_rows
            .iter()
            .zip(&audit_rows)
            .filter(|(a, b)| a == b)
            .count();
        assert!(
            aligned * 4 < planning_rows.len(),
            "{aligned} of {} rows at the same place (paged: {paged})",
            planning_rows.len()
        );
        // Each project's order is sorted by its own pseudonyms, and the
        // same request gives the same order.
        for pseudonyms in [&planning, &audit] {
            let mut sorted = pseudonyms.clone();
            sorted.sort();
            assert_eq!(*pseudonyms, sorted);
        }
        assert_eq!(fetch("north-planning", paged).await.0, planning);
    }
    // Row by row: page k of one project is not page k of the other (pages
    // are cut from each project's own order), so fetching "row k" one at
    // a time links nothing either.
    let row = |grant: &'static str, k: usize| {
        let app = &app;
        let both = both.clone();
        async move {
            let offset = k.to_string();
            let query = [
                ("columns", columns),
                ("grant", grant),
                ("limit", "1"),
                ("offset", offset.as_str()),
            ];
            let b = arrow_batches(app.data("hospital-admissions", &query, Some(&both)).await).await;
            ["age_band", "sex", "length_of_stay"]
                .iter()
                .map(|c| strings(&b, c)[0].clone())
                .collect::<Vec<_>>()
        }
    };
    let mut same = 0;
    for k in 0..12 {
        if row("north-planning", k).await == row("north-audit", k).await {
            same += 1;
        }
    }
    assert!(same <= 4, "{same} of 12 single-row pages were the same row");
    let r = app
        .data(
            "hospital-admissions",
            &[
                ("columns", columns),
                ("grant", "north-audit"),
                ("offset", "5"),
            ],
            Some(&both),
        )
        .await;
    let body = problem(r, 400, "invalid-parameter").await;
    assert!(
        body["detail"].as_str().unwrap().contains("give a limit"),
        "{body}"
    );
}

#[tokio::test]
async fn an_organisation_grant_applies_to_its_members_only() {
    let app = spawn_app().await;
    let metadata: Value = app
        .get_json("/v1/datasets/hospital-admissions", Some(&agency(&app)))
        .await;
    assert_eq!(metadata["access"]["basis"]["id"], "agency-statistics");
    assert_eq!(metadata["access"]["mode"], "aggregate");
    let outsider = app.researcher();
    let metadata: Value = app
        .get_json("/v1/datasets/hospital-admissions", Some(&outsider))
        .await;
    assert_eq!(metadata["access"]["reason"], "grant-required");
}

#[tokio::test]
async fn the_policy_reloads_when_its_file_changes_and_bad_files_are_refused() {
    let app = spawn_app_with(crate::helpers::ROWS, |s| s.server.policy_poll_ms = 100).await;
    let rita = app.researcher();
    let id = "hospital-admissions";
    problem(
        app.data(id, &[("limit", "1")], Some(&rita)).await,
        403,
        "grant-required",
    )
    .await;
    let policy_file = app.settings.storage.policy.clone();
    let granted = format!(
        "{}\n[[grant]]\nid = \"rita\"\nsubjects = [\"rita@uni.example\"]\ndataset = \"{id}\"\npurpose = \"p\"\n",
        crate::helpers::TEST_POLICY
    );
    crate::helpers::write_policy(&policy_file, &granted);
    wait_for(&app, id, &rita, 200).await;
    // A broken file (an unknown key) is refused; the grant stays in force.
    std::fs::write(
        &policy_file,
        "[[grant]]\nid = \"broken\"\nsubjects = [\"x\"]\ndataset = \"hospital-admissions\"\npurpose = \"p\"\nexpiry = 2030-01-01\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        app.data(id, &[("limit", "1")], Some(&rita)).await.status(),
        200
    );
    crate::helpers::write_policy(&policy_file, crate::helpers::TEST_POLICY);
    wait_for(&app, id, &rita, 403).await;
}

async fn wait_for(app: &TestApp, id: &str, token: &str, status: u16) {
    for _ in 0..50 {
        if app.data(id, &[("limit", "1")], Some(token)).await.status() == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the policy change was not picked up (wanted {status})");
}
