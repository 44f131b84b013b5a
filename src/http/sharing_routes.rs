//! The Delta Sharing REST protocol under `/delta-sharing/`, so the
//! unmodified Delta Sharing connectors (pandas, Spark) read Sluice with a
//! profile file. Unlike a server that hands out a table's raw files and
//! leaves masks and row filters to the client, every file listed here is a
//! policy-applied snapshot of the caller's slice (see `snapshot_routes`).
//!
//! Answers follow the protocol: list bodies `{"items":[…],"nextPageToken"}`,
//! table answers as `application/x-ndjson` with a `Delta-Table-Version`
//! header, errors as `{"errorCode","message"}` with the status the v1 API
//! would give (never a 5xx for a permanent error: the connectors retry
//! those for minutes).

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::data_routes::authorize;
use super::problem::ApiError;
use super::snapshot_routes::issue;
use crate::auth::Caller;
use crate::formats::sanitized_schema;
use crate::sharing::{self, SCHEMA, Table, predicate, spark_schema};
use crate::slice::SliceRequest;

/// Most items on one page of a list.
const MAX_PAGE: usize = 500;

/// What the connectors read in `delta-sharing-capabilities`: Sluice answers
/// in the Parquet format of the protocol, whatever the client asked for.
const CAPABILITIES: &str = "responseformat=parquet";

pub(super) fn routes(cfg: &mut web::ServiceConfig) {
    let table = "/shares/{share}/schemas/{schema}/tables/{table}";
    cfg.service(
        web::scope("/delta-sharing")
            .route("/shares", web::get().to(list_shares))
            .route("/shares/{share}", web::get().to(get_share))
            .route("/shares/{share}/schemas", web::get().to(list_schemas))
            .route(
                "/shares/{share}/schemas/{schema}/tables",
                web::get().to(list_tables),
            )
            .route("/shares/{share}/all-tables", web::get().to(list_all_tables))
            .route(&format!("{table}/version"), web::get().to(table_version))
            .route(&format!("{table}/metadata"), web::get().to(table_metadata))
            .route(&format!("{table}/query"), web::post().to(query_table))
            .default_service(web::to(|| async {
                Err::<HttpResponse, _>(SharingError(ApiError::RouteNotFound))
            })),
    );
}

/// An error in the protocol's shape.
#[derive(Debug)]
pub(super) struct SharingError(ApiError);

impl std::fmt::Display for SharingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Into<ApiError>> From<E> for SharingError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl ResponseError for SharingError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        // The v1 answer decides status and headers (Retry-After,
        // WWW-Authenticate) and logs internal faults; only the body changes.
        let v1 = self.0.error_response();
        let status = v1.status();
        let code = match status {
            StatusCode::BAD_REQUEST => "INVALID_PARAMETER_VALUE",
            StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
            StatusCode::FORBIDDEN => "PERMISSION_DENIED",
            StatusCode::NOT_FOUND => "RESOURCE_DOES_NOT_EXIST",
            StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
            StatusCode::SERVICE_UNAVAILABLE => "TEMPORARILY_UNAVAILABLE",
            s if s.is_client_error() => "INVALID_PARAMETER_VALUE",
            _ => "INTERNAL_ERROR",
        };
        let mut response = HttpResponse::build(status);
        for name in [header::RETRY_AFTER, header::WWW_AUTHENTICATE] {
            if let Some(value) = v1.headers().get(&name) {
                response.insert_header((name, value.clone()));
            }
        }
        response.content_type("application/json").body(
            json!({
                "errorCode": code,
                "message": self.0.detail(),
                "type": self.0.kind(),
            })
            .to_string(),
        )
    }
}

type Answer = Result<HttpResponse, SharingError>;

/// `maxResults` and `pageToken` of the list routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PageParams {
    #[serde(rename = "maxResults")]
    max_results: Option<String>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
}

