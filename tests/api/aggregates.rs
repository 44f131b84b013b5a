//! Issue 11: aggregate-only access, attacked as an outsider with only the
//! aggregate-only `agency-statistics` grant would: raw buffers, labels of
//! small groups, reconstruction by grouping, measures that undo each
//! other's rounding, differencing, min/max, and the edge cases that used to
//! answer 500. Every Arrow answer also goes through the raw-buffer scan in
//! `helpers::arrow_batches`.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use serde_json::json;

use crate::helpers::{
    TestApp, agency, aggregate, arrow_batches, chapter_without_rows, column_names, decode_parquet,
    problem, rows, spawn_app, spawn_app_with, strings,
};

const ID: &str = "hospital-admissions";

/// Five quasi-identifiers on which some people in the sample are unique.
const QUASI: [&str; 5] = [
    "region",
    "age_band",
    "sex",
    "icd10_chapter",
    "admission_method",
];

/// The raw rows of the sample, read from the file: the truth an attacker
/// tries to recover.
struct Truth {
    columns: HashMap<String, Vec<String>>,
    len: usize,
}

impl Truth {
    fn read(app: &TestApp) -> Self {
        let names = [
            "region",
            "age_band",
            "sex",
            "icd10_chapter",
            "admission_method",
            "length_of_stay",
            "discharge_destination",
        ];
        let columns: HashMap<String, Vec<String>> = names
            .iter()
            .map(|n| (n.to_string(), app.raw_column(ID, n)))
            .collect();
        let len = columns["region"].len();
        Self { columns, len }
    }

    fn value(&self, column: &str, row: usize) -> &str {
        &self.columns[column][row]
    }

    /// Rows no other row equals in `columns`.
    fn unique_on<'a>(&'a self, columns: &'a [&str]) -> impl Iterator<Item = usize> + 'a {
        (0..self.len).filter(move |&r| self.matching(columns, r) == 1)
    }

