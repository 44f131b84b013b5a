//! Snapshots over HTTP. `POST /v1/datasets/{id}/snapshot` cuts (or finds)
//! the caller's slice as a Parquet file and answers a short-lived signed
//! link to it; `GET`/`HEAD /v1/snapshots/{key}.parquet` serves the file
//! with `Content-Length`, `ETag` and byte ranges, which is what Parquet
//! readers over HTTP and resumed downloads need.
//!
//! [`issue`] is shared with the Delta Sharing routes, whose file URLs are
//! these links. Every use of a link asks the current policy again with the
//! claims of the caller it was issued to, and recomputes the snapshot's key:
//! a revoked grant, a retired dataset or a new mask closes the link at once.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use datafusion::prelude::DataFrame;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::AppState;
use super::caller::{rate_key, share_key};
use super::data_routes::{Access, QueryBody, authorize, provenance};
use super::problem::ApiError;
use super::trail;
use crate::audit::{Event, Outcome, Phase, Record};
use crate::auth::Caller;
use crate::formats::{Coding, Format};
use crate::slice::{self, SliceRequest};
use crate::snapshot::{Link, Opened, Snapshot, SnapshotKey, Ticket, TicketsFull};
use crate::util::internal::OrInternal;

/// A refused link may be asked for again after this long: links expire
/// over minutes.
const LINKS_RETRY_SECS: u64 = 60;

/// Where snapshot files are served.
const FILES_PATH: &str = "/v1/snapshots";

/// A link handed out: the file it names and until when it works.
pub(super) struct Issued {
    pub(super) url: String,
    pub(super) expires: OffsetDateTime,
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) access: Access,
}

/// `POST /v1/datasets/{id}/snapshot`: the body of `POST …/query` (without
/// `format`: a snapshot is Parquet).
#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(post, path = "/v1/datasets/{id}/snapshot", tag = "data", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions")), request_body = QueryBody, responses((status = 200, description = "A signed link to your slice as a Parquet file", body = Object)))]
pub(super) async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    payload: web::Payload,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let body: QueryBody =
        super::body::parse_json(&state, &req, payload, "snapshot request").await?;
    let version = body.version;
    let (slice, format, compression, grant) = body.into_parts();
    if format.is_some_and(|f| !f.eq_ignore_ascii_case("parquet")) || compression.is_some() {
        return Err(ApiError::InvalidParameter(
            "a snapshot is a Parquet file, compressed: leave out format (or set it to \"parquet\") and compression".into(),
        ));
    }
    let issued = issue(&state, &caller, &path, slice, version, grant, &req).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "dataset": issued.access.dataset.id(),
            "version": issued.access.version.number,
            "url": issued.url,
            "expires": rfc3339(issued.expires),
            "media_type": Format::Parquet.media_type(),
            "size": issued.snapshot.size,
            "rows": issued.snapshot.rows,
            "etag": issued.snapshot.etag,
        })))
}

