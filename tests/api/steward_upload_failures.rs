//! An upload whose worker dies (of its memory limit, or of a decoder that
//! aborts the process) or whose client goes away mid-body is refused with
//! a clear reason, leaves nothing behind, and the server keeps serving.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use futures::StreamExt;

use crate::helpers::{
    arrow_stream, audit_records, observatory_steward as steward, problem_saying, register,
    spawn_app, spawn_app_with, upload,
};
use crate::steward_helpers::{
    VISITS_V1, VISITS_V2, assert_nothing_left, manifest, published, still_serving, visit_columns,
};

#[tokio::test]
async fn a_worker_killed_by_its_memory_limit_is_a_clear_refusal() {
    // The worker's address space is too small to decode anything: whatever
    // the decoder does, the server answers and keeps serving.
    let app = spawn_app_with(crate::helpers::ROWS, |s| {
        s.ingest.worker_memory_bytes = 64 * 1024 * 1024
    })
    .await;
    let token = steward(&app);
    assert_eq!(
        register(&app, &token, &manifest("tiny", visit_columns()))
            .await
            .status(),
        201
    );
    problem_saying(
        upload(&app, &token, "tiny", "text/csv", VISITS_V1).await,
        422,
        "upload-invalid",
        "limits",
    )
    .await;
    assert_nothing_left(&app, "tiny", &[]);
    still_serving(&app).await;
}

#[tokio::test]
async fn an_upload_the_client_abandons_leaves_nothing_and_is_audited() {
    let app = spawn_app().await;
    let token = published(&app, "abandoned").await;
    // One chunk of a CSV, then the client goes silent and is dropped.
    let chunks = futures::stream::iter([Ok::<_, std::io::Error>(
        b"clinic,month,visits\nA1,2024-01-01,1\n".to_vec(),
    )])
    .chain(futures::stream::pending());
    let client = app.client.clone();
    let url = app.url("/v1/datasets/abandoned/data");
    let request = tokio::spawn(async move {
        client
            .put(url)
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    request.abort();
    let mut recorded = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        recorded = audit_records(&app, "abandoned")
            .await
            .iter()
            .find(|r| r["event"] == "upload" && r["decision"] == "refused")
            .cloned();
        if recorded.is_some() {
            break;
        }
    }
    let recorded = recorded.expect("the abandoned upload is in the audit trail");
    assert_eq!(recorded["reason"], "upload-incomplete");
    assert_eq!(recorded["subject"], "sam@observatory.example");
    assert_nothing_left(&app, "abandoned", &["1"]);
    still_serving(&app).await;
}

/// An Arrow IPC stream whose record batch claims a 1 TiB body: the reader
/// tries to allocate it, and an allocation failure aborts the process (no
/// `catch_unwind` can stop that). Only the worker may die of it.
fn arrow_stream_claiming_a_huge_body() -> Vec<u8> {
    // The visit columns, so the schema check passes and decoding starts.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("clinic", DataType::Utf8, true),
            Field::new("month", DataType::Date32, true),
            Field::new("visits", DataType::Int64, true),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["A1"; 3])) as ArrayRef,
            Arc::new(arrow::array::Date32Array::from(vec![19_723; 3])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ],
    )
    .unwrap();
    let stream = arrow_stream(&batch);
    // Each message: 0xFFFFFFFF, metadata length, metadata, body.
    let metadata_len =
        |at: usize| u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
    let batch_at = 8 + metadata_len(0);
    let metadata = &stream[batch_at + 8..batch_at + 8 + metadata_len(batch_at)];
    let body_length = arrow::ipc::root_as_message(metadata).unwrap().bodyLength();
    let field = metadata
        .windows(8)
        .position(|w| w == body_length.to_le_bytes())
        .unwrap();
    let at = batch_at + 8 + field;
    let mut hostile = stream.clone();
    hostile[at..at + 8].copy_from_slice(&(1i64 << 40).to_le_bytes());
    hostile
}

#[tokio::test]
async fn an_upload_that_aborts_the_decoder_cannot_take_the_server_down() {
    let app = spawn_app().await;
    let token = published(&app, "aborting").await;
    problem_saying(
        upload(
            &app,
            &token,
            "aborting",
            "application/vnd.apache.arrow.stream",
            arrow_stream_claiming_a_huge_body(),
        )
        .await,
        422,
        "upload-invalid",
        "decoder failed",
    )
    .await;
    assert_nothing_left(&app, "aborting", &["1"]);
    still_serving(&app).await;
    // And the next good upload goes through.
    assert_eq!(
        upload(&app, &token, "aborting", "text/csv", VISITS_V2)
            .await
            .status(),
        201
    );
}