    /// A filter for row `row`'s values in `columns`.
    fn equal_to(&self, columns: &[&str], row: usize) -> String {
        columns
            .iter()
            .map(|c| format!("{c} = '{}'", self.value(c, row)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    /// Rows whose values in `columns` equal row `row`'s.
    fn matching(&self, columns: &[&str], row: usize) -> usize {
        (0..self.len)
            .filter(|&r| {
                columns
                    .iter()
                    .all(|c| self.value(c, r) == self.value(c, row))
            })
            .count()
    }
}

async fn released(app: &TestApp, token: &str, query: &[(&str, &str)]) -> Vec<RecordBatch> {
    arrow_batches(aggregate(app, token, query).await).await
}

fn numbers(batches: &[RecordBatch], column: &str) -> Vec<Option<f64>> {
    strings(batches, column)
        .iter()
        .map(|v| (v != "NULL").then(|| v.parse().expect("a number")))
        .collect()
}

#[tokio::test]
async fn small_groups_are_not_released_at_all_and_every_label_describes_ten_people() {
    let app = spawn_app_with(3000, |_| {}).await;
    let token = agency(&app);
    let truth = Truth::read(&app);
    let dims = ["region", "age_band", "sex", "admission_method"];
    let group_by = dims.join(",");
    let query = [
        ("group_by", group_by.as_str()),
        ("measures", "count,sum(length_of_stay),mean(length_of_stay)"),
    ];
    let response = aggregate(&app, &token, &query).await;
    assert!(
        response.headers()["sluice-disclosure"]
            .to_str()
            .unwrap()
            .contains("min_count=10")
    );
    let batches = arrow_batches(response).await;
    assert_eq!(
        column_names(&batches),
        [
            "region",
            "age_band",
            "sex",
            "admission_method",
            "count",
            "sum_length_of_stay",
            "mean_length_of_stay"
        ],
        "no `suppressed` column: withheld groups are simply absent"
    );
    // 3,000 rows over 192 possible cells: some are small, some are not.
    let released_rows = rows(&batches);
    assert!(released_rows > 0, "some large cells are released");
    let all_cells: std::collections::HashSet<Vec<&str>> = (0..truth.len)
        .map(|r| dims.iter().map(|d| truth.value(d, r)).collect())
        .collect();
    assert!(
        released_rows < all_cells.len() / 2,
        "small cells are withheld"
    );
    let labels: Vec<Vec<String>> = dims.iter().map(|d| strings(&batches, d)).collect();
    let counts = numbers(&batches, "count");
    let sums = numbers(&batches, "sum_length_of_stay");
    let means = numbers(&batches, "mean_length_of_stay");
    for r in 0..released_rows {
        let people = (0..truth.len)
            .filter(|&t| {
                dims.iter()
                    .zip(&labels)
                    .all(|(d, l)| truth.value(d, t) == l[r])
            })
            .count();
        assert!(people >= 10, "a released label describes {people} people");
        let count = counts[r].unwrap();
        assert_eq!(count % 5.0, 0.0, "counts are rounded to 5");
        // Fixed cell-key noise (scale 2), then rounding to 5.
        assert!((count - people as f64).abs() <= 20.0, "{count} vs {people}");
        if let (Some(sum), Some(mean)) = (sums[r], means[r])
            && sum != 0.0
        {
            assert_eq!(sum % 5.0, 0.0, "sums are rounded to 5");
            // sum / mean gives back the released count, not the exact one.
            assert!(
                ((sum / mean) - count).abs() < 1e-6,
                "{sum} / {mean} != {count}"
            );
        }
    }
}

#[tokio::test]
async fn grouping_is_limited_to_what_the_steward_allows() {
    let app = spawn_app().await;
    let token = agency(&app);
    // The linkable pseudonym, an exact value column and a direct
    // identifier: all the same error as a column that does not exist.
    for column in ["patient_id", "nhs_number", "no_such_column"] {
        let body = problem(
            aggregate(&app, &token, &[("group_by", column)]).await,
            400,
            "unknown-column",
        )
        .await;
        assert_eq!(body["column"], column);
    }
    // Nor may a filter pick people out by pseudonym: under aggregate-only
    // access it is as if the column were not there.
    let body = problem(
        aggregate(
            &app,
            &token,
            &[("group_by", "region"), ("filter", "patient_id < '8'")],
        )
        .await,
        400,
        "unknown-column",
    )
    .await;
    assert_eq!(body["column"], "patient_id");
    // Or walk a count up by exact values: numbers are bins' edges, and a
    // selection names only grouped fields.
    for filter in ["length_of_stay = 14", "length_of_stay >= 8"] {
        problem(
            aggregate(&app, &token, &[("filter", filter)]).await,
            400,
            "invalid-filter",
        )
        .await;
    }
    // Five dimensions are over the default cap of four.
    problem(
        aggregate(
            &app,
            &token,
            &[(
                "group_by",
                "region,age_band,sex,icd10_chapter,admission_method",
            )],
        )
        .await,
        400,
        "invalid-parameter",
    )
    .await;
    // Tables group only by declared categories: a groupable column the
    // steward gave none is refused and told so; dates group by month.
    let body = problem(
        aggregate(&app, &token, &[("group_by", "age")]).await,
        400,
        "invalid-parameter",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("declared categories")
    );
    let months = released(&app, &token, &[("group_by", "admission_date")]).await;
    assert!(!strings(&months, "admission_date").is_empty());
    assert!(
        strings(&months, "admission_date")
            .iter()
            .all(|d| d.len() == 7 && d.starts_with("20"))
    );
    // Measures on masked or hidden columns are unknown columns.
    for column in ["age", "nhs_number", "no_such_col"] {
        let body = problem(
            aggregate(
                &app,
                &token,
                &[
                    ("group_by", "region"),
                    ("measures", &format!("sum({column})")),
                ],
            )
            .await,
            400,
            "unknown-column",
        )
        .await;
        assert_eq!(body["column"], column);
    }
}

#[tokio::test]
async fn a_filter_narrowed_to_one_person_releases_nothing_about_her() {
    let app = spawn_app_with(2000, |_| {}).await;
    let token = agency(&app);
    let truth = Truth::read(&app);
    let four = &QUASI[..4];
    let unique: Vec<usize> = truth.unique_on(four).take(5).collect();
    assert!(
        !unique.is_empty(),
        "the sample has people unique on four attributes"
    );
    let group_by = four.join(",");
    for row in unique {
        let filter = truth.equal_to(four, row);
        let batches = released(
            &app,
            &token,
            &[
                ("filter", filter.as_str()),
                ("group_by", group_by.as_str()),
                ("measures", "count,sum(length_of_stay)"),
            ],
        )
        .await;
        assert_eq!(rows(&batches), 0, "one person's cell is not released");
    }
}

#[tokio::test]
async fn min_and_max_are_single_peoples_values_and_never_released_to_aggregate_only_access() {
    let app = spawn_app().await;
    let token = agency(&app);
    let query = [
        ("group_by", "region"),
        ("measures", "min(length_of_stay),max(length_of_stay)"),
    ];
    for enabled in [false, true] {
        if enabled {
            let edit = app
                .client
                .patch(app.url(&format!("/v1/datasets/{ID}")))
                .bearer_auth(app.admin())
                .json(&json!({"columns": [{"name": "length_of_stay", "order_statistics": true}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(edit.status(), 200, "{}", edit.text().await.unwrap());
        }
        let body = problem(
            aggregate(&app, &token, &query).await,
            400,
            "invalid-parameter",
        )
        .await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("one person's value")
        );
    }
    // Callers who may read rows still get them.
    let rows_caller = arrow_batches(aggregate(&app, &app.alice(), &query).await).await;
    assert!(rows(&rows_caller) > 0);
}

#[tokio::test]
async fn every_format_carries_the_same_released_table() {
    let app = spawn_app_with(3000, |_| {}).await;
    let token = agency(&app);
    let query = |format: &'static str| {
        [
            ("group_by", "region,sex,admission_method"),
            ("measures", "count,sum(length_of_stay),mean(length_of_stay)"),
            ("format", format),
        ]
    };
    let arrow = released(&app, &token, &query("arrow")).await;
    let parquet = aggregate(&app, &token, &query("parquet")).await;
    assert_eq!(parquet.status(), 200);
    let parquet = decode_parquet(parquet.bytes().await.unwrap());
    for column in column_names(&arrow) {
        assert_eq!(
            strings(&arrow, &column),
            strings(&parquet, &column),
            "{column}"
        );
    }
    let csv = aggregate(&app, &token, &query("csv"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), rows(&arrow) + 1);
    assert_eq!(
        csv.lines().next().unwrap(),
        "region,sex,admission_method,count,sum_length_of_stay,mean_length_of_stay"
    );
    let ndjson = aggregate(&app, &token, &query("ndjson"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(ndjson.lines().count(), rows(&arrow));
}

#[tokio::test]
async fn edge_cases_answer_as_a_researcher_expects() {
    let app = spawn_app().await;
    let token = agency(&app);
    // No group_by: one total row.
    let total = released(&app, &token, &[("measures", "count")]).await;
    assert_eq!(rows(&total), 1);
    let count: f64 = strings(&total, "count")[0].parse().unwrap();
    assert!((count - 600.0).abs() <= 20.0, "{count}");
    // A category nobody has: an empty answer that still has its schema.
    let nobody = chapter_without_rows(&app, ID);
    let none = aggregate(
        &app,
        &token,
        &[
            ("group_by", "icd10_chapter"),
            ("filter", &format!("icd10_chapter = '{nobody}'")),
        ],
    )
    .await;
    assert_eq!(none.status(), 200);
    let bytes = none.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let fields: Vec<String> = reader
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(fields, ["icd10_chapter", "count"]);
    assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), 0);
    // A value that is no category is a 400 listing the categories.
    let body = problem(
        aggregate(
            &app,
            &token,
            &[("group_by", "region"), ("filter", "region = 'nowhere'")],
        )
        .await,
        400,
        "invalid-filter",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("north"));

    // Division by zero is NULL, not an error, for callers who may read
    // rows: such a filter simply matches no row there. Tables take no
    // arithmetic.
    let alice = app.alice();
    let dividing = "1 / (length(region) - 4) = 1";
    problem(
        aggregate(&app, &token, &[("group_by", "sex"), ("filter", dividing)]).await,
        400,
        "invalid-filter",
    )
    .await;
    let rows_answer =
        arrow_batches(app.data(ID, &[("filter", dividing)], Some(&alice)).await).await;
    assert!(strings(&rows_answer, "region").iter().all(|r| r.len() == 5));
    // A filter whose types cannot be compared is a generic 400.
    problem(
        app.data(ID, &[("filter", "TRUE = 7")], Some(&alice)).await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        aggregate(&app, &token, &[("filter", "TRUE = 7")]).await,
        400,
        "invalid-filter",
    )
    .await;

    // Offsets past the rows are empty; past what can be counted, a 400.
    let past = arrow_batches(app.data(ID, &[("offset", "5000")], Some(&alice)).await).await;
    assert_eq!(rows(&past), 0);
    problem(
        app.data(ID, &[("offset", "18446744073709551615")], Some(&alice))
            .await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.data(
            ID,
            &[
                ("offset", "9223372036854775807"),
                ("limit", "9223372036854775807"),
            ],
            Some(&alice),
        )
        .await,
        400,
        "invalid-parameter",
    )
    .await;
    // The server still serves.
    assert_eq!(rows(&total), 1);
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn column_names_never_collide_with_what_the_aggregate_adds() {
    let app = spawn_app().await;
    let admin = app.admin();
    let register = app
        .client
        .post(app.url("/v1/datasets"))
        .bearer_auth(&admin)
        .json(
            &json!({"id": "clash", "title": "Clash", "description": "d", "sector": "health",
            "publisher": "P", "license": "CC-BY-4.0", "tier": "open",
            "columns": [
                {"name": "region", "description": "r", "groupable": true},
                {"name": "suppressed", "description": "s", "groupable": true},
                {"name": "count", "description": "c", "type": "int64"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201, "{}", register.text().await.unwrap());
    let mut csv = String::from("region,suppressed,count\n");
    for i in 0..40 {
        csv.push_str(&format!(
            "{},{},{i}\n",
            ["north", "south"][i % 2],
            i % 2 == 0
        ));
    }
    let upload = app
        .client
        .put(app.url("/v1/datasets/clash/data"))
        .bearer_auth(&admin)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 201, "{}", upload.text().await.unwrap());
    let app = &app;
    let get = |query: &'static str| {
        let path = format!("/v1/datasets/clash/aggregate?{query}");
        async move { app.get(&path, None).await }
    };
    let batches =
        arrow_batches(get("group_by=region,suppressed&measures=count,sum(count)").await).await;
    assert_eq!(
        column_names(&batches),
        ["region", "suppressed", "count", "sum_count"]
    );
    assert_eq!(strings(&batches, "count"), ["20", "20"]);
    // A measure named like a grouping column is a clear 400, not a 500.
    let body = problem(
        get("group_by=count&measures=count").await,
        400,
        "invalid-parameter",
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("grouping column"));
}

#[tokio::test]
async fn no_expression_that_could_fail_on_some_rows_is_a_question() {
    let app = spawn_app_with(2000, |_| {}).await;
    let token = agency(&app);
    let truth = Truth::read(&app);
    let four = &QUASI[..4];
    let row = truth.unique_on(four).next().expect("someone unique");
    let her = truth.equal_to(four, row);
    let group_by = four.join(",");
    // Guessing one of her values with a division that would fail only on
    // her row (by zero, or the smallest integer by -1): refused, before a
    // row is read, whatever the guess and whatever the rows.
    let value = truth.value("discharge_destination", row).len() as i64;
    for guess in [value - 1, value, value + 1] {
        for filter in [
            format!("{her} AND 1 / (length(discharge_destination) - {guess}) = 1"),
            format!(
                "{her} AND (length(discharge_destination) - {guess} - 9223372036854775807 - 1) / -1 > 0"
            ),
        ] {
            problem(
                aggregate(
                    &app,
                    &token,
                    &[("filter", filter.as_str()), ("group_by", group_by.as_str())],
                )
                .await,
                400,
                "invalid-filter",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn what_is_not_a_category_is_refused_the_same_way_whatever_the_rows() {
    let app = spawn_app().await;
    let token = agency(&app);
    for risky in [
        "postcode_district = 12",
        "region > 5",
        "region + 1 > 5",
        "sex IN ('F', 3)",
        "admission_date = 'garbage'",
    ] {
        let mut details = Vec::new();
        for p in ["region = 'north'", "region = 'london'"] {
            let filter = format!("{p} AND {risky}");
            let body = problem(
                aggregate(
                    &app,
                    &token,
                    &[
                        ("group_by", "region,sex,admission_date"),
                        ("filter", filter.as_str()),
                    ],
                )
                .await,
                400,
                "invalid-filter",
            )
            .await;
            let detail = body["detail"].as_str().unwrap().to_owned();
            // The refusal says what may be asked.
            assert!(detail.contains("categories"), "{detail}");
            details.push(detail);
        }
        assert_eq!(
            details[0], details[1],
            "{risky}: same refusal whatever the rows"
        );
    }
    // A number column and a literal that is no number are refused for rows
    // callers too; months are asked for by their label.
    problem(
        app.data(
            ID,
            &[("filter", "length_of_stay = 'seven'")],
            Some(&app.alice()),
        )
        .await,
        400,
        "invalid-filter",
    )
    .await;
    let dated = aggregate(
        &app,
        &token,
        &[
            ("group_by", "admission_date"),
            ("filter", "admission_date >= '2020-01'"),
        ],
    )
    .await;
    assert_eq!(dated.status(), 200);
}
