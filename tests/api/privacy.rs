//! Issue 12: differentially private statistics with a budget per project.
//! A `mode = "dp"` grant answers only noisy aggregates over declared
//! categories, each paid from the grant's budget before it leaves; the
//! noise has the promised scale, the budget cannot be overspent (not even
//! by many answers at once) and survives SIGKILL.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use serde_json::{Value, json};

use crate::helpers::{
    BinaryServer, TestApp, aggregate, arrow_batches, column_names, problem, rows, spawn_app,
    strings,
};
use sluice::auth::Role;

const ID: &str = "hospital-admissions";

/// A member of the organisation whose grant has a budget of 2 and spends
/// at most 0.5 per answer.
fn network(app: &TestApp) -> String {
    app.token_in(
        "dana@network.example",
        &[Role::Researcher],
        "DP Research Network",
    )
}

/// The calibration grant: a budget so large that answers are nearly exact
/// unless the request asks for a small epsilon.
fn calibration(app: &TestApp) -> String {
    app.token("calibration@dp.example", &[Role::Researcher], &[])
}

fn numbers(batches: &[RecordBatch], column: &str) -> Vec<f64> {
    strings(batches, column)
        .iter()
        .map(|v| v.parse().expect("a number"))
        .collect()
}

fn header(response: &reqwest::Response, name: &str) -> f64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

