//! `GET /v1/datasets/{id}/data`, `POST /v1/datasets/{id}/query` and
//! `GET /v1/datasets/{id}/aggregate`: a slice from query parameters or a
//! JSON body, or a disclosure-controlled aggregate. Handlers only parse;
//! [`serve`] resolves the dataset, asks the policy, plans, audits and
//! streams the chunks as they come, the same way for all three.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use std::sync::Arc;
use std::time::Instant;

use super::caller::{rate_key, share_key};
use super::problem::{self, ApiError};
use super::{AppState, privacy, trail};
use crate::audit::Event;
use crate::auth::Caller;
use crate::catalog::{Dataset, Version};
use crate::domain::DatasetId;
use crate::formats::{Coding, Format, negotiate};
use crate::policy::{self, AccessPlan, Decision, Mode, Policy};
use crate::slice::parts::{self, Part};
use crate::slice::{self, AggregateRequest, SliceRequest, SliceStream};
use crate::util::internal::OrInternal;

/// Query parameters of `GET …/data`. Numbers arrive as text so errors can
/// name the parameter.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct DataParams {
    columns: Option<String>,
    filter: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
    version: Option<String>,
    format: Option<String>,
    /// Arrow answers: `lz4` or `zstd` body compression (default none).
    compression: Option<String>,
    grant: Option<String>,
    /// Stewards and admins: read as the dataset's `tier`, or as one of its
    /// grants (by id), would; at most [`PREVIEW_ROWS`] rows, any version
    /// (held ones too).
    #[serde(rename = "as")]
    #[param(rename = "as")]
    view_as: Option<String>,
}

/// The most rows a preview (`as=`) answers.
const PREVIEW_ROWS: u64 = 100;
/// The rows a preview answers without a `limit`.
const PREVIEW_DEFAULT_ROWS: u64 = 20;

/// The JSON body of `POST …/query`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = SliceQuery)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryBody {
    #[serde(default)]
    pub(super) columns: Option<Columns>,
    pub(super) filter: Option<String>,
    pub(super) limit: Option<u64>,
    pub(super) offset: Option<u64>,
    pub(super) version: Option<u64>,
    pub(super) format: Option<String>,
    /// Arrow answers: `lz4` or `zstd` body compression (default none).
    pub(super) compression: Option<String>,
    pub(super) grant: Option<String>,
}

impl QueryBody {
    /// The slice asked for, the format, the compression and the grant.
    pub(super) fn into_parts(
        self,
    ) -> (SliceRequest, Option<String>, Option<String>, Option<String>) {
        let slice = SliceRequest {
            columns: self.columns.map(|c| match c {
                Columns::List(list) => list,
                Columns::Text(text) => split_columns(&text),
            }),
            filter: self.filter,
            limit: self.limit,
            offset: self.offset,
        };
        (slice, self.format, self.compression, self.grant)
    }
}

/// Columns as a JSON list or a comma-separated string.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum Columns {
    List(Vec<String>),
    Text(String),
}

/// What a data request plans: rows, or a disclosure-controlled aggregate.
/// Both travel the same path through [`answer`].
#[derive(Debug)]
pub(crate) enum Planner {
    Slice(SliceRequest),
    Aggregate(AggregateRequest),
}

impl Planner {
    fn event(&self) -> Event {
        match self {
            Planner::Slice(_) => Event::Data,
            Planner::Aggregate(_) => Event::Aggregate,
        }
    }

    /// What the audit trail records as the request's columns and filter.
    fn columns_and_filter(&self) -> (Option<Vec<String>>, Option<String>) {
        match self {
            Planner::Slice(s) => (s.columns.clone(), s.filter.clone()),
            Planner::Aggregate(a) => (
                Some(a.group_by.iter().chain(&a.measures).cloned().collect()),
                a.filter.clone(),
            ),
        }
    }
}