/// Authorises `caller` for the slice, makes sure its snapshot exists and
/// signs a link to it. The decision is on disk before the link is handed
/// out; the snapshot's rows and size are recorded as the outcome.
pub(super) async fn issue(
    state: &AppState,
    caller: &Caller,
    raw_id: &str,
    request: SliceRequest,
    version: Option<u64>,
    grant: Option<String>,
    req: &HttpRequest,
) -> Result<Issued, ApiError> {
    let started = Instant::now();
    let mut record = trail::request_record(Event::Snapshot, caller, raw_id);
    (record.columns, record.filter) = (request.columns.clone(), request.filter.clone());
    record.format = Some(Format::Parquet.name().into());
    let now = OffsetDateTime::now_utc();
    let ttl = i64::try_from(state.snapshots.link_ttl_secs).unwrap_or(i64::MAX);
    let mut expires = now.unix_timestamp().saturating_add(ttl);
    if let Some(token_expires) = caller.principal().and_then(|p| p.expires) {
        // A link never outlives the token that asked for it.
        expires = expires.min(token_expires);
    }
    let made = async {
        let owner = rate_key(req, caller);
        let _slot = state
            .stream_slots
            .acquire(&owner)
            .ok_or(ApiError::TooManyStreams)?;
        let policy = state.policy.current();
        let access = authorize(state, &policy, caller, raw_id, version, grant.as_deref())?;
        if !access.plan.mode.serves_rows() {
            return Err(ApiError::AggregateOnly(access.dataset.id().to_string()));
        }
        // A request that cannot be planned (unknown column, bad filter) is
        // refused before a ticket is spent on it; the plan is the one the
        // file is cut from if it is not on disk.
        let planned = state.engine.plan_in_file_order(
            &access.version,
            &access.plan,
            &request,
            state.limits.max_filter_bytes,
        )?;
        let key = key_of(&access, &request);
        // The ticket before any work: a caller at their cap is refused
        // before a file is cut for them.
        let ticket = Ticket {
            caller: caller.clone(),
            dataset: access.dataset.id().to_string(),
            version: access.version.number,
            grant: grant.clone(),
            request: request.clone(),
            key: key.clone(),
        };
        let shared = ticket.clone();
        let ticket = state
            .snapshots
            .tickets
            .issue(&owner, ticket, expires, now.unix_timestamp())
            .map_err(|full| match full {
                TicketsFull::Caller(n) => ApiError::TooManyLinks(n),
                TicketsFull::Server => ApiError::LinksFull(LINKS_RETRY_SECS),
            })?;
        if let Some(tickets) = &state.snapshots.shared {
            tickets
                .put(&state.snapshots.signer, &ticket, &owner, expires, &shared)
                .await
                .or_internal("sharing a link's ticket with the other replicas")?;
        }
        let decided = trail::with_plan(record.clone(), &access.plan);
        let share = share_key(caller);
        let (durable, snapshot) = tokio::join!(
            trail::allowed(state, &decided),
            cut(state, &share, &access, &request, &key, Some(planned))
        );
        durable?;
        Ok((access, key, ticket, snapshot?.snapshot, decided))
    }
    .await;
    let (access, key, ticket, snapshot, decided) = match made {
        Ok(made) => made,
        Err(e) => {
            trail::refused(state, record, &e);
            return Err(e);
        }
    };
    let path = file_path(&key);
    let signature = state.snapshots.signer.sign(&Link {
        path: &path,
        ticket: &ticket,
        subject: caller.subject(),
        expires,
    });
    let url = format!(
        "{}{path}?ticket={ticket}&expires={expires}&signature={signature}",
        super::public_base(state, req)
    );
    let mut outcome = decided;
    outcome.version = Some(access.version.number);
    outcome.phase = Some(Phase::Outcome);
    outcome.decision = Some(crate::audit::Decision::Allow);
    outcome.rows = Some(snapshot.rows);
    outcome.bytes = Some(snapshot.size);
    outcome.outcome = Some(Outcome::Complete);
    outcome.duration_ms = Some(started.elapsed().as_millis() as u64);
    state.audit.append(outcome);
    Ok(Issued {
        url,
        expires: OffsetDateTime::from_unix_timestamp(expires).unwrap_or(now),
        snapshot,
        access,
    })
}

/// The snapshot of `request` under `access`, opened, written now if it is
/// not on disk (from `planned`, when the caller has already planned it).
/// Written in file order and without a retrieval time, so a snapshot cut
/// again after eviction has the same bytes and ETag.
async fn cut(
    state: &AppState,
    share: &str,
    access: &Access,
    request: &SliceRequest,
    key: &SnapshotKey,
    planned: Option<DataFrame>,
) -> Result<Opened, ApiError> {
    let start = || async {
        let place = state.engine.admit(share).await?;
        // A whole table or whole columns the plan leaves unchanged are the
        // committed file's own bytes with the snapshot's footer, not
        // decoded and encoded again (`slice::committed`).
        if let Some(from) = slice::committed::from_file(&access.version, &access.plan, request) {
            return Ok(state
                .engine
                .stream_committed(from, provenance(access, None), place, Box::new(|_| ()))
                .await?);
        }
        let df = match planned {
            Some(df) => df,
            None => state.engine.plan_in_file_order(
                &access.version,
                &access.plan,
                request,
                state.limits.max_filter_bytes,
            )?,
        };
        Ok(state
            .engine
            .stream(
                df,
                &access.plan,
                (Format::Parquet, Coding::Identity),
                provenance(access, None),
                place,
                Box::new(|_| ()),
            )
            .await?)
    };
    let wait = std::time::Duration::from_secs(state.limits.slice_queue_secs);
    let (opened, written) = state.snapshots.cache.get_or_write(key, wait, start).await?;
    if written {
        tracing::info!(
            key = key.as_str(),
            rows = opened.snapshot.rows,
            bytes = opened.snapshot.size,
            "snapshot written"
        );
    }
    Ok(opened)
}

