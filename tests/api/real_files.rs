//! Real files from real stewards (issue 33): a hospital's export with a
//! byte-order mark, CRLF line ends, `;` separators, accented headers,
//! day-first dates and postcodes with leading zeros keeps its meaning, and
//! the answer says what each column was taken to be.

use serde_json::{Value, json};

use crate::helpers::{TestApp, observatory_steward, publish, register, spawn_app};
use crate::steward_helpers::manifest;

const EXPORT: &str = "\u{feff}N° dossier;Âge (années);Durée de séjour (jours);Date d'entrée;code_postal;Ville\r\n\
A-0001;34;3;11/03/2024;01012;Bourg-en-Bresse\r\n\
A-0002;71;12;25/12/2023;75001;Paris\r\n\
A-0003;8;1;02/01/2024;13008;Marseille\r\n";

async fn put(app: &TestApp, token: &str, id: &str, query: &str, body: &str) -> Value {
    let r = app
        .client
        .put(app.url(&format!("/v1/datasets/{id}/data?{query}")))
        .bearer_auth(token)
        .header("content-type", "text/csv")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let mut answer: Value = r.json().await.unwrap();
    answer["status_code"] = json!(status);
    answer
}

fn types(answer: &Value) -> Vec<(String, String)> {
    answer["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_hospital_export_keeps_its_meaning() {
    let app = spawn_app().await;
    let token = observatory_steward(&app);
    let r = register(&app, &token, &manifest("sejours", json!([]))).await;
    assert_eq!(r.status(), 201);
    let answer = put(
        &app,
        &token,
        "sejours",
        "delimiter=%3B&rename=N%C2%B0%20dossier%3Dcase_id",
        EXPORT,
    )
    .await;
    assert_eq!(answer["status_code"], 201, "{answer}");
    let to = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        types(&answer),
        to(&[
            ("case_id", "Utf8"),
            ("age_annees", "Int64"),
            ("duree_de_sejour_jours", "Int64"),
            ("date_d_entree", "Date32"),
            ("code_postal", "Utf8"),
            ("Ville", "Utf8"),
        ])
    );
    assert_eq!(answer["renamed_columns"]["Âge (années)"], "age_annees");
    assert_eq!(answer["renamed_columns"]["N° dossier"], "case_id");
    assert_eq!(
        answer["inferred"]["date_d_entree"],
        "dates, read as day/month/year"
    );
    assert!(
        answer["inferred"]["code_postal"]
            .as_str()
            .unwrap()
            .contains("'01012'")
    );
    assert!(
        answer["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("column 'code_postal' was kept as text")),
        "{answer}"
    );

    assert_eq!(publish(&app, &token, "sejours").await.status(), 200);
    let rows: Vec<Value> = app
        .get("/v1/datasets/sejours/data?format=ndjson", None)
        .await
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows[0]["code_postal"], "01012");
    assert_eq!(rows[0]["date_d_entree"], "2024-03-11");
    assert_eq!(rows[2]["date_d_entree"], "2024-01-02");
    assert_eq!(rows[1]["age_annees"], 71);
    // A published column keeps its type: declaring another is refused,
    // not accepted and ignored.
    let r = crate::helpers::edit(
        &app,
        &token,
        "sejours",
        json!({"columns": [{"name": "age_annees", "type": "float64"}]}),
    )
    .await;
    let body = crate::helpers::problem(r, 422, "invalid-manifest").await;
    assert!(
        body["detail"].as_str().unwrap().contains("stored as Int64"),
        "{body}"
    );

    // The next export, dates as the dataset now declares them, and a bad
    // one named by column and line.
    let next = "N° dossier;Âge (années);Durée de séjour (jours);Date d'entrée;code_postal;Ville\n\
A-0004;50;2;01.04.2024;06000;Nice\nA-0005;51;2;31/02/2024;06000;Nice\n";
    let refused = put(
        &app,
        &token,
        "sejours",
        "delimiter=%3B&rename=N%C2%B0%20dossier%3Dcase_id",
        next,
    )
    .await;
    assert_eq!(refused["status_code"], 422, "{refused}");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("'31/02/2024' in column 'date_d_entree' at line 3"),
        "{detail}"
    );
}

