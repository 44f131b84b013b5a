//! Bad upload bodies: broken Parquet (a decompression bomb included),
//! broken CSV, garbage Arrow, a body over the size limit and an unknown
//! content type each get a clear error naming what is wrong, leave nothing
//! behind and the dataset untouched, and the server keeps serving.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::helpers::{
    TestApp, arrow_batches, parquet_file, problem, spawn_app_with, strings, upload,
};
use crate::steward_helpers::{assert_nothing_left, published, still_serving};

/// A server that takes uploads of up to 512 KiB, with `target` published;
/// returns it and the steward's token.
async fn target() -> (TestApp, String) {
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.ingest.max_upload_bytes = 512 * 1024
    })
    .await;
    let token = published(&app, "target").await;
    (app, token)
}

/// A bad body: what it is, its content type, its bytes, and the status,
/// problem type and words in the detail of its refusal.
type Case<'a> = (&'a str, &'a str, Vec<u8>, u16, &'a str, &'a str);

/// Each case is refused as it says, leaves nothing behind, and the server
/// keeps serving; and `target` still serves its first version.
async fn all_refused(app: &TestApp, token: &str, cases: Vec<Case<'_>>) {
    for (name, content_type, body, status, kind, needle) in cases {
        let r = upload(app, token, "target", content_type, body).await;
        let p = problem(r, status, kind).await;
        assert!(
            p["detail"].as_str().unwrap().contains(needle),
            "{name}: {p}"
        );
        assert_nothing_left(app, "target", &["1"]);
        still_serving(app).await;
    }
    assert_target_untouched(app).await;
}

async fn assert_target_untouched(app: &TestApp) {
    let got = arrow_batches(app.get("/v1/datasets/target/data", None).await).await;
    assert_eq!(strings(&got, "clinic"), ["A1", "B2", "C3"]);
}

/// A good Parquet file of 1000 rows.
fn good_parquet() -> Vec<u8> {
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "clinic",
            DataType::Utf8,
            true,
        )])),
        vec![Arc::new(StringArray::from(vec!["A"; 1000])) as ArrayRef],
    )
    .unwrap();
    parquet_file(&batch, None)
}

const PARQUET: &str = "application/vnd.apache.parquet";

#[tokio::test]
async fn broken_parquet_files_are_refused() {
    let (app, token) = target().await;
    let good = good_parquet();
    let n = good.len();
    let mut corrupt_footer = good.clone();
    corrupt_footer[n - 8..n - 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut garbage_footer = good.clone();
    let footer_len = u32::from_le_bytes(garbage_footer[n - 8..n - 4].try_into().unwrap()) as usize;
    for b in &mut garbage_footer[n - 8 - footer_len..n - 8] {
        *b = 0xAB;
    }
    let invalid = "upload-invalid";
    all_refused(
        &app,
        &token,
        vec![
            (
                "truncated parquet",
                PARQUET,
                good[..n / 2].to_vec(),
                422,
                invalid,
                "magic",
            ),
            (
                "footer length past the file",
                PARQUET,
                corrupt_footer,
                422,
                invalid,
                "footer",
            ),
            (
                "garbage footer",
                PARQUET,
                garbage_footer,
                422,
                invalid,
                "Parquet",
            ),
            (
                "not parquet at all",
                PARQUET,
                b"hello, world, this is text".to_vec(),
                422,
                invalid,
                "Parquet",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_parquet_decompression_bomb_is_refused() {
    let (app, token) = target().await;
    // 2 M zeros, plain-encoded, zstd-compressed.
    let bomb = {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "visits",
                DataType::Int64,
                true,
            )])),
            vec![Arc::new(Int64Array::from(vec![0i64; 2_000_000])) as ArrayRef],
        )
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_encoding(parquet::basic::Encoding::PLAIN)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        parquet_file(&batch, Some(props))
    };
    assert!(bomb.len() < 64 * 1024, "bomb is {} bytes", bomb.len());
    let case = (
        "decompression bomb",
        PARQUET,
        bomb,
        422,
        "upload-invalid",
        "decompression bomb",
    );
    all_refused(&app, &token, vec![case]).await;
}

#[tokio::test]
async fn broken_csv_is_refused() {
    let (app, token) = target().await;
    let invalid = "upload-invalid";
    all_refused(
        &app,
        &token,
        vec![
            (
                "ragged csv",
                "text/csv",
                b"clinic,month,visits\nA1,2024-01-01,10\nB2,2024-01-01\n".to_vec(),
                422,
                invalid,
                "line",
            ),
            (
                "bad encoding",
                "text/csv",
                b"clinic,month,visits\nA\xff\xfe,2024-01-01,10\n".to_vec(),
                422,
                invalid,
                "UTF-8",
            ),
            ("empty body", "text/csv", Vec::new(), 422, invalid, "empty"),
            (
                "header only",
                "text/csv",
                b"clinic,month,visits\n".to_vec(),
                422,
                invalid,
                "no rows",
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn a_garbage_arrow_stream_is_refused() {
    let (app, token) = target().await;
    let case = (
        "garbage arrow",
        "application/vnd.apache.arrow.stream",
        vec![0xff; 64],
        422,
        "upload-invalid",
        "Arrow",
    );
    all_refused(&app, &token, vec![case]).await;
}

/// Found by the upload fuzzer: an Arrow stream whose buffer offsets point
/// past its body panics arrow-ipc's reader (a bug upstream). The worker
/// process turns the panic into a refusal; the server never sees it. (A
/// dataset with no columns yet, so the stream's schema is accepted and its
/// batches are decoded.)
#[tokio::test]
async fn an_arrow_stream_that_panics_the_decoder_is_refused() {
    let (app, token) = target().await;
    let fresh = crate::steward_helpers::manifest("fresh", serde_json::json!([]));
    assert_eq!(
        crate::helpers::register(&app, &token, &fresh)
            .await
            .status(),
        201
    );
    let body = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/api/fixtures/arrow-stream-bad-buffer-offset.arrows"),
    )
    .unwrap();
    let r = upload(
        &app,
        &token,
        "fresh",
        "application/vnd.apache.arrow.stream",
        body,
    )
    .await;
    let p = problem(r, 422, "upload-invalid").await;
    assert!(
        p["detail"].as_str().unwrap().contains("decoder failed"),
        "{p}"
    );
    assert_nothing_left(&app, "fresh", &[]);
    still_serving(&app).await;
    assert_target_untouched(&app).await;
}

#[tokio::test]
async fn a_body_over_the_size_limit_is_refused() {
    let (app, token) = target().await;
    let case = (
        "too large",
        "text/csv",
        vec![b'a'; 600 * 1024],
        413,
        "payload-too-large",
        "bytes",
    );
    all_refused(&app, &token, vec![case]).await;
}

#[tokio::test]
async fn a_chunked_body_over_the_size_limit_is_cut_off() {
    let (app, token) = target().await;
    // No Content-Length: the limit is found while the body streams.
    let chunks =
        futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 64 * 1024])));
    let r = upload(
        &app,
        &token,
        "target",
        "text/csv",
        reqwest::Body::wrap_stream(chunks),
    )
    .await;
    problem(r, 413, "payload-too-large").await;
    assert_nothing_left(&app, "target", &["1"]);
    still_serving(&app).await;
    assert_target_untouched(&app).await;
}

#[tokio::test]
async fn an_unknown_content_type_is_refused() {
    let (app, token) = target().await;
    let case = (
        "unknown type",
        "application/zip",
        b"PK".to_vec(),
        415,
        "unsupported-media-type",
        "Content-Type",
    );
    all_refused(&app, &token, vec![case]).await;
}