/// One page of `items` (already sorted by `key`), after the token's place.
fn page<T>(items: Vec<T>, params: &PageParams, key: impl Fn(&T) -> String) -> Answer
where
    T: serde::Serialize,
{
    let size = match params.max_results.as_deref() {
        None => MAX_PAGE,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(|n| n.min(MAX_PAGE))
            .ok_or_else(|| {
                ApiError::InvalidParameter("maxResults must be a whole number from 1".into())
            })?,
    };
    let after = params
        .page_token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| {
            URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::InvalidParameter("pageToken is not one this server issued".into())
                })
        })
        .transpose()?;
    let rest: Vec<T> = items
        .into_iter()
        .filter(|item| after.as_ref().is_none_or(|a| key(item) > *a))
        .collect();
    let more = rest.len() > size;
    let shown: Vec<T> = rest.into_iter().take(size).collect();
    let next = shown
        .last()
        .filter(|_| more)
        .map(|last| URL_SAFE_NO_PAD.encode(key(last)));
    let mut body = json!({ "items": shown });
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    Ok(json_answer(&body))
}

/// A JSON document on one line. The Python connector decodes answers as
/// text and splits lines on U+2028, U+2029 and U+0085 too, which JSON
/// allows raw inside strings (a title could hold one): they are escaped.
fn one_line(value: &Value) -> String {
    value
        .to_string()
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
        .replace('\u{85}', "\\u0085")
}

fn json_answer(value: &Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json; charset=utf-8")
        .body(one_line(value))
}

/// The tables `caller` may read, from the current catalogue and policy.
fn tables_of(state: &AppState, caller: &Caller) -> Vec<Table> {
    sharing::tables(&state.catalog.snapshot(), &state.policy.current(), caller)
}

fn shares_of(tables: &[Table]) -> Vec<String> {
    let mut shares: Vec<String> = tables.iter().map(|t| t.share.clone()).collect();
    shares.dedup();
    shares
}

/// The share, if the caller may read a table in it.
fn find_share(state: &AppState, caller: &Caller, share: &str) -> Result<Vec<Table>, SharingError> {
    let tables: Vec<Table> = tables_of(state, caller)
        .into_iter()
        .filter(|t| t.share == share)
        .collect();
    if tables.is_empty() {
        return Err(ApiError::RouteNotFound.into());
    }
    Ok(tables)
}

fn table_json(t: &Table) -> Value {
    json!({ "name": t.name, "schema": SCHEMA, "share": t.share })
}

#[utoipa::path(get, path = "/delta-sharing/shares", tag = "delta-sharing", params(PageParams), responses((status = 200, description = "Shares (sectors) with a table you may read", body = Object)))]
pub(super) async fn list_shares(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    params: web::Query<PageParams>,
) -> Answer {
    let shares = shares_of(&tables_of(&state, &caller?));
    let items: Vec<Value> = shares.iter().map(|s| json!({ "name": s })).collect();
    page(items, &params, |item| {
        item["name"].as_str().unwrap_or_default().to_owned()
    })
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health")), responses((status = 200, description = "The share", body = Object)))]
pub(super) async fn get_share(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<String>,
) -> Answer {
    find_share(&state, &caller?, &path)?;
    Ok(json_answer(&json!({ "share": { "name": path.as_str() } })))
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}/schemas", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), PageParams), responses((status = 200, description = "The share's one schema", body = Object)))]
pub(super) async fn list_schemas(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<String>,
    params: web::Query<PageParams>,
) -> Answer {
    find_share(&state, &caller?, &path)?;
    let items = vec![json!({ "name": SCHEMA, "share": path.as_str() })];
    page(items, &params, |item| {
        item["name"].as_str().unwrap_or_default().to_owned()
    })
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}/schemas/{schema}/tables", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), ("schema" = String, Path, description = "Always `default`", example = "default"), PageParams), responses((status = 200, description = "Tables you may read", body = Object)))]
pub(super) async fn list_tables(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String)>,
    params: web::Query<PageParams>,
) -> Answer {
    let (share, schema) = path.into_inner();
    let tables = find_share(&state, &caller?, &share)?;
    if schema != SCHEMA {
        return Err(ApiError::RouteNotFound.into());
    }
    let items: Vec<Value> = tables.iter().map(table_json).collect();
    page(items, &params, |item| {
        item["name"].as_str().unwrap_or_default().to_owned()
    })
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}/all-tables", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), PageParams), responses((status = 200, description = "Tables you may read", body = Object)))]
pub(super) async fn list_all_tables(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<String>,
    params: web::Query<PageParams>,
) -> Answer {
    let tables = find_share(&state, &caller?, &path)?;
    let items: Vec<Value> = tables.iter().map(table_json).collect();
    page(items, &params, |item| {
        item["name"].as_str().unwrap_or_default().to_owned()
    })
}

