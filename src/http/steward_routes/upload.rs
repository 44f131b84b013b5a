//! `PUT /v1/datasets/{id}/data`: a new version's rows received into
//! staging with bounded memory and time, checked, written and committed
//! (or held for review), and an upload whose client went away recorded.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Records an upload whose client went away: actix drops the handler (and
/// with it the staging folder and the worker), so nothing else would.
struct AbandonedUpload<'a> {
    state: &'a AppState,
    record: Option<Record>,
}

impl Drop for AbandonedUpload<'_> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.phase = None;
            record.decision = Some(Decision::Refused);
            record.reason = Some("client-disconnected".into());
            record.outcome = Some(Outcome::Aborted);
            self.state.audit.append(record);
        }
    }
}

/// `PUT /v1/datasets/{id}/data`: uploads the dataset's next version.
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(put, path = "/v1/datasets/{id}/data", tag = "stewards", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), CsvParams), request_body(description = "The new version's rows", content(("text/csv"), ("application/vnd.apache.parquet"), ("application/vnd.apache.arrow.stream"))), security(("bearer" = [])), responses((status = 201, description = "A new version, committed", body = Object)))]
pub(in crate::http) async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let mut audit = trail::request_record(Event::Upload, &caller, &path);
    let mut abandoned = AbandonedUpload {
        state: &state,
        record: Some(audit.clone()),
    };
    let result = trail::changing(audit.clone(), async {
        let scope = require_steward(&caller)?;
        let dataset = stewarded(&state, &scope, &path)?;
        not_retired(&dataset)?;
        let format = upload_format(&req)?;
        let csv = csv_options(&req, format)?;
        audit.format = Some(format!("{format:?}").to_lowercase());
        // Held until the answer: receiving and decoding both count. A full
        // server answers at once rather than queueing bodies it cannot take.
        let _slot = state
            .upload_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyUploads(UPLOAD_RETRY_SECS))?;
        let max = state.ingest.max_upload_bytes;
        if declared_length(&req).is_some_and(|len| len > max) {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(max).unwrap_or(usize::MAX),
            ));
        }
        let staging = state
            .catalog
            .staging()
            .await
            .map_err(|e| write_error(e, UnprocessableKind::UploadInvalid))?;
        let received = receive(&state, payload, &staging).await?;
        let body = ingest::Body {
            path: staging.body(),
            format,
            csv,
        };
        let key = state.engine.profile_key();
        let (published, summary) = ingest::upload(
            &state.catalog,
            &dataset,
            staging,
            body,
            &state.ingest,
            state.limits.batch_rows,
            Publication {
                by: caller.principal().map_or("", |p| p.sub.as_str()),
                key: &key,
                based_on: None,
            },
        )
        .await
        .map_err(upload_error)?;
        audit.version = Some(published.version);
        audit.bytes = Some(received);
        audit.duration_ms = Some(started.elapsed().as_millis() as u64);
        let (answer, rows) = new_version_answer(&published, &summary, Some(received))?;
        audit.rows = Some(rows);
        Ok(answer)
    })
    .await;
    abandoned.record = None;
    record(&state, audit, &result).await;
    result
}

/// Why a new version (an upload or a rewrite) was not made.
pub(super) fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::NothingToRewrite(detail) => ApiError::Conflict {
            kind: ConflictKind::NothingToRewrite,
            detail,
        },
        UploadError::Ingest(failure) => ingest_error(failure),
        UploadError::Write(e) => write_error(e, UnprocessableKind::SchemaMismatch),
    }
}

/// The answer to a new version (an upload or a rewrite): 201 with the
/// version, its rows and schema, and what the steward should do next; and
/// the version's rows, for the trail.
pub(super) fn new_version_answer(
    published: &Published,
    summary: &Summary,
    received: Option<u64>,
) -> Result<(HttpResponse, u64), ApiError> {
    let version = published
        .dataset
        .versions
        .get(&published.version)
        .ok_or_else(|| Internal::new("the uploaded version vanished"))?;
    let id = published.dataset.id();
    let mut warnings: Vec<String> = if let Some(change) = published.change {
        vec![format!(
            "version {} is held for an admin, not published: its data looks to hold what a more protected column held ({}); readers keep version {} until an admin approves change {change} (POST /v1/datasets/{id}/changes/{change}/approve; CLI: sluice datasets approve {id} {change}); GET /v1/datasets/{id}/data?version={}&as=tier shows you what it holds",
            published.version,
            published.findings.join("; "),
            published.dataset.manifest.version,
            published.version,
        )]
    } else if published.held {
        vec![format!(
            "version {} is held for review, not published: its columns ({}) came from the file and are classified 'none'; classify the sensitive ones with PATCH /v1/datasets/{id} (CLI: sluice datasets edit {id} --classify COLUMN=direct-identifier), look at it as readers would with GET /v1/datasets/{id}/data?version={}&as=tier, then publish with POST /v1/datasets/{id}/publish (CLI: sluice datasets publish {id})",
            published.version,
            published
                .dataset
                .manifest
                .columns
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            published.version,
        )]
    } else {
        published
            .added_columns
            .iter()
            .map(|c| {
                format!(
                    "column '{c}' was added with classification 'none' (served as is): classify it with PATCH /v1/datasets/{id} if it is sensitive"
                )
            })
            .collect()
    };
    warnings.extend(summary.warnings.iter().cloned());
    let answer = HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!(
                "/v1/datasets/{id}/data?version={}&as=tier",
                published.version
            ),
        ))
        .json(json!({
            "id": id,
            "version": published.version,
            "status": published.dataset.status(),
            "in_review": published.held,
            "change": published.change,
            "findings": published.findings,
            "rows": version.rows,
            "bytes": version.bytes,
            "uploaded_bytes": received,
            "schema": summary.columns,
            "url": format!("/v1/datasets/{id}"),
            // What the dataset's tier sees of the new version: its steward's
            // preview, which works for held versions too.
            "data_url": format!("/v1/datasets/{id}/data?version={}&as=tier", published.version),
            "renamed_columns": summary
                .renamed
                .iter()
                .map(|(from, to)| (from.clone(), Value::from(to.as_str())))
                .collect::<serde_json::Map<_, _>>(),
            "inferred": summary
                .inferred
                .iter()
                .map(|(column, words)| (column.clone(), Value::from(words.as_str())))
                .collect::<serde_json::Map<_, _>>(),
            "warnings": warnings,
        }));
    Ok((answer, version.rows))
}

