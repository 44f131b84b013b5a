use sluice::auth::Role;

use crate::helpers::{
    ROWS, arrow_batches, arrow_batches_of, column_names, decode_parquet, problem, rows, spawn_app,
    spawn_app_with, strings,
};

#[tokio::test]
async fn open_data_streams_as_arrow_without_a_token() {
    let app = spawn_app().await;
    let batches = arrow_batches(app.data("vaccination-coverage", &[], None).await).await;
    assert_eq!(rows(&batches), ROWS as usize);
    assert_eq!(
        column_names(&batches),
        [
            "region",
            "local_area",
            "year",
            "vaccine",
            "age_group",
            "eligible",
            "vaccinated",
            "coverage_pct"
        ]
    );
}

/// Issue 36: an Arrow answer compressed as asked (LZ4 frame or zstd
/// buffers inside the IPC stream) carries the same rows in fewer bytes;
/// a codec Sluice does not know, or compression asked of another format,
/// is a clear 400.
#[tokio::test]
async fn arrow_answers_compress_when_asked() {
    let app = spawn_app().await;
    let query = [("columns", "region,local_area,year,vaccine,coverage_pct")];
    let plain = app.data("vaccination-coverage", &query, None).await;
    let plain = plain.bytes().await.unwrap();
    let expected = arrow_batches_of(&plain);
    for codec in ["lz4", "zstd"] {
        let mut q = query.to_vec();
        q.push(("compression", codec));
        let response = app.data("vaccination-coverage", &q, None).await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none());
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() * 2 < plain.len(),
            "{codec}: {} bytes against {} plain",
            body.len(),
            plain.len()
        );
        let batches = arrow_batches_of(&body);
        assert_eq!(rows(&batches), rows(&expected));
        for column in ["region", "local_area", "vaccine", "coverage_pct"] {
            assert_eq!(
                strings(&batches, column),
                strings(&expected, column),
                "{codec}"
            );
        }
    }
    let mut q = query.to_vec();
    q.push(("compression", "brotli"));
    problem(
        app.data("vaccination-coverage", &q, None).await,
        400,
        "invalid-parameter",
    )
    .await;
    q.pop();
    q.extend([("compression", "zstd"), ("format", "csv")]);
    problem(
        app.data("vaccination-coverage", &q, None).await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn every_format_carries_the_same_rows() {
    let app = spawn_app().await;
    let query = [
        ("columns", "region,year,vaccine,coverage_pct"),
        ("filter", "year = 2012"),
        ("limit", "50"),
    ];
    let mut q = query.to_vec();

    let arrow = arrow_batches(app.data("vaccination-coverage", &q, None).await).await;
    let expected_rows = rows(&arrow);
    assert!(expected_rows > 0);
    assert!(strings(&arrow, "year").iter().all(|y| y == "2012"));

    q.push(("format", "parquet"));
    let response = app.data("vaccination-coverage", &q, None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let parquet = decode_parquet(response.bytes().await.unwrap());
    assert_eq!(rows(&parquet), expected_rows);
    assert_eq!(strings(&parquet, "vaccine"), strings(&arrow, "vaccine"));

    q.pop();
    q.push(("format", "csv"));
    let response = app.data("vaccination-coverage", &q, None).await;
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("region,year,vaccine,coverage_pct"));
    assert_eq!(lines.count(), expected_rows);

    q.pop();
    q.push(("format", "ndjson"));
    let response = app.data("vaccination-coverage", &q, None).await;
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let text = response.text().await.unwrap();
    let objects: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects.len(), expected_rows);
    assert_eq!(objects[0]["year"], 2012);
    assert_eq!(objects[0].as_object().unwrap().len(), 4);
}

#[tokio::test]
async fn the_accept_header_chooses_the_format_when_no_parameter_does() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/v1/datasets/school-enrolment/data?limit=3"))
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    assert_eq!(response.text().await.unwrap().lines().count(), 4);

    let refused = app
        .client
        .get(app.url("/v1/datasets/school-enrolment/data"))
        .header("accept", "application/vnd.ms-excel")
        .send()
        .await
        .unwrap();
    problem(refused, 406, "not-acceptable").await;
    problem(
        app.data("school-enrolment", &[("format", "xlsx")], None)
            .await,
        400,
        "invalid-parameter",
    )
    .await;
}