/// Which rows of the version an answer covers.
#[derive(Debug, Clone)]
pub(crate) enum Cut {
    /// All of them, in one stream.
    Whole,
    /// All of them, cut into at most `most` parts of at least `rows_each`
    /// rows when the answer may be cut ([`parts`]): this answer is the
    /// first part, and [`Answered::later_parts`] the others.
    Split { most: usize, rows_each: u64 },
    /// One part of an answer cut before, under the access in force now,
    /// which must still be `plan` (see [`Answered::plan_print`]): the
    /// parts of one answer are all cut under one plan, or not served.
    Part { part: Part, plan: String },
}

/// A request with everything parsed.
pub(crate) struct Wanted {
    planner: Planner,
    cut: Cut,
    version: Option<u64>,
    format: Option<String>,
    /// `compression=` (Arrow answers).
    compression: Option<String>,
    grant: Option<String>,
    /// Read as this grant, or the tier, would (stewards' preview).
    view_as: Option<String>,
    /// Never content-coded, whatever `Accept-Encoding` says (answers read
    /// by the server itself, such as a page's preview).
    plain: bool,
}

impl Wanted {
    /// A request from a front door that always answers Arrow (Flight SQL),
    /// read under `grant` (or whatever access the caller has), covering
    /// the rows `cut` says.
    pub(crate) fn arrow(planner: Planner, grant: Option<String>, cut: Cut) -> Self {
        Wanted {
            planner,
            cut,
            version: None,
            format: Some("arrow".into()),
            compression: None,
            grant,
            view_as: None,
            plain: true,
        }
    }
}

pub(super) fn split_columns(text: &str) -> Vec<String> {
    text.split(',')
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect()
}