/// The table a path names, if the caller may read it. A dataset the caller
/// may not read answers what the v1 API answers (token needed, grant
/// needed, aggregate-only); anything else is not found.
fn find_table(
    state: &AppState,
    caller: &Caller,
    (share, schema, name): &(String, String, String),
) -> Result<Table, SharingError> {
    if let Some(table) = tables_of(state, caller)
        .into_iter()
        .find(|t| &t.share == share && &t.name == name && schema == SCHEMA)
    {
        return Ok(table);
    }
    let (dataset, grant) = match name.split_once("__") {
        Some((dataset, grant)) => (dataset, Some(grant)),
        None => (name.as_str(), None),
    };
    let access = authorize(state, &state.policy.current(), caller, dataset, None, grant)?;
    if !access.plan.mode.serves_rows() {
        return Err(ApiError::AggregateOnly(dataset.to_owned()).into());
    }
    Err(ApiError::RouteNotFound.into())
}

/// The table a path names and what the caller may read of it now.
fn table_access(
    state: &AppState,
    caller: &Caller,
    path: &(String, String, String),
) -> Result<(Table, super::data_routes::Access), SharingError> {
    let table = find_table(state, caller, path)?;
    let access = authorize(
        state,
        &state.policy.current(),
        caller,
        &table.dataset,
        None,
        table.grant.as_deref(),
    )?;
    Ok((table, access))
}

/// An answer in the protocol's table format: NDJSON lines, the table's
/// version in `Delta-Table-Version`.
fn ndjson(version: u64, lines: &[Value]) -> HttpResponse {
    let mut body = String::new();
    for line in lines {
        body.push_str(&one_line(line));
        body.push('\n');
    }
    HttpResponse::Ok()
        .content_type("application/x-ndjson; charset=utf-8")
        .insert_header(("Delta-Table-Version", version.to_string()))
        .insert_header(("delta-sharing-capabilities", CAPABILITIES))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// The protocol and metadata lines of a table, for the caller's slice.
fn table_head(
    state: &AppState,
    table: &Table,
    access: &super::data_routes::Access,
    request: &SliceRequest,
) -> Result<[Value; 2], SharingError> {
    let df = state.engine.plan(
        &access.version,
        &access.plan,
        request,
        state.limits.max_filter_bytes,
    )?;
    let schema = sanitized_schema(df.schema().as_arrow());
    let m = &access.dataset.manifest;
    Ok([
        json!({ "protocol": { "minReaderVersion": 1 } }),
        json!({ "metaData": {
            "id": format!("sluice:{}", table.name),
            "name": table.name,
            "description": m.title,
            "format": { "provider": "parquet" },
            "schemaString": spark_schema::schema_string(&schema),
            "partitionColumns": [],
            "configuration": {},
            "version": access.version.number,
        }}),
    ])
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/version", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), ("schema" = String, Path, description = "Always `default`", example = "default"), ("table" = String, Path, description = "A dataset id, or `<dataset>__<grant>`", example = "vaccination-coverage")), responses((status = 200, description = "The version, in the header", headers(("Delta-Table-Version" = u64, description = "The table's version")))))]
pub(super) async fn table_version(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String, String)>,
) -> Answer {
    let (_, access) = table_access(&state, &caller?, &path)?;
    Ok(HttpResponse::Ok()
        .insert_header(("Delta-Table-Version", access.version.number.to_string()))
        .insert_header(("delta-sharing-capabilities", CAPABILITIES))
        .finish())
}

#[utoipa::path(get, path = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/metadata", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), ("schema" = String, Path, description = "Always `default`", example = "default"), ("table" = String, Path, description = "A dataset id, or `<dataset>__<grant>`", example = "vaccination-coverage")), responses((status = 200, description = "Protocol and metadata lines", content_type = "application/x-ndjson; charset=utf-8", headers(("Delta-Table-Version" = u64, description = "The table's version")), body = String)))]
pub(super) async fn table_metadata(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String, String)>,
) -> Answer {
    let (table, access) = table_access(&state, &caller?, &path)?;
    let lines = table_head(&state, &table, &access, &SliceRequest::default())?;
    Ok(ndjson(access.version.number, &lines))
}