#[tokio::test]
async fn filters_limit_and_offset_select_the_right_rows() {
    let app = spawn_app().await;
    let all = arrow_batches(
        app.data(
            "school-enrolment",
            &[(
                "filter",
                "region = 'north' AND grade BETWEEN 3 AND 5 AND sex IN ('F')",
            )],
            None,
        )
        .await,
    )
    .await;
    let n = rows(&all);
    assert!(n > 0);
    assert!(strings(&all, "region").iter().all(|r| r == "north"));
    assert!(strings(&all, "sex").iter().all(|s| s == "F"));
    assert!(
        strings(&all, "grade")
            .iter()
            .all(|g| ["3", "4", "5"].contains(&g.as_str()))
    );

    let page = arrow_batches(
        app.data(
            "school-enrolment",
            &[
                (
                    "filter",
                    "region = 'north' AND grade BETWEEN 3 AND 5 AND sex IN ('F')",
                ),
                ("offset", "2"),
                ("limit", "3"),
            ],
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        strings(&page, "school_id"),
        strings(&all, "school_id")[2..5].to_vec()
    );

    let none = arrow_batches(
        app.data("school-enrolment", &[("filter", "enrolled > 1000")], None)
            .await,
    )
    .await;
    assert_eq!(rows(&none), 0);

    let like = arrow_batches(
        app.data(
            "vaccination-coverage",
            &[(
                "filter",
                "vaccine LIKE 'MMR%' AND NOT (region = 'london') AND coverage_pct * 2 > 150",
            )],
            None,
        )
        .await,
    )
    .await;
    assert!(
        strings(&like, "vaccine")
            .iter()
            .all(|v| v.starts_with("MMR"))
    );
    assert!(!strings(&like, "region").contains(&"london".to_string()));
}

#[tokio::test]
async fn an_empty_csv_answer_still_has_its_header() {
    let app = spawn_app().await;
    let response = app
        .data(
            "school-enrolment",
            &[
                ("filter", "enrolled < 0"),
                ("format", "csv"),
                ("columns", "school_id,grade"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "school_id,grade\n");
}

#[tokio::test]
async fn bad_slice_requests_are_explained() {
    let app = spawn_app().await;
    let id = "vaccination-coverage";
    problem(
        app.data(id, &[("filter", "region = ")], None).await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(id, &[("filter", "region IN (SELECT 1)")], None)
            .await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(id, &[("filter", "pg_sleep(5) = 1")], None).await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(id, &[("filter", "year = 1; DROP TABLE x")], None)
            .await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(id, &[("filter", &"a".repeat(5000))], None).await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(
            id,
            &[("filter", "region > DATE '2020-01-01' AND year = 'x'")],
            None,
        )
        .await,
        400,
        "invalid-filter",
    )
    .await;
    problem(
        app.data(id, &[("limit", "-1")], None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.data(id, &[("limit", "lots")], None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.data(id, &[("columns", "region,region")], None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.data(id, &[("colums", "region")], None).await,
        400,
        "invalid-parameter",
    )
    .await;
    problem(
        app.data(id, &[("version", "9")], None).await,
        404,
        "version-not-found",
    )
    .await;
    let unknown = problem(
        app.data(id, &[("columns", "region,colour")], None).await,
        400,
        "unknown-column",
    )
    .await;
    assert_eq!(unknown["column"], "colour");
    // The server keeps serving afterwards.
    assert_eq!(app.data(id, &[("limit", "1")], None).await.status(), 200);
}

/// The body of an error with its request id removed, to compare two errors.
async fn anonymised(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let mut body: serde_json::Value = response.json().await.unwrap();
    body.as_object_mut().unwrap().remove("request_id");
    (
        status,
        body.to_string()
            .replace("nhs_number", "NAME")
            .replace("no_such_col", "NAME"),
    )
}

#[tokio::test]
async fn hidden_columns_are_indistinguishable_from_absent_ones() {
    let app = spawn_app().await;
    let alice = app.alice();
    let id = "hospital-admissions";
    for (hidden, absent) in [
        (
            vec![("columns", "region,nhs_number")],
            vec![("columns", "region,no_such_col")],
        ),
        (
            vec![("filter", "nhs_number = 'P000000001'")],
            vec![("filter", "no_such_col = 'P000000001'")],
        ),
        (
            vec![("filter", "nhs_number IS NOT NULL")],
            vec![("filter", "no_such_col IS NOT NULL")],
        ),
    ] {
        let a = anonymised(app.data(id, &hidden, Some(&alice)).await).await;
        let b = anonymised(app.data(id, &absent, Some(&alice)).await).await;
        assert_eq!(a.0, 400);
        assert_eq!(a, b, "hidden and absent columns must give the same answer");
    }
    // A column outside alice's grant (but not an identifier) is hidden too.
    let c = anonymised(
        app.data(id, &[("columns", "postcode_district")], Some(&alice))
            .await,
    )
    .await;
    assert_eq!(c.0, 400);
}

#[tokio::test]
async fn direct_identifiers_are_never_served_and_pseudonyms_hide_raw_ids() {
    let app = spawn_app().await;
    let planner = app.token("dan@nhs.example", &[Role::Researcher], &["nhs-north"]);
    let batches = arrow_batches(app.data("hospital-admissions", &[], Some(&planner)).await).await;
    assert!(!column_names(&batches).contains(&"nhs_number".to_string()));
    assert!(column_names(&batches).contains(&"patient_id".to_string()));
    let response = app
        .data("hospital-admissions", &[("format", "csv")], Some(&planner))
        .await;
    let text = response.text().await.unwrap();
    assert!(!text.contains("nhs_number"));
    // No raw NHS number nor raw patient id appears anywhere in the body.
    for raw in app
        .raw_column("hospital-admissions", "nhs_number")
        .iter()
        .chain(&app.raw_column("hospital-admissions", "patient_id"))
    {
        assert!(!text.contains(raw.as_str()), "raw identifier {raw} leaked");
    }
}

#[tokio::test]
async fn registered_data_needs_a_researcher_token() {
    let app = spawn_app().await;
    let id = "school-results";
    let anonymous = app.data(id, &[], None).await;
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Bearer realm=\"sluice\""
    );
    problem(anonymous, 401, "token-required").await;
    let steward = app.token("sam@dfe.example", &[Role::Steward], &[]);
    problem(
        app.data(id, &[], Some(&steward)).await,
        403,
        "role-required",
    )
    .await;
    let batches = arrow_batches(
        app.data(id, &[("limit", "10")], Some(&app.researcher()))
            .await,
    )
    .await;
    assert_eq!(rows(&batches), 10);
}

#[tokio::test]
async fn controlled_data_needs_a_grant_and_obeys_it() {
    let app = spawn_app().await;
    let id = "hospital-admissions";
    problem(app.data(id, &[], None).await, 401, "token-required").await;
    let denied = problem(
        app.data(id, &[], Some(&app.researcher())).await,
        403,
        "grant-required",
    )
    .await;
    assert!(
        denied["detail"]
            .as_str()
            .unwrap()
            .contains("Data Access Committee")
    );

    // Alice's grant: her columns only, capped at 250 rows.
    let response = app.data(id, &[], Some(&app.alice())).await;
    assert_eq!(response.headers()["sluice-row-cap"], "250");
    let batches = arrow_batches(response).await;
    assert_eq!(rows(&batches), 250);
    assert_eq!(
        column_names(&batches),
        [
            "age_band",
            "sex",
            "region",
            "icd10_chapter",
            "admission_date",
            "length_of_stay"
        ]
    );

    // The example from the README.
    let batches = arrow_batches(
        app.data(
            id,
            &[
                ("columns", "age_band,region,length_of_stay"),
                ("filter", "length_of_stay > 7 AND region = 'north'"),
                ("limit", "1000"),
            ],
            Some(&app.alice()),
        )
        .await,
    )
    .await;
    assert!(rows(&batches) > 0);
    assert!(strings(&batches, "region").iter().all(|r| r == "north"));
    assert!(
        strings(&batches, "length_of_stay")
            .iter()
            .all(|s| s.parse::<i32>().unwrap() > 7)
    );
}

#[tokio::test]
async fn a_grants_row_filter_cannot_be_escaped() {
    let app = spawn_app().await;
    let planner = app.token("dan@nhs.example", &[Role::Researcher], &["nhs-north"]);
    let id = "hospital-admissions";
    let all = arrow_batches(app.data(id, &[], Some(&planner)).await).await;
    assert!(rows(&all) > 0 && rows(&all) < ROWS as usize);
    assert!(strings(&all, "region").iter().all(|r| r == "north"));
    for escape in [
        "region = 'south'",
        "region <> 'north' OR 1 = 1",
        "NOT (region = 'north')",
    ] {
        let batches =
            arrow_batches(app.data(id, &[("filter", escape)], Some(&planner)).await).await;
        assert!(
            strings(&batches, "region").iter().all(|r| r == "north"),
            "{escape}"
        );
    }
}

#[tokio::test]
async fn expired_grants_are_refused_as_expired() {
    let app = spawn_app().await;
    let bob = app.token("bob@college.example", &[Role::Researcher], &[]);
    let body = problem(
        app.data("hospital-admissions", &[], Some(&bob)).await,
        403,
        "grant-expired",
    )
    .await;
    assert_eq!(body["grant"], "closed-pilot");
}

#[tokio::test]
async fn masked_columns_are_masked_before_filters_see_them() {
    let app = spawn_app().await;
    let alice = app.alice();
    let id = "hospital-admissions";
    // Alice's grant does not unmask admission_date: every date is a 1st.
    let batches = arrow_batches(
        app.data(id, &[("columns", "admission_date")], Some(&alice))
            .await,
    )
    .await;
    assert!(
        strings(&batches, "admission_date")
            .iter()
            .all(|d| d.ends_with("-01"))
    );
    // A filter on an exact raw date selects nothing unless it is a 1st.
    let leak = arrow_batches(
        app.data(
            id,
            &[("filter", "admission_date = '2019-01-17'")],
            Some(&alice),
        )
        .await,
    )
    .await;
    assert_eq!(rows(&leak), 0);
    let narrow = arrow_batches(
        app.data(
            id,
            &[(
                "filter",
                "admission_date > '2019-01-02' AND admission_date < '2019-01-31'",
            )],
            Some(&alice),
        )
        .await,
    )
    .await;
    assert_eq!(
        rows(&narrow),
        0,
        "a range inside one month must not select by the hidden day"
    );

    // The north planners' grant lifts the mask.
    let planner = app.token("dan@nhs.example", &[Role::Researcher], &["nhs-north"]);
    let raw = arrow_batches(
        app.data(
            id,
            &[("columns", "admission_date,age,postcode_district")],
            Some(&planner),
        )
        .await,
    )
    .await;
    assert!(
        strings(&raw, "admission_date")
            .iter()
            .any(|d| !d.ends_with("-01"))
    );
    // …but not the others: age in 5-year buckets, postcode cut to 2 characters.
    assert!(
        strings(&raw, "age")
            .iter()
            .all(|a| a.parse::<i32>().unwrap() % 5 == 0)
    );
    assert!(
        strings(&raw, "postcode_district")
            .iter()
            .all(|p| p.chars().count() <= 2)
    );
    let leak = arrow_batches(
        app.data(
            id,
            &[("filter", "postcode_district = 'NE23'")],
            Some(&planner),
        )
        .await,
    )
    .await;
    assert_eq!(rows(&leak), 0);
    let leak = arrow_batches(
        app.data(id, &[("filter", "age = 37")], Some(&planner))
            .await,
    )
    .await;
    assert_eq!(rows(&leak), 0);
}

#[tokio::test]
async fn a_one_row_answer_carries_only_that_row() {
    let app = spawn_app_big().await;
    let response = app
        .data(
            "hospital-admissions",
            &[("limit", "1"), ("filter", "region = 'london'")],
            Some(&app.alice()),
        )
        .await;
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.len() < 4096, "one row took {} bytes", bytes.len());
    let text = String::from_utf8_lossy(&bytes);
    // Only one region value may be in the body.
    for other in ["north", "south", "east", "west", "midlands"] {
        assert!(
            !text.contains(other),
            "bytes of other rows ({other}) leaked"
        );
    }
}

/// Large enough that a page holds many rows besides the one asked for.
async fn spawn_app_big() -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(50_000, |_| {}).await
}

#[tokio::test]
async fn the_query_endpoint_takes_the_slice_as_json() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/query"))
        .json(&serde_json::json!({
            "columns": ["region", "coverage_pct"],
            "filter": "region IN ('north', 'south') AND coverage_pct BETWEEN 80 AND 90",
            "limit": 20,
            "format": "ndjson",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let pct = row["coverage_pct"].as_f64().unwrap();
        assert!((80.0..=90.0).contains(&pct));
    }
    assert!(text.lines().count() > 0 && text.lines().count() <= 20);

    let too_big = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/query"))
        .header("content-type", "application/json")
        .body(format!("{{\"filter\": \"{}\"}}", "x".repeat(100_000)))
        .send()
        .await
        .unwrap();
    problem(too_big, 413, "payload-too-large").await;
    let not_json = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/query"))
        .header("content-type", "text/plain")
        .body("region = 'north'")
        .send()
        .await
        .unwrap();
    problem(not_json, 415, "unsupported-media-type").await;
    let unknown_field = app
        .client
        .post(app.url("/v1/datasets/vaccination-coverage/query"))
        .json(&serde_json::json!({ "where": "x" }))
        .send()
        .await
        .unwrap();
    problem(unknown_field, 400, "invalid-parameter").await;
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_leaves_the_server_serving() {
    let app = spawn_app().await;
    let mut response = app
        .data(
            "hospital-admissions",
            &[("format", "csv")],
            Some(&app.token("dan@nhs.example", &[], &["nhs-north"])),
        )
        .await;
    let _first = response.chunk().await.unwrap();
    drop(response);
    for _ in 0..3 {
        assert_eq!(app.get("/readyz", None).await.status(), 200);
        assert_eq!(
            app.data("school-enrolment", &[("limit", "5")], None)
                .await
                .status(),
            200
        );
    }
}

/// CSV and NDJSON batches are encoded in parallel and must still arrive in
/// order, each row once: many small batches, in file order (a limit), row
/// for row against the Arrow answer.
#[tokio::test]
async fn text_formats_keep_row_order_across_many_batches() {
    let app = crate::helpers::spawn_app_with(20_000, |s| s.limits.batch_rows = 512).await;
    let q = [
        ("columns", "region,year,vaccine,coverage_pct"),
        ("limit", "15000"),
    ];
    let arrow = arrow_batches(app.data("vaccination-coverage", &q, None).await).await;
    assert!(arrow.len() > 20, "the answer should span many batches");
    let regions = strings(&arrow, "region");
    let vaccines = strings(&arrow, "vaccine");
    assert_eq!(regions.len(), 15_000);

    let expected: Vec<(String, String)> = regions.into_iter().zip(vaccines).collect();
    for format in ["csv", "ndjson"] {
        let mut query = q.to_vec();
        query.push(("format", format));
        let text = app
            .data("vaccination-coverage", &query, None)
            .await
            .text()
            .await
            .unwrap();
        let got: Vec<(String, String)> = if format == "csv" {
            csv::Reader::from_reader(text.as_bytes())
                .records()
                .map(|r| {
                    let r = r.unwrap();
                    (r[0].to_owned(), r[2].to_owned())
                })
                .collect()
        } else {
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    (
                        v["region"].as_str().unwrap().to_owned(),
                        v["vaccine"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        };
        assert_eq!(got, expected, "{format}");
    }
}

/// CSV and NDJSON travel as zstd when the client asks for it (and only
/// then): the decoded bytes are exactly the plain answer's; Arrow and
/// Parquet never get a content coding.
#[tokio::test]
async fn text_answers_are_zstd_coded_when_asked_and_decode_to_the_same_bytes() {
    let app = crate::helpers::spawn_app_with(20_000, |s| s.limits.batch_rows = 1024).await;
    let get =
        |format: &'static str, accept_encoding: Option<&'static str>, filter: &'static str| {
            let mut request = app
                .client
                .get(app.url("/v1/datasets/vaccination-coverage/data"))
                .query(&[("format", format), ("limit", "15000"), ("filter", filter)]);
            if let Some(value) = accept_encoding {
                request = request.header("accept-encoding", value);
            }
            async move { request.send().await.unwrap() }
        };
    for format in ["csv", "ndjson"] {
        let plain = get(format, None, "year > 0").await;
        assert_eq!(plain.headers()["vary"], "accept-encoding");
        assert!(plain.headers().get("content-encoding").is_none());
        let plain = plain.bytes().await.unwrap();
        assert!(plain.len() > 100_000);

        let coded = get(format, Some("gzip, deflate, br, zstd"), "year > 0").await;
        assert_eq!(coded.status(), 200);
        assert_eq!(coded.headers()["content-encoding"], "zstd");
        let coded = coded.bytes().await.unwrap();
        assert!(coded.len() * 3 < plain.len(), "zstd should shrink text");
        assert_eq!(
            zstd::stream::decode_all(&coded[..]).unwrap(),
            plain.to_vec()
        );

        // Refused or not offered: the bytes as they are.
        for value in ["gzip", "zstd;q=0, identity", "identity"] {
            let response = get(format, Some(value), "year > 0").await;
            assert!(
                response.headers().get("content-encoding").is_none(),
                "{value}"
            );
            assert_eq!(response.bytes().await.unwrap(), plain);
        }

        // No rows: still a valid zstd stream, of the plain (empty or
        // header-only) answer.
        let empty_plain = get(format, None, "year < 0").await.bytes().await.unwrap();
        let empty = get(format, Some("zstd"), "year < 0").await;
        assert_eq!(empty.headers()["content-encoding"], "zstd");
        let empty = empty.bytes().await.unwrap();
        assert!(!empty.is_empty());
        assert_eq!(
            zstd::stream::decode_all(&empty[..]).unwrap(),
            empty_plain.to_vec()
        );
    }
    for format in ["arrow", "parquet"] {
        let response = get(format, Some("zstd"), "year > 0").await;
        assert_eq!(response.status(), 200);
        assert!(response.headers().get("content-encoding").is_none());
    }
}

/// Issue 36: a whole table the caller's plan leaves unchanged is answered
/// as Parquet with the committed file's own bytes up to its footer (as a
/// file server would send them, without decoding and encoding again), and
/// a new footer with the answer's provenance and none of the file's own
/// key-value metadata beside its bare Arrow schema; whole columns, with
/// those columns' chunks. Any change the plan makes (a grant that hides
/// columns or caps rows) goes through the engine.
#[tokio::test]
async fn a_whole_open_table_as_parquet_is_the_committed_files_bytes() {
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::WriterProperties;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let id = "vaccination-coverage";
    let committed_file = |datasets: &std::path::Path, id: &str| {
        let folder = datasets.join(id).join("versions/1");
        std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "parquet"))
            .unwrap()
    };
    // The committed file as no answer of the engine's would be written:
    // uncompressed, row groups of 100 rows, with a note of its own.
    let app = spawn_app_with(ROWS, |settings| {
        let path = committed_file(&settings.storage.datasets, id);
        let batches = decode_parquet(std::fs::read(&path).unwrap().into());
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(100))
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "steward-note".into(),
                "not for callers".to_owned(),
            )]))
            .build();
        let mut out = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut out, batches[0].schema(), Some(props))
                .unwrap();
        for batch in &batches {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
        std::fs::write(path, out).unwrap();
    })
    .await;
    let committed = |id: &str| {
        let bytes = std::fs::read(committed_file(&app.settings.storage.datasets, id)).unwrap();
        let n = bytes.len();
        let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
        bytes[..n - 8 - footer].to_vec()
    };

    let whole = app.data(id, &[("format", "parquet")], None).await;
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().await.unwrap();
    let data = committed(id);
    assert!(
        whole.starts_with(&data),
        "the answer is the committed file's bytes up to its footer"
    );
    let reader = SerializedFileReader::new(whole.clone()).expect("a Parquet file");
    assert_eq!(
        reader.metadata().num_row_groups(),
        ROWS.div_ceil(100) as usize
    );
    let pairs = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    assert!(
        pairs
            .iter()
            .any(|kv| kv.key == "sluice.dataset" && kv.value.as_deref() == Some(id))
    );
    assert!(
        pairs
            .iter()
            .any(|kv| kv.key == "sluice.access" && kv.value.as_deref() == Some("open data"))
    );
    for kv in &pairs {
        assert!(
            kv.key == "ARROW:schema" || kv.key.starts_with("sluice."),
            "{} comes from the file, not the answer",
            kv.key
        );
    }

    // A snapshot of the whole table is the same bytes, with a footer
    // that says nothing about when anyone read it.
    let issued: serde_json::Value = app
        .client
        .post(app.url(&format!("/v1/datasets/{id}/snapshot")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = app
        .client
        .get(issued["url"].as_str().expect("a link"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(file.starts_with(&data), "the snapshot is the file's bytes");
    let keys = crate::helpers::footer_keys(file);
    assert!(keys.contains(&"sluice.citation".to_owned()), "{keys:?}");
    assert!(!keys.contains(&"sluice.retrieved".to_owned()), "{keys:?}");

    // Every column named in order asks for the same answer.
    let decoded = decode_parquet(whole);
    let mut names = column_names(&decoded);
    let named = app
        .data(
            id,
            &[("format", "parquet"), ("columns", &names.join(","))],
            None,
        )
        .await;
    assert!(
        named.bytes().await.unwrap().starts_with(&data),
        "every column named in order is the whole table"
    );

    // Columns in another order, or some of them: those columns' chunks,
    // moved, with a footer that describes them, and the very table the
    // engine streams as Arrow for the same request.
    names.reverse();
    let some = [
        names[0].clone(),
        names[names.len() - 1].clone(),
        names[2].clone(),
    ];
    let one = |b: &[arrow::array::RecordBatch]| {
        arrow::compute::concat_batches(&b[0].schema(), b).unwrap()
    };
    assert_eq!(rows(&decoded), ROWS as usize);
    // The first two in file order lie one after the other in each row
    // group: read together.
    let adjacent = vec![
        names[names.len() - 1].clone(),
        names[names.len() - 2].clone(),
    ];
    for asked in [names.clone(), some.to_vec(), adjacent] {
        let columns = asked.join(",");
        let chunks = app
            .data(id, &[("format", "parquet"), ("columns", &columns)], None)
            .await;
        assert_eq!(chunks.status(), 200);
        let chunks = chunks.bytes().await.unwrap();
        assert!(chunks.starts_with(b"PAR1") && !chunks.starts_with(&data));
        let reader = SerializedFileReader::new(chunks.clone()).expect("a Parquet file");
        assert_eq!(
            reader.metadata().num_row_groups(),
            ROWS.div_ceil(100) as usize,
            "the file's row groups"
        );
        let from_chunks = one(&decode_parquet(chunks));
        assert_eq!(column_names(std::slice::from_ref(&from_chunks)), asked);
        let engine = app
            .data(id, &[("format", "arrow"), ("columns", &columns)], None)
            .await;
        let from_engine = one(&arrow_batches_of(&engine.bytes().await.unwrap()));
        assert_eq!(from_chunks, from_engine, "{columns}");
        if asked == names {
            // Every column reversed: the whole file's rows, reordered.
            let reversed: Vec<usize> = (0..names.len()).rev().collect();
            assert_eq!(one(&decoded), from_chunks.project(&reversed).unwrap());
        }
    }

    // A grant that hides columns and caps rows never gets the file's bytes.
    let alice = app.token("alice@uni.example", &[Role::Researcher], &[]);
    let granted = app
        .data(
            "hospital-admissions",
            &[("format", "parquet")],
            Some(&alice),
        )
        .await;
    assert_eq!(granted.status(), 200);
    let granted = decode_parquet(granted.bytes().await.unwrap());
    assert_eq!(rows(&granted), 250);
    assert!(!column_names(&granted).contains(&"cost_eur".to_owned()));
}