/// What decides a snapshot's bytes: the version's files, the access plan
/// (with the pseudonym project, which the plan does not serialise), the
/// slice asked for and the provenance written into the footer (without
/// the retrieval time).
fn key_of(access: &Access, request: &SliceRequest) -> SnapshotKey {
    let files: Vec<_> = access
        .version
        .files
        .iter()
        .map(|f| json!([f.location.as_ref(), f.size, f.e_tag]))
        .collect();
    let provenance = provenance(access, None);
    SnapshotKey::of(&json!({
        "dataset": access.dataset.id(),
        "version": access.version.number,
        "files": files,
        "plan": access.plan,
        "project": access.plan.project,
        "request": {
            "columns": request.columns,
            "filter": request.filter,
            "limit": request.limit,
            "offset": request.offset,
        },
        "provenance": provenance,
    }))
}

/// How often a link naming an unknown version may make this replica look
/// for other replicas' changes.
const REFRESH_AT_MOST_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether this replica's catalogue has the dataset version `ticket` names.
fn knows_version(state: &AppState, ticket: &Ticket) -> bool {
    crate::domain::DatasetId::parse(&ticket.dataset)
        .ok()
        .and_then(|id| state.catalog.snapshot().get(&id).cloned())
        .is_some_and(|d| d.versions.contains_key(&ticket.version))
}

fn file_path(key: &SnapshotKey) -> String {
    format!("{FILES_PATH}/{}.parquet", key.as_str())
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The query string of a signed link. Other parameters are ignored: some
/// clients add their own.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LinkParams {
    ticket: Option<String>,
    expires: Option<i64>,
    signature: Option<String>,
}