/// The body of `POST …/query`. Fields Sluice does not know are ignored.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[schema(as = SharingQuery)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueryBody {
    limit_hint: Option<u64>,
    json_predicate_hints: Option<String>,
    version: Option<u64>,
    timestamp: Option<Value>,
    starting_version: Option<Value>,
    ending_version: Option<Value>,
}

#[utoipa::path(post, path = "/delta-sharing/shares/{share}/schemas/{schema}/tables/{table}/query", tag = "delta-sharing", params(("share" = String, Path, description = "A sector", example = "health"), ("schema" = String, Path, description = "Always `default`", example = "default"), ("table" = String, Path, description = "A dataset id, or `<dataset>__<grant>`", example = "vaccination-coverage")), request_body = QueryBody, responses((status = 200, description = "Protocol, metadata and file lines; each file a policy-applied snapshot behind a signed link", content_type = "application/x-ndjson; charset=utf-8", headers(("Delta-Table-Version" = u64, description = "The table's version")), body = String)))]
pub(super) async fn query_table(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    path: web::Path<(String, String, String)>,
    payload: web::Payload,
    req: HttpRequest,
) -> Answer {
    let caller = caller?;
    let table = find_table(&state, &caller, &path)?;
    let body: QueryBody = if req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0")
    {
        QueryBody::default()
    } else {
        super::body::parse_json(&state, &req, payload, "query").await?
    };
    if body.timestamp.is_some() || body.starting_version.is_some() || body.ending_version.is_some()
    {
        return Err(ApiError::InvalidParameter(
            "Sluice shares versions by number: time travel by timestamp and change data feeds are not offered".into(),
        )
        .into());
    }
    let hinted = SliceRequest {
        filter: body
            .json_predicate_hints
            .as_deref()
            .and_then(predicate::to_filter),
        limit: body.limit_hint,
        ..SliceRequest::default()
    };
    let issued = match issue(
        &state,
        &caller,
        &table.dataset,
        hinted.clone(),
        body.version,
        table.grant.clone(),
        &req,
    )
    .await
    {
        // A hint the caller's columns cannot take is dropped, as any
        // untranslatable hint is: hints only narrow.
        Err(ApiError::UnknownColumn(_) | ApiError::InvalidFilter(_)) if hinted.filter.is_some() => {
            let plain = SliceRequest {
                filter: None,
                ..hinted
            };
            issue(
                &state,
                &caller,
                &table.dataset,
                plain,
                body.version,
                table.grant.clone(),
                &req,
            )
            .await?
        }
        other => other?,
    };
    let [protocol, metadata] =
        table_head(&state, &table, &issued.access, &SliceRequest::default())?;
    let snapshot = &issued.snapshot;
    let file = json!({ "file": {
        "url": issued.url,
        "id": snapshot.etag,
        "partitionValues": {},
        "size": snapshot.size,
        "stats": json!({ "numRecords": snapshot.rows }).to_string(),
        "expirationTimestamp": issued.expires.unix_timestamp() * 1000,
    }});
    Ok(ndjson(
        issued.access.version.number,
        &[protocol, metadata, file],
    ))
}