#[tokio::test]
async fn ambiguous_dates_stay_text_unless_the_format_is_given() {
    let app = spawn_app().await;
    let token = observatory_steward(&app);
    for id in ["ambiguous", "told"] {
        let r = register(&app, &token, &manifest(id, json!([]))).await;
        assert_eq!(r.status(), 201);
    }
    let csv = "day,n\n01/02/2024,1\n03/04/2024,2\n";
    let answer = put(&app, &token, "ambiguous", "", csv).await;
    assert_eq!(types(&answer)[0].1, "Utf8");
    assert!(answer["warnings"].to_string().contains("date_format"));
    let answer = put(&app, &token, "told", "date_format=%25m%2F%25d%2F%25Y", csv).await;
    assert_eq!(types(&answer)[0].1, "Date32", "{answer}");
    assert_eq!(publish(&app, &token, "told").await.status(), 200);
    let text = app
        .get("/v1/datasets/told/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.contains("2024-01-02"), "{text}");

    let bad = put(&app, &token, "ambiguous", "date_format=%25Y", csv).await;
    assert_eq!(bad["status_code"], 400);
    let bad = put(&app, &token, "ambiguous", "rename=nope%3Dx", csv).await;
    assert_eq!(bad["status_code"], 422, "{bad}");
    assert!(bad["detail"].as_str().unwrap().contains("'nope'"));
}

/// Columns named once, at registration: each column's `source` names the
/// header cell every upload reads it from, so the monthly export goes in
/// as exported; a rename given with one upload wins over it.
#[tokio::test]
async fn columns_are_renamed_once_at_registration() {
    let app = spawn_app().await;
    let token = observatory_steward(&app);
    let columns = json!([
        {"name": "case_id", "description": "Case", "source": "N° dossier"},
        {"name": "age_years", "description": "Age", "source": "Âge (années)"},
        {"name": "stay_days", "description": "Stay", "source": "Durée de séjour (jours)"},
        {"name": "admitted", "description": "Admission", "source": "Date d'entrée", "type": "date"},
        {"name": "code_postal", "description": "Postcode"},
        {"name": "town", "description": "Town", "source": "Ville"},
    ]);
    let r = register(&app, &token, &manifest("sejours", columns)).await;
    assert_eq!(r.status(), 201);
    let answer = put(&app, &token, "sejours", "delimiter=%3B", EXPORT).await;
    assert_eq!(answer["status_code"], 201, "{answer}");
    let names: Vec<String> = types(&answer).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "case_id",
            "age_years",
            "stay_days",
            "admitted",
            "code_postal",
            "town"
        ]
    );
    assert_eq!(answer["renamed_columns"]["Âge (années)"], "age_years");
    // Declared columns need no review: the version is published.
    let text = app
        .get("/v1/datasets/sejours/data?format=csv", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.starts_with("case_id,age_years,stay_days,admitted,code_postal,town"),
        "{text}"
    );
    assert!(
        text.contains("A-0001,34,3,2024-03-11,01012,Bourg-en-Bresse"),
        "{text}"
    );

    // The next month's export, as exported.
    let next = "N° dossier;Âge (années);Durée de séjour (jours);Date d'entrée;code_postal;Ville\n\
A-0004;50;2;01/04/2024;06000;Nice\n";
    let answer = put(&app, &token, "sejours", "delimiter=%3B", next).await;
    assert_eq!(answer["status_code"], 201, "{answer}");

    // Two columns cannot be read from one cell.
    let r = crate::helpers::edit(
        &app,
        &token,
        "sejours",
        json!({"columns": [{"name": "code_postal", "source": "Ville"}]}),
    )
    .await;
    let body = crate::helpers::problem(r, 422, "invalid-manifest").await;
    assert!(
        body["detail"].as_str().unwrap().contains("'Ville'"),
        "{body}"
    );
}