/// `GET`/`HEAD /v1/snapshots/{key}.parquet?ticket=…&expires=…&signature=…`.
#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/v1/snapshots/{name}", tag = "data", params(("name" = String, Path, description = "`<key>.parquet`, as the link gives it"), LinkParams), responses((status = 200, description = "The snapshot file (also `HEAD`; `Range: bytes=…` answers 206)", content_type = "application/vnd.apache.parquet", body = Vec<u8>), (status = 206, description = "The range asked for", content_type = "application/vnd.apache.parquet", body = Vec<u8>), (status = 416, description = "The range is outside the file")))]
pub(super) async fn serve_file(
    state: web::Data<AppState>,
    name: web::Path<String>,
    params: web::Query<LinkParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let key = name
        .strip_suffix(".parquet")
        .and_then(SnapshotKey::parse)
        .ok_or(ApiError::RouteNotFound)?;
    let (Some(ticket_id), Some(expires), Some(signature)) =
        (&params.ticket, params.expires, &params.signature)
    else {
        return Err(ApiError::LinkInvalid);
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if expires <= now {
        return Err(ApiError::LinkExpired("this link has expired"));
    }
    let ticket = state
        .snapshots
        .ticket(ticket_id, now)
        .await
        .ok_or(ApiError::LinkExpired(
            "this link is no longer known to the server",
        ))?;
    let link = Link {
        path: &file_path(&key),
        ticket: ticket_id,
        subject: ticket.caller.subject(),
        expires,
    };
    if ticket.key != key || !state.snapshots.signer.verify(&link, signature) {
        return Err(ApiError::LinkInvalid);
    }
    // Uses of a link count against the caller it was issued to, like
    // their other requests.
    let owner = rate_key(&req, &ticket.caller);
    state.rate_limits.check(&owner).map_err(|wait| {
        tracing::info!(key = owner, "rate limited");
        ApiError::RateLimited(wait.as_secs().max(1))
    })?;

    // The caller's access now, as their token described them.
    let mut record = trail::request_record(Event::SnapshotRead, &ticket.caller, &ticket.dataset);
    (record.columns, record.filter) = (
        ticket.request.columns.clone(),
        ticket.request.filter.clone(),
    );
    record.format = Some(Format::Parquet.name().into());
    record.version = Some(ticket.version);
    let access_now = || {
        let policy = state.policy.current();
        authorize(
            &state,
            &policy,
            &ticket.caller,
            &ticket.dataset,
            Some(ticket.version),
            ticket.grant.as_deref(),
        )
        .ok()
        .filter(|a| a.plan.mode.serves_rows() && key_of(a, &ticket.request) == key)
    };
    let mut access = access_now();
    if access.is_none() && state.snapshots.shared.is_some() && !knows_version(&state, &ticket) {
        // Issued by a replica that has committed a version this one has
        // not polled yet: look now (at most once a second), then decide.
        if let Err(e) = state.catalog.refresh_on_demand(REFRESH_AT_MOST_EVERY).await {
            tracing::warn!(error = %e, "could not look for other replicas' changes");
        }
        access = access_now();
    }
    let Some(access) = access else {
        let error = ApiError::LinkExpired("the access this link was issued under has changed");
        trail::refused(&state, record, &error);
        return Err(error);
    };
    record = trail::with_plan(record, &access.plan);
    trail::allowed(&state, &record).await?;

    // An evicted snapshot is cut again, in one of the caller's stream
    // slots (a cut is a stream's work), with the same bytes. The slot is
    // held only while the file is found or cut.
    let opened = {
        let _slot = state
            .stream_slots
            .acquire(&owner)
            .ok_or(ApiError::TooManyStreams)?;
        cut(
            &state,
            &share_key(&ticket.caller),
            &access,
            &ticket.request,
            &key,
            None,
        )
        .await?
    };
    let Opened { snapshot, file } = opened;
    let named = actix_files::NamedFile::from_file(file, &snapshot.path)
        .map_err(|e| crate::util::internal::Internal::caused("opening a snapshot file", e))?
        .set_content_type(
            Format::Parquet
                .media_type()
                .parse()
                .unwrap_or(mime::APPLICATION_OCTET_STREAM),
        )
        .set_content_disposition(header::ContentDisposition {
            disposition: header::DispositionType::Attachment,
            parameters: vec![header::DispositionParam::Filename(format!(
                "{}-v{}.parquet",
                access.dataset.id(),
                access.version.number
            ))],
        })
        .use_last_modified(false)
        // The content's own hash, not the file's inode and time: a file
        // cut again has the same bytes and so the same ETag.
        .use_etag(false);
    let mut response = named.into_response(&req);
    let headers = response.headers_mut();
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("private, no-store"),
    );
    if let Ok(etag) = header::HeaderValue::from_str(&format!("\"{}\"", snapshot.etag)) {
        headers.insert(header::ETAG, etag);
    }
    let mut outcome: Record = record;
    outcome.phase = Some(Phase::Outcome);
    outcome.decision = Some(crate::audit::Decision::Allow);
    outcome.bytes = Some(served_bytes(&response, snapshot.size, &req));
    outcome.outcome = Some(Outcome::Complete);
    state.audit.append(outcome);
    Ok(response)
}

/// How many bytes of the file a response carries.
fn served_bytes(response: &HttpResponse, size: u64, req: &HttpRequest) -> u64 {
    if req.method() == actix_web::http::Method::HEAD || !response.status().is_success() {
        return 0;
    }
    response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split_once('/'))
        .and_then(|(range, _)| range.split_once('-'))
        .and_then(|(a, b)| Some(b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?))
        .unwrap_or(size)
}