/// Rows per value of `column`, from the file itself.
fn true_counts(app: &TestApp, columns: &[&str]) -> HashMap<Vec<String>, i64> {
    let values: Vec<Vec<String>> = columns.iter().map(|c| app.raw_column(ID, c)).collect();
    let mut counts = HashMap::new();
    for r in 0..values[0].len() {
        let key = values.iter().map(|v| v[r].clone()).collect();
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

async fn budget(app: &TestApp, token: &str) -> Value {
    let body: Value = app
        .get_json(&format!("/v1/datasets/{ID}"), Some(token))
        .await;
    body["access"]["privacy_budget"].clone()
}

#[tokio::test]
async fn counts_carry_noise_of_the_promised_scale_centred_on_the_truth() {
    let app = spawn_app().await;
    let token = calibration(&app);
    let truth = true_counts(&app, &["region", "sex"]);
    let (mut errors, mut inside) = (Vec::new(), 0usize);
    for _ in 0..100 {
        let response = aggregate(
            &app,
            &token,
            &[("group_by", "region,sex"), ("epsilon", "0.5")],
        )
        .await;
        assert!((header(&response, "sluice-privacy-epsilon") - 0.5).abs() < 1e-9);
        assert_eq!(
            response.headers()["sluice-privacy-noise"].to_str().unwrap(),
            "count=2"
        );
        let batches = arrow_batches(response).await;
        assert_eq!(
            column_names(&batches),
            ["region", "sex", "count", "count_ci_low", "count_ci_high"]
        );
        let (regions, sexes) = (strings(&batches, "region"), strings(&batches, "sex"));
        let counts = numbers(&batches, "count");
        let (low, high) = (
            numbers(&batches, "count_ci_low"),
            numbers(&batches, "count_ci_high"),
        );
        assert_eq!(counts.len(), 12, "every declared region × sex");
        for i in 0..counts.len() {
            let exact = truth[&vec![regions[i].clone(), sexes[i].clone()]] as f64;
            errors.push(counts[i] - exact);
            // The 95 % interval of discrete Laplace noise of scale 2 is ±6.
            assert_eq!((counts[i] - low[i], high[i] - counts[i]), (6.0, 6.0));
            if (low[i]..=high[i]).contains(&exact) {
                inside += 1;
            }
        }
    }
    let n = errors.len() as f64;
    let mean = errors.iter().sum::<f64>() / n;
    let variance = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n;
    // Discrete Laplace of scale b = 1/ε = 2: variance 2q/(1−q)², q = e^(−1/b).
    let q = (-0.5f64).exp();
    let expected = 2.0 * q / (1.0 - q).powi(2);
    assert!(mean.abs() < 0.4, "noise is centred: mean error {mean}");
    assert!(
        (variance / expected - 1.0).abs() < 0.2,
        "variance {variance}, expected {expected}"
    );
    // Not every answer is exact: noise is really drawn.
    assert!(errors.iter().filter(|e| **e != 0.0).count() as f64 > n * 0.5);
    let coverage = inside as f64 / n;
    assert!(coverage > 0.93, "95 % intervals hold the truth {coverage}");
}

#[tokio::test]
async fn groups_are_the_declared_categories_whether_or_not_any_row_has_them() {
    let app = spawn_app().await;
    let token = calibration(&app);
    let truth = true_counts(&app, &["icd10_chapter"]);
    let batches =
        arrow_batches(aggregate(&app, &token, &[("group_by", "icd10_chapter")]).await).await;
    let chapters = strings(&batches, "icd10_chapter");
    // The steward's list, in its order: 22 chapters, though the sample has
    // rows in only some of them.
    assert_eq!(chapters.len(), 22);
    assert_eq!(&chapters[..4], ["I", "II", "III", "IV"]);
    assert!(truth.len() < 22, "some chapters have no rows");
    for (chapter, count) in chapters.iter().zip(numbers(&batches, "count")) {
        let exact = truth.get(&vec![chapter.clone()]).copied().unwrap_or(0) as f64;
        // ε = 10000 per answer: noise this small is zero.
        assert_eq!(count, exact, "chapter {chapter}");
    }
    // At a real epsilon an empty chapter is noisy like any other.
    let mut empty_values = Vec::new();
    for _ in 0..20 {
        let batches = arrow_batches(
            aggregate(
                &app,
                &token,
                &[("group_by", "icd10_chapter"), ("epsilon", "0.2")],
            )
            .await,
        )
        .await;
        assert_eq!(rows(&batches), 22);
        empty_values.push(numbers(&batches, "count")[0]);
    }
    assert!(
        empty_values.iter().any(|v| *v != 0.0),
        "chapter I (no rows) is released with noise: {empty_values:?}"
    );
}

#[tokio::test]
async fn sums_and_means_clamp_to_the_stewards_bounds_and_need_them() {
    let app = spawn_app().await;
    let token = calibration(&app);
    let admin = app.admin();
    let patch = |body: Value| {
        app.client
            .patch(app.url(&format!("/v1/datasets/{ID}")))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    let edit = patch(json!({"columns": [{"name": "length_of_stay", "bounds": [0, 10]}]}))
        .await
        .unwrap();
    assert_eq!(edit.status(), 200, "{}", edit.text().await.unwrap());

    let regions = app.raw_column(ID, "region");
    let stays = app.raw_column(ID, "length_of_stay");
    let mut clamped: HashMap<&str, (i64, i64)> = HashMap::new();
    for (region, stay) in regions.iter().zip(&stays) {
        let entry = clamped.entry(region.as_str()).or_default();
        entry.0 += stay.parse::<i64>().unwrap().min(10);
        entry.1 += 1;
    }
    assert!(stays.iter().any(|s| s.parse::<i64>().unwrap() > 10));
    let batches = arrow_batches(
        aggregate(
            &app,
            &token,
            &[
                ("group_by", "region"),
                ("measures", "sum(length_of_stay),mean(length_of_stay)"),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(
        column_names(&batches),
        [
            "region",
            "sum_length_of_stay",
            "sum_length_of_stay_ci_low",
            "sum_length_of_stay_ci_high",
            "mean_length_of_stay",
            "mean_length_of_stay_ci_low",
            "mean_length_of_stay_ci_high",
        ]
    );
    let names = strings(&batches, "region");
    let (sums, means) = (
        numbers(&batches, "sum_length_of_stay"),
        numbers(&batches, "mean_length_of_stay"),
    );
    for i in 0..names.len() {
        let (sum, n) = clamped[names[i].as_str()];
        assert_eq!(
            sums[i], sum as f64,
            "{}: each stay counts at most 10",
            names[i]
        );
        assert!((means[i] - sum as f64 / n as f64).abs() < 1e-9);
        assert!((0.0..=10.0).contains(&means[i]));
    }

    // Without bounds a column cannot be summed: as if it did not exist.
    let edit = patch(json!({"columns": [{"name": "length_of_stay", "bounds": null}]}))
        .await
        .unwrap();
    assert_eq!(edit.status(), 200);
    let body = problem(
        aggregate(&app, &token, &[("measures", "sum(length_of_stay)")]).await,
        400,
        "unknown-column",
    )
    .await;
    assert_eq!(body["column"], "length_of_stay");
}

#[tokio::test]
async fn every_answer_is_paid_from_the_projects_budget_until_it_is_spent() {
    let app = spawn_app().await;
    let token = network(&app);
    // A colleague in the same organisation spends from the same budget.
    let colleague = app.token_in(
        "eli@network.example",
        &[Role::Researcher],
        "DP Research Network",
    );
    let before = budget(&app, &token).await;
    assert_eq!(
        before,
        json!({"epsilon": 2.0, "epsilon_per_query": 0.5, "spent": 0.0, "remaining": 2.0})
    );
    problem(app.data(ID, &[], Some(&token)).await, 403, "aggregate-only").await;

    let mut remaining = Vec::new();
    for (who, epsilon) in [
        (&token, None),
        (&colleague, Some("0.25")),
        (&token, Some("0.5")),
        (&colleague, Some("0.5")),
    ] {
        let mut query = vec![("group_by", "sex")];
        if let Some(e) = epsilon {
            query.push(("epsilon", e));
        }
        let response = aggregate(&app, who, &query).await;
        assert_eq!(response.status(), 200);
        remaining.push(header(&response, "sluice-privacy-budget-remaining"));
    }
    let expect = [1.5, 1.25, 0.75, 0.25];
    for (got, want) in remaining.iter().zip(expect) {
        assert!((got - want).abs() < 1e-9, "{remaining:?}");
    }
    // More than one answer may spend: refused, and costs nothing.
    problem(
        aggregate(&app, &token, &[("epsilon", "0.75")]).await,
        400,
        "invalid-parameter",
    )
    .await;
    // The default would overspend.
    let body = problem(
        aggregate(&app, &token, &[]).await,
        403,
        "privacy-budget-exhausted",
    )
    .await;
    assert!((body["epsilon_remaining"].as_f64().unwrap() - 0.25).abs() < 1e-9);
    assert_eq!(body["grant"], "dp-network");
    assert!(body["detail"].as_str().unwrap().contains("epsilon="));
    let last = aggregate(&app, &token, &[("epsilon", "0.25")]).await;
    assert_eq!(last.status(), 200);
    let body = problem(
        aggregate(&app, &token, &[("epsilon", "0.01")]).await,
        403,
        "privacy-budget-exhausted",
    )
    .await;
    assert_eq!(body["epsilon_remaining"], 0.0);
    let after = budget(&app, &token).await;
    assert!((after["spent"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    assert_eq!(after["remaining"], 0.0);

    // The audit trail has each spend.
    let audit: Value = app
        .get_json(&format!("/v1/audit?dataset={ID}"), Some(&app.admin()))
        .await;
    let spends: Vec<f64> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["phase"] == "decision")
        .filter_map(|r| r["privacy"]["epsilon"].as_f64())
        .collect();
    assert_eq!(spends.len(), 5, "{spends:?}");
    assert!((spends.iter().sum::<f64>() - 2.0).abs() < 1e-9);
}

#[tokio::test]
async fn answers_at_once_never_overspend() {
    let app = spawn_app().await;
    // Twelve members of the project ask at the same moment.
    let members: Vec<String> = (0..12)
        .map(|i| {
            app.token_in(
                &format!("member{i}@network.example"),
                &[Role::Researcher],
                "DP Research Network",
            )
        })
        .collect();
    let token = network(&app);
    let answers = futures::future::join_all(
        members
            .iter()
            .map(|member| aggregate(&app, member, &[("group_by", "region")])),
    )
    .await;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    let exhausted = answers.iter().filter(|r| r.status() == 403).count();
    assert_eq!(
        (ok, exhausted),
        (4, 8),
        "a budget of 2 pays four answers of 0.5"
    );
    assert_eq!(budget(&app, &token).await["remaining"], 0.0);
}

#[tokio::test]
async fn what_dp_access_cannot_ask_for_is_refused_before_anything_is_spent() {
    let app = spawn_app().await;
    let token = network(&app);
    for (query, kind) in [
        (
            vec![("measures", "min(length_of_stay)")],
            "invalid-parameter",
        ),
        (vec![("group_by", "postcode_district")], "invalid-parameter"),
        (vec![("group_by", "patient_id")], "unknown-column"),
        (vec![("measures", "sum(age)")], "unknown-column"),
        (vec![("epsilon", "0")], "invalid-parameter"),
        (vec![("epsilon", "lots")], "invalid-parameter"),
        (vec![("filter", "no_such = 1")], "unknown-column"),
    ] {
        problem(aggregate(&app, &token, &query).await, 400, kind).await;
    }
    let body = problem(
        aggregate(&app, &token, &[("group_by", "postcode_district")]).await,
        400,
        "invalid-parameter",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("categories"));
    assert_eq!(budget(&app, &token).await["remaining"], 2.0);
    // epsilon means nothing outside DP access.
    problem(
        aggregate(&app, &crate::helpers::agency(&app), &[("epsilon", "0.5")]).await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn spent_budget_survives_sigkill() {
    let mut server = BinaryServer::with_samples("policy_poll_ms = 60000", 300, None);
    crate::helpers::write_policy(
        server.policy(),
        r#"
[[grant]]
id = "dp-network"
organisations = ["DP Research Network"]
dataset = "hospital-admissions"
purpose = "Differentially private statistics"
mode = "dp"
epsilon = 2.0
epsilon_per_query = 0.5
"#,
    );
    server.start().await;
    let (client, base) = (server.client.clone(), server.base.clone());
    let token = server.token(
        "dana@network.example",
        &[Role::Researcher],
        &[],
        Some("DP Research Network"),
    );
    let ask = || {
        client
            .get(format!("{base}/v1/datasets/{ID}/aggregate?group_by=sex"))
            .bearer_auth(&token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(ask().await.unwrap().status(), 200);
    }
    server.kill(); // SIGKILL, no chance to flush anything

    server.start().await;
    let meta = server
        .get_json(&format!("/v1/datasets/{ID}"), Some(&token))
        .await;
    assert_eq!(meta["access"]["privacy_budget"]["remaining"], 0.5);
    assert_eq!(ask().await.unwrap().status(), 200);
    assert_eq!(ask().await.unwrap().status(), 403);
    server.kill();
}

/// Red-team finding: `admission_date + (length_of_stay - length_of_stay +
/// 106752)` overflows only on rows that reach it, so whether an answer was
/// an error told, for free, whether any row matched the rest of the filter.
/// Such filters are refused before anything is read or spent, whatever the
/// rows; and a refusal is the same whether rows match or not.
#[tokio::test]
async fn a_filter_that_could_fail_on_some_rows_is_refused_whatever_the_rows() {
    let app = spawn_app().await;
    let token = network(&app);
    let matches_some = "region = 'north'";
    let nobody = crate::helpers::chapter_without_rows(&app, ID);
    let matches_none = format!("icd10_chapter = '{nobody}'");
    for risky in [
        "admission_date + (length_of_stay - length_of_stay + 106752) > '2000-01-01'",
        "admission_date - length_of_stay < '2000-01-01'",
        "region LIKE discharge_destination",
        "-admission_date IS NULL",
    ] {
        let mut answers = Vec::new();
        for p in [matches_some, matches_none.as_str()] {
            let filter = format!("({p}) AND {risky}");
            let response = aggregate(&app, &token, &[("filter", filter.as_str())]).await;
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            answers.push((status, body["type"].clone(), body["detail"].clone()));
        }
        assert_eq!(
            answers[0], answers[1],
            "{risky}: the same refusal either way"
        );
        assert_eq!(answers[0].0, 400, "{risky}: {:?}", answers[0]);
    }
    // Refused before the ledger: nothing was spent.
    assert_eq!(budget(&app, &token).await["remaining"], 2.0);
    // Bins and months, by edge and label, are what may be asked.
    let ok = aggregate(
        &app,
        &token,
        &[(
            "filter",
            "length_of_stay >= 2 AND admission_date >= '2019-06'",
        )],
    )
    .await;
    assert_eq!(ok.status(), 200);
}

/// Second red-team pass: whatever a filter computes, its answer is the same
/// kind of answer whether the rest of the filter matches rows or not, for
/// DP and aggregate-only callers alike. Each expression here once failed
/// only on the rows that reached it.
#[tokio::test]
async fn no_filter_fails_only_when_some_row_reaches_it() {
    let app = spawn_app().await;
    // The DP caller spends the least an answer may; the aggregate-only
    // caller has no epsilon to give.
    let callers = [
        (network(&app), Some("0.000001")),
        (crate::helpers::agency(&app), None),
    ];
    let risky = [
        // A number converted to a date per row overflows.
        "admission_date > age + 3000000000",
        "age + 3000000000 < admission_date",
        "admission_date IN (age + 3000000000)",
        "admission_date BETWEEN age + 3000000000 AND age",
        // Negating the smallest integer, as a constant.
        "-(-9223372036854775807 - 1) > 0",
        "(-9223372036854775807 - 1) / -1 > 0",
        "(-9223372036854775807 - 1) / (age - age - 1) > 0",
        // Constants of two types: converted per row.
        "'x' = 5",
        "age IN ('x', 1)",
        // Arithmetic that is not plain numbers.
        "admission_date + (age - age + 106752) > '2000-01-01'",
        "region LIKE discharge_destination",
        // Third pass: IN and BETWEEN give all members one type, so a text
        // literal beside a number converted the text column per row.
        "'5' IN (region, age)",
        "'5' BETWEEN region AND age",
        "'5' NOT IN (age, region)",
        "'0' IN (sex, length(region))",
        "'5' IN (age * 2, region)",
        "'2020-01-01' IN (region, admission_date)",
        "'2020-01-01' BETWEEN sex AND admission_date",
        // And what has always been safe, for contrast.
        "age / (age - age) IS NULL",
        "length_of_stay % 0 IS NULL",
    ];
    let nobody = format!(
        "icd10_chapter = '{}'",
        crate::helpers::chapter_without_rows(&app, ID)
    );
    for (token, epsilon) in &callers {
        for r in risky {
            let mut answers = Vec::new();
            for p in ["region = 'north'", nobody.as_str()] {
                // `IS TRUE` keeps the optimiser from reordering the two.
                let filter = format!("(({p}) AND ({r})) IS TRUE");
                let mut query = vec![("filter", filter.as_str())];
                if let Some(e) = epsilon {
                    query.push(("epsilon", e));
                }
                let response = aggregate(&app, token, &query).await;
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                // The kind of answer (a refusal's detail quotes the
                // caller's own text, which differs here).
                answers.push((status, body["type"].clone()));
            }
            assert_eq!(
                answers[0], answers[1],
                "{r}: the answer depends on the rows"
            );
            assert_eq!(answers[0].0, 400, "{r}: tables take no expressions");
        }
    }
}
