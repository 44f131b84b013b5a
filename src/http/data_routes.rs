//! `GET /v1/datasets/{id}/data` and `POST /v1/datasets/{id}/query`: the
//! same slice, from query parameters or a JSON body. A handler resolves the
//! dataset, asks the policy, plans and starts the slice, and streams the
//! chunks as they come.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::problem::ApiError;
use crate::auth::Caller;
use crate::domain::DatasetId;
use crate::formats::{Format, negotiate};
use crate::policy::{self, Decision};
use crate::slice::SliceRequest;

/// Query parameters of `GET …/data`. Numbers arrive as text so errors can
/// name the parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataParams {
    columns: Option<String>,
    filter: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    version: Option<String>,
    format: Option<String>,
    grant: Option<String>,
}

/// The JSON body of `POST …/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    #[serde(default)]
    columns: Option<Columns>,
    filter: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
    version: Option<u64>,
    format: Option<String>,
    grant: Option<String>,
}

/// Columns as a JSON list or a comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    List(Vec<String>),
    Text(String),
}

/// A slice request with everything parsed.
struct Wanted {
    slice: SliceRequest,
    version: Option<u64>,
    format: Option<String>,
    grant: Option<String>,
}

fn split_columns(text: &str) -> Vec<String> {
    text.split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

fn number(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter(format!("{name} must be a whole number ≥ 0"))
            })
        })
        .transpose()
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
pub async fn get_data(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<DataParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let wanted = Wanted {
        slice: SliceRequest {
            columns: p.columns.as_deref().map(split_columns),
            filter: p.filter,
            limit: number("limit", p.limit.as_deref())?,
            offset: number("offset", p.offset.as_deref())?,
        },
        version: number("version", p.version.as_deref())?,
        format: p.format,
        grant: p.grant,
    };
    serve(&state, &caller, &path, wanted, &req).await
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
pub async fn post_query(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<QueryBody>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let wanted = Wanted {
        slice: SliceRequest {
            columns: b.columns.map(|c| match c {
                Columns::List(list) => list,
                Columns::Text(text) => split_columns(&text),
            }),
            filter: b.filter,
            limit: b.limit,
            offset: b.offset,
        },
        version: b.version,
        format: b.format,
        grant: b.grant,
    };
    serve(&state, &caller, &path, wanted, &req).await
}

async fn serve(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    wanted: Wanted,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // An id that is not a valid slug cannot name a dataset.
    let id = DatasetId::parse(raw_id).map_err(|_| ApiError::DatasetNotFound)?;
    let dataset = state.catalog.get(&id).ok_or(ApiError::DatasetNotFound)?;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = negotiate(wanted.format.as_deref(), accept)?;
    let today = time::OffsetDateTime::now_utc().date();
    let plan = match policy::evaluate(
        &state.policy,
        caller,
        &dataset.manifest,
        wanted.grant.as_deref(),
        today,
    ) {
        Decision::Allow(plan) => plan,
        Decision::Deny(denial) => {
            tracing::info!(
                sub = caller.subject(),
                decision = "deny",
                ?denial,
                "slice refused"
            );
            return Err(ApiError::Denied(denial));
        }
    };
    let version = dataset
        .version(wanted.version)
        .ok_or(ApiError::VersionNotFound(
            wanted.version.unwrap_or_default(),
        ))?;
    let df = state
        .engine
        .plan(version, &plan, &wanted.slice, state.limits.max_filter_bytes)
        .await?;
    tracing::info!(
        sub = caller.subject(),
        decision = "allow",
        version = version.number,
        format = format.name(),
        "slice started"
    );
    let stream = state.engine.stream(df, format).await?;
    let body = futures::stream::iter(stream.first.map(Ok)).chain(ReceiverStream::new(stream.rest));

    let mut response = HttpResponse::Ok();
    response
        .content_type(format.media_type())
        .insert_header(("Sluice-Dataset-Version", version.number.to_string()))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}-v{}.{}\"",
                id,
                version.number,
                format.extension()
            ),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(cap) = plan.max_rows {
        response.insert_header(("Sluice-Row-Cap", cap.to_string()));
    }
    if format == Format::Csv {
        response.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    }
    Ok(response.streaming(body))
}