pub(super) fn number(name: &str, value: Option<&str>) -> Result<Option<u64>, ApiError> {
    value
        .map(|v| {
            v.trim().parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter(format!("{name} must be a whole number ≥ 0"))
            })
        })
        .transpose()
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(get, path = "/v1/datasets/{id}/data", tag = "data", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), DataParams), responses((status = 200, description = "Your slice, streamed", content((Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"), (String = "text/csv; charset=utf-8"), (String = "application/x-ndjson")))))]
pub(super) async fn get_data(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<DataParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let mut slice = SliceRequest {
        columns: p.columns.as_deref().map(split_columns),
        filter: p.filter,
        ..Default::default()
    };
    let numbers = (|| {
        slice.limit = number("limit", p.limit.as_deref())?;
        slice.offset = number("offset", p.offset.as_deref())?;
        number("version", p.version.as_deref())
    })();
    let wanted = Wanted {
        planner: Planner::Slice(slice),
        cut: Cut::Whole,
        version: None,
        format: p.format,
        compression: p.compression,
        grant: p.grant,
        view_as: p.view_as,
        plain: false,
    };
    serve(&state, &caller, &path, wanted, numbers, &req).await
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(post, path = "/v1/datasets/{id}/query", tag = "data", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), request_body = QueryBody, responses((status = 200, description = "Your slice, streamed", content((Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"), (String = "text/csv; charset=utf-8"), (String = "application/x-ndjson")))))]
pub(super) async fn post_query(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let b: QueryBody = super::body::parse_json(&state, &req, payload, "query").await?;

    let version = b.version;
    let (slice, format, compression, grant) = b.into_parts();
    let wanted = Wanted {
        planner: Planner::Slice(slice),
        cut: Cut::Whole,
        version: None,
        format,
        compression,
        grant,
        view_as: None,
        plain: false,
    };
    serve(&state, &caller, &path, wanted, Ok(version), &req).await
}

/// Query parameters of `GET …/aggregate`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AggregateParams {
    /// Columns to group by (aggregate-only and DP access: declared fields).
    group_by: Option<String>,
    /// `count`, `sum(c)`, `mean(c)` (`min`/`max` for callers who may read rows).
    measures: Option<String>,
    /// For callers who may read rows, a filter; for aggregate-only and DP
    /// access, a selection of categories of declared fields
    /// (`region IN ('north', 'south') AND length_of_stay >= 8`).
    filter: Option<String>,
    version: Option<String>,
    format: Option<String>,
    /// Arrow answers: `lz4` or `zstd` body compression (default none).
    compression: Option<String>,
    grant: Option<String>,
    /// Differential privacy only: how much of the budget to spend.
    epsilon: Option<String>,
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(get, path = "/v1/datasets/{id}/aggregate", tag = "data", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), AggregateParams), responses((status = 200, description = "A disclosure-controlled or differentially private aggregate", content((Vec<u8> = "application/vnd.apache.arrow.stream"), (Vec<u8> = "application/vnd.apache.parquet"), (String = "text/csv; charset=utf-8"), (String = "application/x-ndjson")))))]
pub(super) async fn get_aggregate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<AggregateParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p = params.into_inner();
    let epsilon = p
        .epsilon
        .as_deref()
        .map(|e| {
            e.trim()
                .parse::<f64>()
                .map_err(|_| ApiError::InvalidParameter("epsilon must be a number above 0".into()))
        })
        .transpose();
    let wanted = Wanted {
        planner: Planner::Aggregate(AggregateRequest {
            group_by: p.group_by.as_deref().map(split_columns).unwrap_or_default(),
            measures: p.measures.as_deref().map(split_columns).unwrap_or_default(),
            filter: p.filter,
            epsilon: epsilon.as_ref().ok().copied().flatten(),
        }),
        cut: Cut::Whole,
        version: None,
        format: p.format,
        compression: p.compression,
        grant: p.grant,
        view_as: None,
        plain: false,
    };
    let version = epsilon.and_then(|_| number("version", p.version.as_deref()));
    serve(&state, &caller, &path, wanted, version, &req).await
}

/// The first `rows` rows a caller may see of a dataset's current
/// version, as text cells under their column names: the same path, policy
/// and audit record as `GET …/data?limit=rows&format=csv`, so a page's
/// preview is a data access like any other.
pub(super) async fn preview(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    rows: u64,
    req: &HttpRequest,
) -> Result<(Vec<String>, Vec<Vec<String>>), ApiError> {
    let body = first_rows_in(state, caller, raw_id, rows, "csv", req).await?;
    let mut reader = csv::Reader::from_reader(body.as_ref());
    let header = reader
        .headers()
        .or_internal("reading a preview's header")?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut cells = Vec::new();
    for record in reader.records() {
        let record = record.or_internal("reading a preview")?;
        cells.push(record.iter().map(str::to_owned).collect());
    }
    Ok((header, cells))
}

/// The first `rows` rows a caller may see of a dataset's current version,
/// as Arrow batches, through the same path, policy and audit record as
/// `GET …/data?limit=rows` (a page's column overview reads them).
pub(super) async fn first_rows(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    rows: u64,
    req: &HttpRequest,
) -> Result<Vec<arrow::array::RecordBatch>, ApiError> {
    batches(first_rows_in(state, caller, raw_id, rows, "arrow", req).await?)
}

/// The released counts of one declared field, as `GET …/aggregate?
/// group_by=field&measures=count` answers them to `caller` (disclosure
/// control, audit record and all): what a page shows an aggregate-only
/// caller about a column.
pub(super) async fn released_counts(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    field: &str,
    req: &HttpRequest,
) -> Result<Vec<arrow::array::RecordBatch>, ApiError> {
    let planner = Planner::Aggregate(AggregateRequest {
        group_by: vec![field.to_owned()],
        measures: vec!["count".to_owned()],
        filter: None,
        epsilon: None,
    });
    batches(answer_for_page(state, caller, raw_id, planner, "arrow", req).await?)
}

fn batches(body: bytes::Bytes) -> Result<Vec<arrow::array::RecordBatch>, ApiError> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .or_internal("reading rows for a page")?;
    Ok(reader
        .collect::<Result<Vec<_>, _>>()
        .or_internal("reading rows for a page")?)
}

/// The whole answer to `GET …/data?limit=rows&format=format` for
/// `caller`, uncoded, read by the server itself for a page.
async fn first_rows_in(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    rows: u64,
    format: &str,
    req: &HttpRequest,
) -> Result<bytes::Bytes, ApiError> {
    let planner = Planner::Slice(SliceRequest {
        limit: Some(rows),
        ..Default::default()
    });
    answer_for_page(state, caller, raw_id, planner, format, req).await
}

/// The whole answer to a data request for `caller`, uncoded, read by the
/// server itself for a page: the same path, policy and audit as the API.
async fn answer_for_page(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    planner: Planner,
    format: &str,
    req: &HttpRequest,
) -> Result<bytes::Bytes, ApiError> {
    let wanted = Wanted {
        planner,
        cut: Cut::Whole,
        version: None,
        format: Some(format.into()),
        compression: None,
        grant: None,
        view_as: None,
        plain: true,
    };
    let response = serve(state, caller, raw_id, wanted, Ok(None), req).await?;
    actix_web::body::to_bytes(response.into_body())
        .await
        .map_err(|_| crate::util::internal::Internal::new("reading rows for a page").into())
}

pub(super) fn accept(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
}

/// What a caller may read of one version of one dataset.
pub(crate) struct Access {
    pub(crate) dataset: Arc<Dataset>,
    pub(crate) version: Version,
    pub(crate) plan: AccessPlan,
}

/// Resolves the dataset and version and asks the policy.
pub(crate) fn authorize(
    state: &AppState,
    policy: &Policy,
    caller: &Caller,
    raw_id: &str,
    version: Option<u64>,
    grant: Option<&str>,
) -> Result<Access, ApiError> {
    // An id that is not a valid slug cannot name a dataset.
    let id = DatasetId::parse(raw_id).map_err(|_| ApiError::DatasetNotFound)?;
    let dataset = state
        .catalog
        .snapshot()
        .get(&id)
        .filter(|d| d.manifest.is_live())
        .cloned()
        .ok_or(ApiError::DatasetNotFound)?;
    let today = time::OffsetDateTime::now_utc().date();
    let plan = match policy::evaluate(policy, caller, &dataset.manifest, grant, today) {
        Decision::Allow(plan) => plan,
        Decision::Deny(denial) => {
            tracing::info!(
                sub = caller.subject(),
                decision = "deny",
                ?denial,
                "access refused"
            );
            return Err(ApiError::Denied(denial));
        }
    };
    let version = dataset
        .version(version)
        .cloned()
        .ok_or(ApiError::VersionNotFound(version.unwrap_or_default()))?;
    Ok(Access {
        dataset,
        version,
        plan,
    })
}

/// What a steward or admin of the dataset reads as its tier, or one of its
/// grants, would, of any version (held ones too): how they check what they
/// publish. Others are refused as at any steward route (a caller who is no
/// steward at all, as if the dataset did not exist).
fn authorize_view(
    state: &AppState,
    policy: &Policy,
    caller: &Caller,
    raw_id: &str,
    version: Option<u64>,
    view: &str,
) -> Result<Access, ApiError> {
    let scope =
        super::steward_routes::require_steward(caller).map_err(|_| ApiError::DatasetNotFound)?;
    let dataset = super::steward_routes::stewarded(state, &scope, raw_id)?;
    let plan = match policy::view_as(policy, &dataset.manifest, view) {
        Some(Decision::Allow(plan)) => plan,
        Some(Decision::Deny(denial)) => return Err(ApiError::Denied(denial)),
        None => {
            return Err(ApiError::InvalidParameter(format!(
                "as takes 'tier' or the id of one of this dataset's grants, not '{}'",
                crate::util::echo::cut(view)
            )));
        }
    };
    let version = match version {
        Some(n) if n == dataset.manifest.in_review => dataset.in_review(),
        Some(n) => dataset.version(Some(n)),
        None => dataset.current().or_else(|| dataset.in_review()),
    }
    .cloned()
    .ok_or(ApiError::VersionNotFound(version.unwrap_or_default()))?;
    Ok(Access {
        dataset,
        version,
        plan,
    })
}

/// What makes an answer's bytes: a plan the engine runs, or a committed
/// file (or whole columns of it) sent as it is (`slice::committed`).
enum Work {
    Plan(datafusion::prelude::DataFrame),
    Committed(object_store::ObjectMeta, Option<Vec<usize>>),
}

/// A data request's answer, ready to send: what was authorised, in which
/// shape, the stream of encoded chunks, and what the caller is told beside
/// the bytes (a DP receipt, the disclosure rules in force). Every front
/// door (the HTTP routes here, Flight SQL) sends the same answer.
pub(crate) struct Answered {
    pub(crate) access: Access,
    pub(crate) format: Format,
    pub(crate) coding: Coding,
    pub(crate) stream: SliceStream,
    paid: Option<privacy::Paid>,
    /// The disclosure rules of the policy the answer was planned under.
    disclosure: policy::Disclosure,
    /// The parts after this one, when the answer was cut ([`Cut::Split`]).
    pub(crate) later_parts: Vec<Part>,
}

/// The one path every data and aggregate request takes: record → slot →
/// authorise → shape → plan → audit → stream. The policy is read once,
/// so one request never mixes two policies across a reload; a parameter
/// that does not parse (`version`), or a shape that cannot be served
/// (`format`, `compression`), is refused and recorded like any other
/// refusal, after the access decision, so it says nothing to a caller who
/// may not read the dataset. `rate_key` is whom the stream slot counts
/// against.
pub(crate) async fn answer(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    mut wanted: Wanted,
    version: Result<Option<u64>, ApiError>,
    shape: Result<(Format, Coding), ApiError>,
    rate_key: &str,
) -> Result<Answered, ApiError> {
    let started = Instant::now();
    let policy = state.policy.current();
    let event = match wanted.view_as {
        Some(_) => Event::Preview,
        None => wanted.planner.event(),
    };
    let mut record = trail::request_record(event, caller, raw_id);
    (record.columns, record.filter) = wanted.planner.columns_and_filter();
    if let Cut::Part { part, .. } = &wanted.cut {
        record.part = Some(part.label());
    }
    let prepared = async {
        wanted.version = version?;
        let slot = state
            .stream_slots
            .acquire(rate_key)
            .ok_or(ApiError::TooManyStreams)?;
        let access = match wanted.view_as.as_deref() {
            Some(view) => {
                if wanted.grant.is_some() {
                    return Err(ApiError::InvalidParameter(
                        "as and grant do not go together: as names the grant to read as".into(),
                    ));
                }
                if let Planner::Slice(slice) = &mut wanted.planner {
                    let limit = slice.limit.unwrap_or(PREVIEW_DEFAULT_ROWS);
                    slice.limit = Some(limit.min(PREVIEW_ROWS));
                }
                authorize_view(state, &policy, caller, raw_id, wanted.version, view)?
            }
            None => authorize(
                state,
                &policy,
                caller,
                raw_id,
                wanted.version,
                wanted.grant.as_deref(),
            )?,
        };
        let (format, coding) = shape?;
        // A place in the engine before any work (or privacy budget) is
        // spent on the answer; it is held until the answer's last byte.
        let place = state.engine.admit(&share_key(caller)).await?;
        let max_filter_bytes = state.limits.max_filter_bytes;
        let mut paid = None;
        let (mut part, mut later_parts) = (None, Vec::new());
        let work = match &wanted.planner {
            Planner::Slice(slice) => {
                if !access.plan.mode.serves_rows() {
                    return Err(ApiError::AggregateOnly(access.dataset.id().to_string()));
                }
                let mut cut = cut_parts(state, &wanted.cut, &access, slice).await?;
                if !cut.is_empty() {
                    let first = cut.remove(0);
                    part = Some(first.label());
                    later_parts = cut;
                    Work::Plan(state.engine.plan_part(
                        &access.version,
                        &access.plan,
                        slice,
                        max_filter_bytes,
                        &first,
                    )?)
                } else {
                    let from = slice::committed::from_file(&access.version, &access.plan, slice);
                    match from {
                        Some(from) if (format, coding) == (Format::Parquet, Coding::Identity) => {
                            Work::Committed(from.file.clone(), from.columns)
                        }
                        _ => Work::Plan(state.engine.plan(
                            &access.version,
                            &access.plan,
                            slice,
                            max_filter_bytes,
                        )?),
                    }
                }
            }
            Planner::Aggregate(aggregate) => Work::Plan(match &access.plan.budget {
                Some(budget) if access.plan.mode == Mode::Dp => {
                    let epsilon = privacy::epsilon_for(aggregate.epsilon, budget)?;
                    let query = state.engine.private_query(
                        &access.version,
                        &access.plan,
                        &access.dataset.manifest,
                        aggregate,
                        max_filter_bytes,
                        &policy.disclosure,
                    )?;
                    let request_id = record.request_id.clone().unwrap_or_default();
                    let (df, receipt) = privacy::pay_and_release(
                        state,
                        &access.plan,
                        budget,
                        query,
                        epsilon,
                        &request_id,
                    )
                    .await?;
                    paid = Some(receipt);
                    df
                }
                _ => {
                    if aggregate.epsilon.is_some() {
                        return Err(ApiError::InvalidParameter(
                            "epsilon applies only to differentially private access (a grant with mode = \"dp\")".into(),
                        ));
                    }
                    state
                        .engine
                        .aggregate(
                            &access.version,
                            &access.plan,
                            &access.dataset.manifest,
                            aggregate,
                            max_filter_bytes,
                            &policy.disclosure,
                        )
                        .await?
                }
            }),
        };
        let cut = (part, later_parts);
        Ok::<_, ApiError>((access, (format, coding), work, slot, paid, place, cut))
    }
    .await;
    let (access, (format, coding), work, slot, paid, place, (part, later_parts)) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            trail::refused(state, record, &e);
            return Err(e);
        }
    };
    record = trail::with_plan(record, &access.plan);
    record.privacy = paid.as_ref().map(|p| p.spend.clone());
    record.version = Some(access.version.number);
    record.format = Some(format.name().into());
    record.part = part;
    let on_finish = trail::on_finish(state, record.clone(), started, event, slot);
    let provenance = provenance(&access, Some(time::OffsetDateTime::now_utc()));
    let stream = match work {
        Work::Plan(df) => {
            let stream = state.engine.stream(
                df,
                &access.plan,
                (format, coding),
                provenance,
                place,
                on_finish,
            );
            trail::durable_then(state, &record, stream).await?
        }
        Work::Committed(file, columns) => {
            let from = slice::committed::FromFile {
                file: &file,
                columns,
            };
            let stream = state
                .engine
                .stream_committed(from, provenance, place, on_finish);
            trail::durable_then(state, &record, stream).await?
        }
    };
    state
        .metrics
        .first_byte
        .with_label_values(&[event.as_str()])
        .observe(started.elapsed().as_secs_f64());
    Ok(Answered {
        access,
        format,
        coding,
        stream,
        paid,
        disclosure: policy.disclosure,
        later_parts,
    })
}

/// The parts a slice is answered in (empty: it is answered whole), as
/// `cut` asks and the caller's access allows.
async fn cut_parts(
    state: &AppState,
    cut: &Cut,
    access: &Access,
    slice: &SliceRequest,
) -> Result<Vec<Part>, ApiError> {
    let splittable = parts::splittable(&access.plan, slice);
    match cut {
        Cut::Whole => Ok(Vec::new()),
        Cut::Split { .. } if !splittable => Ok(Vec::new()),
        Cut::Split { most, rows_each } => {
            Ok(state.engine.split(&access.version, *most, *rows_each).await?)
        }
        Cut::Part { part, plan }
            if splittable
                && part.version == access.version.number
                && *plan == plan_print(&access.plan) =>
        {
            Ok(vec![part.clone()])
        }
        Cut::Part { .. } => Err(ApiError::Conflict {
            kind: problem::ConflictKind::AccessChanged,
            detail: "your access to this dataset changed since the answer was cut in parts: run the statement again".into(),
        }),
    }
}

/// Records a data request refused before it reached [`answer`] (a Flight
/// SQL statement outside what is answered): `dataset` as far as it was
/// read, the caller's own text as the filter.
pub(crate) fn record_refused(
    state: &AppState,
    caller: &Caller,
    dataset: &str,
    text: &str,
    error: &ApiError,
) {
    let mut record = trail::request_record(Event::Data, caller, dataset);
    record.filter = Some(crate::util::echo::cut_to(text, 512));
    trail::refused(state, record, error);
}

/// An access plan as text, to tell whether two answers were planned
/// under the same one.
fn plan_print(plan: &AccessPlan) -> String {
    serde_json::to_string(plan).unwrap_or_default()
}

impl Answered {
    /// The plan this answer was made under, as [`Cut::Part`] takes it.
    pub(crate) fn plan_print(&self) -> String {
        plan_print(&self.access.plan)
    }

    /// What the caller is told beside the bytes (`aggregate`: the answer
    /// is a table of released cells): the version, and the row cap, the
    /// disclosure rules or the DP receipt.
    pub(crate) fn headers(&self, aggregate: bool) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        match (aggregate, &self.paid) {
            (false, _) => {
                if let Some(cap) = self.access.plan.max_rows {
                    headers.push(("sluice-row-cap", cap.to_string()));
                }
            }
            (true, Some(paid)) => headers.extend(privacy::headers(paid)),
            (true, None) => {
                let rules = &self.disclosure;
                headers.push((
                    "sluice-disclosure",
                    format!(
                        "min_count={}; round_to={}; dominance_pct={}; count_noise={}; sum_noise={}",
                        rules.min_count,
                        rules.round_to,
                        rules.dominance_pct,
                        rules.count_noise,
                        rules.sum_noise
                    ),
                ));
            }
        }
        headers.push((
            "sluice-dataset-version",
            self.access.version.number.to_string(),
        ));
        headers
    }
}

/// [`answer`] as an HTTP response: the shape from `format=`, `Accept`,
/// `compression=` and `Accept-Encoding`, the answer's headers, the chunks
/// streamed as they come.
async fn serve(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    wanted: Wanted,
    version: Result<Option<u64>, ApiError>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let shape = negotiate(wanted.format.as_deref(), accept(req))
        .map_err(ApiError::from)
        .and_then(|format| {
            let coding = coding(req, format, wanted.compression.as_deref(), wanted.plain)?;
            Ok((format, coding))
        });
    let aggregate = matches!(wanted.planner, Planner::Aggregate(_));
    let answered = answer(
        state,
        caller,
        raw_id,
        wanted,
        version,
        shape,
        &rate_key(req, caller),
    )
    .await?;
    let headers = answered.headers(aggregate);
    let mut response = streaming_response(answered);
    for (name, value) in headers {
        response.headers_mut().insert(
            header::HeaderName::from_static(name),
            header::HeaderValue::from_str(&value).or_internal("writing an answer's headers")?,
        );
    }
    Ok(response)
}

/// What a saved file should say about where it came from (Parquet footer
/// key-value metadata): the dataset, version, licence, publisher, a
/// citation, and the caller's own basis of access. Never a grant's row
/// filter or anything about other callers. `retrieved` is when the
/// caller got it; a snapshot, which callers with the same access share,
/// says nothing about when anyone read it.
pub(super) fn provenance(
    access: &Access,
    retrieved: Option<time::OffsetDateTime>,
) -> crate::formats::Provenance {
    let m = &access.dataset.manifest;
    let v = &access.version;
    let published = v.published.date().to_string();
    let retrieved = retrieved.map(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    });
    let basis = match &access.plan.basis {
        policy::Basis::Open => "open data".to_owned(),
        policy::Basis::Registered => "registered researcher".to_owned(),
        policy::Basis::Grant { id, purpose, .. } => format!("grant {id}: {purpose}"),
    };
    let mode = serde_json::to_value(access.plan.mode)
        .ok()
        .and_then(|m| m.as_str().map(str::to_owned))
        .unwrap_or_default();
    let when = retrieved
        .as_ref()
        .map(|t| format!(", retrieved {t}"))
        .unwrap_or_default();
    let mut pairs: Vec<(String, String)> = [
        ("sluice.dataset", m.id.to_string()),
        ("sluice.title", m.title.clone()),
        ("sluice.version", v.number.to_string()),
        ("sluice.published", published.clone()),
        ("sluice.publisher", m.publisher.clone()),
        ("sluice.license", m.license.clone()),
        (
            "sluice.citation",
            format!(
                "{}. {} (version {}, published {published}). Dataset '{}'{when} through Sluice.",
                m.publisher, m.title, v.number, m.id
            ),
        ),
        ("sluice.access", basis),
        ("sluice.mode", mode),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(t) = retrieved {
        pairs.push(("sluice.retrieved".into(), t));
    }
    pairs
}

/// How the answer is compressed (see [`Coding`]): for Arrow, as
/// `compression=` asks; for text, zstd when the request's
/// `Accept-Encoding` prefers it to none (never for `plain` answers, which
/// the server reads itself); else the bytes as they are.
fn coding(
    req: &HttpRequest,
    format: Format,
    compression: Option<&str>,
    plain: bool,
) -> Result<Coding, ApiError> {
    use actix_web::http::header::{AcceptEncoding, Encoding, Header};
    if let Some(name) = compression.filter(|c| !c.is_empty()) {
        let coding = Coding::from_name(name).ok_or_else(|| {
            ApiError::InvalidParameter(format!(
                "compression '{}' is not one of lz4, zstd, none",
                crate::util::echo::cut_to(name, 40)
            ))
        })?;
        if format != Format::Arrow && coding != Coding::Identity {
            return Err(ApiError::InvalidParameter(
                "compression applies to Arrow answers: Parquet is always compressed, and CSV or NDJSON are sent as zstd when the request says Accept-Encoding: zstd".into(),
            ));
        }
        return Ok(coding);
    }
    if plain
        || !matches!(format, Format::Csv | Format::Ndjson)
        || !req.headers().contains_key(header::ACCEPT_ENCODING)
    {
        return Ok(Coding::Identity);
    }
    match AcceptEncoding::parse(req) {
        Ok(accepted)
            if accepted.negotiate([Encoding::zstd(), Encoding::identity()].iter())
                == Some(Encoding::zstd()) =>
        {
            Ok(Coding::Zstd)
        }
        _ => Ok(Coding::Identity),
    }
}

/// A 200 whose body is the slice's chunks as they come.
fn streaming_response(answered: Answered) -> HttpResponse {
    let Answered {
        access,
        format,
        coding,
        stream,
        ..
    } = answered;
    let body = stream.into_chunks();
    let mut response = HttpResponse::Ok();
    response
        .content_type(format.media_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}-v{}.{}\"",
                access.dataset.id(),
                access.version.number,
                format.extension()
            ),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if format == Format::Csv {
        response.insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"));
    }
    if matches!(format, Format::Csv | Format::Ndjson) {
        response.insert_header((header::VARY, "accept-encoding"));
    }
    if coding == Coding::Zstd && matches!(format, Format::Csv | Format::Ndjson) {
        response.insert_header((header::CONTENT_ENCODING, "zstd"));
    }
    response.streaming(body)
}