/// How a CSV upload is written, from the query string: `delimiter` and
/// `quote` (one character; `tab` for a tab), `header` (`present`, the
/// default, or `absent`), `null` (comma-separated texts that mean a
/// missing value), `date_format` (`%d/%m/%Y` or `%m/%d/%Y`) and `rename`
/// (`header cell=column,…`). Refused for other formats, where they would
/// mean nothing.
fn csv_options(req: &HttpRequest, format: UploadFormat) -> Result<CsvOptions, ApiError> {
    let query = web::Query::<CsvParams>::from_query(req.query_string())
        .map_err(|e| ApiError::InvalidParameter(e.to_string()))?
        .into_inner();
    let given = query.delimiter.is_some()
        || query.quote.is_some()
        || query.header.is_some()
        || query.null.is_some()
        || query.date_format.is_some()
        || query.rename.is_some();
    if given && format != UploadFormat::Csv {
        return Err(ApiError::InvalidParameter(
            "delimiter, quote, header, null, date_format and rename apply to CSV uploads only"
                .into(),
        ));
    }
    let header = match query.header.as_deref() {
        None | Some("present") => true,
        Some("absent") => false,
        Some(other) => {
            return Err(ApiError::InvalidParameter(format!(
                "header must be 'present' or 'absent', not '{}'",
                crate::util::echo::cut(other)
            )));
        }
    };
    CsvOptions::from_text(ingest::CsvText {
        delimiter: query.delimiter.as_deref(),
        quote: query.quote.as_deref(),
        header,
        null: query.null.as_deref(),
        date_format: query.date_format.as_deref(),
        rename: query.rename.as_deref(),
    })
    .map_err(ApiError::InvalidParameter)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(in crate::http) struct CsvParams {
    delimiter: Option<String>,
    quote: Option<String>,
    header: Option<String>,
    null: Option<String>,
    date_format: Option<String>,
    rename: Option<String>,
}

/// What a refused upload is told to wait: roughly a small upload's time.
pub(super) const UPLOAD_RETRY_SECS: u64 = 5;

fn upload_format(req: &HttpRequest) -> Result<UploadFormat, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if req.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(ApiError::UnsupportedMediaType(
            "send uploads without Content-Encoding (Parquet and Arrow compress themselves)".into(),
        ));
    }
    UploadFormat::from_media_type(content_type).ok_or_else(|| {
        ApiError::UnsupportedMediaType(format!(
            "upload Parquet ({}), CSV ({}) or Arrow IPC ({}), named by Content-Type",
            UploadFormat::Parquet.media_type(),
            UploadFormat::Csv.media_type(),
            UploadFormat::Arrow.media_type()
        ))
    })
}

fn declared_length(req: &HttpRequest) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The staging disk failed (full, most likely): nothing was changed.
fn staging_failed(e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, "staging an upload failed");
    ApiError::StorageUnavailable
}

/// Streams the body to the staging folder, counting bytes (the payload
/// extractor enforces no limit) and giving up on a stalled body.
async fn receive(
    state: &AppState,
    mut payload: web::Payload,
    staging: &Staging,
) -> Result<u64, ApiError> {
    let max = state.ingest.max_upload_bytes;
    let idle = Duration::from_secs(state.ingest.body_idle_timeout_secs.max(1));
    let file = tokio::fs::File::create(staging.body())
        .await
        .map_err(staging_failed)?;
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut received: u64 = 0;
    loop {
        let chunk = match tokio::time::timeout(idle, payload.next()).await {
            Err(_) => return Err(ApiError::UploadTimeout(idle.as_secs())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(error = %e, "upload body broke off");
                return Err(ApiError::UploadIncomplete);
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        received += chunk.len() as u64;
        if received > max {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(max).unwrap_or(usize::MAX),
            ));
        }
        file.write_all(&chunk).await.map_err(staging_failed)?;
    }
    file.flush().await.map_err(staging_failed)?;
    if received == 0 {
        return Err(ApiError::Unprocessable {
            kind: UnprocessableKind::UploadInvalid,
            detail: "the upload body is empty".into(),
        });
    }
    Ok(received)
}

fn ingest_error(failure: Failure) -> ApiError {
    match failure {
        Failure::Invalid(detail) => ApiError::Unprocessable {
            kind: UnprocessableKind::UploadInvalid,
            detail,
        },
        Failure::SchemaMismatch(detail) => ApiError::Unprocessable {
            kind: UnprocessableKind::SchemaMismatch,
            detail,
        },
        // The worker's cause crossed a process boundary as text.
        Failure::Internal(cause) => Internal::caused("running the ingest worker", cause).into(),
        Failure::StorageFull(cause) => {
            tracing::error!(cause, "an upload's output could not be written");
            ApiError::StorageUnavailable
        }
    }
}
