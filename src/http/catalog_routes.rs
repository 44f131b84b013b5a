//! `GET /v1/datasets` (search) and `GET /v1/datasets/{id}` (metadata,
//! schema, versions and the caller's own access). The catalogue is public so
//! researchers can find what to ask for; only data is gated.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::problem::ApiError;
use crate::auth::Caller;
use crate::catalog::citation::Cited;
use crate::catalog::{Cursor, Dataset, SearchQuery, StewardScope};
use crate::domain::{DatasetId, Tier};
use crate::policy;
use crate::policy::steward::steward_scope;
use crate::util::internal::OrInternal;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    pub(super) q: Option<String>,
    pub(super) sector: Option<String>,
    pub(super) tier: Option<String>,
    pub(super) page_size: Option<String>,
    pub(super) page_token: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ShowParams {
    grant: Option<String>,
}

/// A dataset in a list.
#[derive(Serialize)]
struct Summary<'a> {
    id: &'a DatasetId,
    title: &'a str,
    description: &'a str,
    sector: &'a str,
    tier: Tier,
    publisher: &'a str,
    license: &'a str,
    keywords: &'a [String],
    version: u64,
    /// `draft` (no data yet), `published` or `retired`: only stewards and
    /// admins see the first and last.
    status: crate::catalog::Status,
    /// Rows and publication time of the current version (0 and none for a draft).
    rows: u64,
    updated: Option<String>,
    /// The columns' names (their types and classes are on the dataset's page).
    columns: Vec<&'a str>,
    url: String,
}

fn summary(d: &Dataset) -> Summary<'_> {
    let m = &d.manifest;
    Summary {
        id: &m.id,
        title: &m.title,
        description: &m.description,
        sector: &m.sector,
        tier: m.tier,
        publisher: &m.publisher,
        license: &m.license,
        keywords: &m.keywords,
        version: m.version,
        status: d.status(),
        rows: d.current().map_or(0, |v| v.rows),
        updated: d.current().and_then(|v| {
            v.published
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        columns: m.columns.iter().map(|c| c.name.as_str()).collect(),
        url: format!("/v1/datasets/{}", m.id),
    }
}

#[tracing::instrument(skip_all)]
#[utoipa::path(get, path = "/v1/datasets", tag = "catalogue", params(ListParams), responses((status = 200, description = "Datasets matching the search, ranked, one page", body = Object)))]
pub(super) async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let query = search_query(&state, &caller, &params)?;
    let catalog = state.catalog.snapshot();
    let page = catalog.search(&query);
    let datasets: Vec<Summary> = page.datasets.iter().map(|d| summary(d)).collect();
    Ok(HttpResponse::Ok().json(json!({
        "datasets": datasets,
        "next_page_token": page.next.as_ref().map(page_token),
    })))
}

/// The search a list request asks for, its parameters checked: the same
/// for `GET /v1/datasets` and the search page.
pub(super) fn search_query(
    state: &AppState,
    caller: &Caller,
    params: &ListParams,
) -> Result<SearchQuery, ApiError> {
    let limits = &state.limits;
    let page_size = match params.page_size.as_deref() {
        None => limits.default_page_size,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=limits.max_page_size).contains(&n) => n,
            _ => {
                return Err(ApiError::InvalidParameter(format!(
                    "page_size must be a whole number from 1 to {}",
                    limits.max_page_size
                )));
            }
        },
    };
    let tier = params
        .tier
        .as_deref()
        .map(str::parse::<Tier>)
        .transpose()
        .map_err(ApiError::InvalidParameter)?;
    let after = params
        .page_token
        .as_deref()
        .map(|t| {
            page_cursor(t).ok_or_else(|| {
                ApiError::InvalidParameter("page_token is not one this server issued".into())
            })
        })
        .transpose()?;
    Ok(SearchQuery {
        words: params
            .q
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        sector: params.sector.clone(),
        tier,
        after,
        page_size,
        steward: steward_scope(caller),
    })
}

/// Page tokens are opaque (where the page ended in the ranking, marked and
/// encoded), so a token this server did not issue is refused rather than
/// read as an id.
const PAGE_TOKEN_MARK: &str = "p2.";

pub(super) fn page_token(after: &Cursor) -> String {
    use base64::Engine;
    let place = format!("{:016x}.{}", after.score.to_bits(), after.id);
    format!(
        "{PAGE_TOKEN_MARK}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(place)
    )
}

fn page_cursor(token: &str) -> Option<Cursor> {
    use base64::Engine;
    let encoded = token.strip_prefix(PAGE_TOKEN_MARK)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let (bits, id) = std::str::from_utf8(&bytes).ok()?.split_once('.')?;
    Some(Cursor {
        score: f64::from_bits(u64::from_str_radix(bits, 16).ok()?),
        id: DatasetId::parse(id).ok()?,
    })
}

#[tracing::instrument(skip_all, fields(dataset = %path.as_str()))]
#[utoipa::path(get, path = "/v1/datasets/{id}", tag = "catalogue", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), ShowParams), responses((status = 200, description = "The dataset's metadata and what you may read of it (`access`); with `Accept: application/ld+json`, a schema.org Dataset", content((Object = "application/json"), (Object = "application/ld+json")))))]
pub(super) async fn show(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<ShowParams>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let dataset = visible_dataset(&state, &steward_scope(&caller), &path)?;
    if wants_linked_data(&req) && dataset.manifest.is_live() {
        let base = super::public_base(&state, &req);
        return Ok(linked_data(
            crate::catalog::linked_data::schema_org_dataset(&dataset, &base),
        ));
    }
    Ok(HttpResponse::Ok().json(describe(
        &state,
        &caller,
        &dataset,
        params.grant.as_deref(),
    )?))
}

/// A dataset's full description: metadata, typed columns, versions and the
/// caller's own access.
pub(super) fn describe(
    state: &AppState,
    caller: &Caller,
    dataset: &Dataset,
    grant: Option<&str>,
) -> Result<Value, ApiError> {
    let m = &dataset.manifest;
    let current = dataset.current();
    let columns: Vec<Value> = m
        .columns
        .iter()
        .map(|c| {
            let data_type = current
                .and_then(|v| v.schema.field_with_name(c.name.as_str()).ok())
                .map(|f| f.data_type().to_string())
                .or_else(|| c.declared_type.map(|t| t.data_type().to_string()))
                .unwrap_or_default();
            json!({
                "name": c.name,
                "type": data_type,
                "description": c.description,
                "classification": c.classification,
                "mask": c.default_mask(),
                "key": c.key,
                "groupable": c.groupable,
                "order_statistics": c.order_statistics,
                "bounds": c.bounds,
                "categories": c.categories,
                "bins": c.bins,
            })
        })
        .collect();
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let versions: Vec<Value> = dataset
        .published_versions()
        .map(|v| {
            json!({
                "version": v.number,
                "rows": v.rows,
                "bytes": v.bytes,
                "published": v.published.format(rfc3339).ok(),
            })
        })
        .collect();
    let today = time::OffsetDateTime::now_utc().date();
    let decision = policy::evaluate(&state.policy.current(), caller, m, grant, today);
    let mut access = policy::decision_json(&decision);
    // A DP grant's budget, with what its project has spent so far.
    if let (policy::Decision::Allow(plan), Value::Object(map)) = (&decision, &mut access)
        && let Some(budget) = &plan.budget
    {
        map.insert(
            "privacy_budget".into(),
            super::privacy::budget_json(state, budget),
        );
    }
    let mut body = serde_json::to_value(summary(dataset)).or_internal("describing the dataset")?;
    if let Value::Object(map) = &mut body {
        map.insert("rows".into(), json!(current.map_or(0, |v| v.rows)));
        map.insert("bytes".into(), json!(current.map_or(0, |v| v.bytes)));
        map.insert("mode".into(), json!(m.mode));
        map.insert("access_request".into(), json!(m.access_request));
        map.insert("sort_by".into(), json!(m.sort_by));
        map.insert(
            "retired".into(),
            json!(m.retired.and_then(|t| t.format(rfc3339).ok())),
        );
        map.insert("columns".into(), Value::Array(columns));
        map.insert("versions".into(), Value::Array(versions));
        map.insert("access".into(), access);
        // Proposed changes are the stewards' and admins' business only.
        if dataset.stewarded_by(&steward_scope(caller)) {
            let pending: Vec<_> = m
                .changes
                .iter()
                .filter(|c| c.status == crate::catalog::change::ChangeStatus::Pending)
                .collect();
            map.insert("pending_changes".into(), json!(pending));
            // What a review-before-publish is waiting on.
            if let Some(review) = dataset.in_review() {
                map.insert(
                    "in_review".into(),
                    json!({
                        "version": review.number,
                        "rows": review.rows,
                        "bytes": review.bytes,
                        "uploaded": review.published.format(rfc3339).ok(),
                        "publish_url": format!("/v1/datasets/{}/publish", m.id),
                    }),
                );
            }
        }
        map.insert(
            "data_url".into(),
            json!(format!("/v1/datasets/{}/data", m.id)),
        );
    }
    Ok(body)
}

/// A dataset as a caller in `scope` may see it: live ones, and drafts and
/// retired ones only within their steward scope (404 otherwise).
pub(super) fn visible_dataset(
    state: &AppState,
    scope: &StewardScope,
    raw_id: &str,
) -> Result<Arc<Dataset>, ApiError> {
    let id = DatasetId::parse(raw_id).map_err(|_| ApiError::DatasetNotFound)?;
    let dataset = state
        .catalog
        .snapshot()
        .get(&id)
        .cloned()
        .ok_or(ApiError::DatasetNotFound)?;
    if !dataset.manifest.is_live() && !dataset.stewarded_by(scope) {
        return Err(ApiError::DatasetNotFound);
    }
    Ok(dataset)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct CitationParams {
    format: Option<String>,
    version: Option<String>,
}

/// `GET /v1/datasets/{id}/citation`: how to cite a version (the current one
/// unless `version=` pins another), as CFF (`format=cff`, the default) or
/// BibTeX (`format=bibtex`). Public metadata, like the dataset's page.
#[utoipa::path(get, path = "/v1/datasets/{id}/citation", tag = "catalogue", params(("id" = String, Path, description = "The dataset's id", example = "hospital-admissions"), CitationParams), responses((status = 200, description = "How to cite a version: Citation File Format 1.2.0 (YAML) or BibTeX", content((Object = "application/x-yaml"), (String = "application/x-bibtex")))))]
pub(super) async fn citation(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    params: web::Query<CitationParams>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let dataset = visible_dataset(&state, &steward_scope(&caller), &path)?;
    let number =
        match params.version.as_deref() {
            None => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::InvalidParameter("version must be a version number".into())
            })?),
        };
    let version = dataset
        .version(number)
        .ok_or_else(|| ApiError::VersionNotFound(number.unwrap_or(0)))?;
    let url = format!(
        "{}/v1/datasets/{}",
        super::public_base(&state, &req),
        dataset.id()
    );
    let cited = Cited {
        manifest: &dataset.manifest,
        version,
        url: &url,
    };
    let (body, content_type, extension) = match params.format.as_deref().unwrap_or("cff") {
        "cff" => (cited.cff(), "application/x-yaml; charset=utf-8", "cff"),
        "bibtex" => (cited.bibtex(), "application/x-bibtex; charset=utf-8", "bib"),
        other => {
            return Err(ApiError::InvalidParameter(format!(
                "format '{}' is not a citation format: use cff or bibtex",
                crate::util::echo::cut(other)
            )));
        }
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!(
                "inline; filename=\"{}-v{}.{extension}\"",
                dataset.id(),
                version.number
            ),
        ))
        .body(body))
}

/// Whether the caller asked for JSON-LD (`Accept: application/ld+json`).
fn wants_linked_data(req: &actix_web::HttpRequest) -> bool {
    super::data_routes::accept(req).is_some_and(|v| v.contains("application/ld+json"))
}

fn linked_data(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/ld+json")
        .body(body.to_string())
}

/// `GET /v1/catalog.jsonld`: the catalogue as DCAT-AP 3, for portals that
/// harvest it. Public metadata of published datasets only.
#[utoipa::path(get, path = "/v1/catalog.jsonld", tag = "catalogue", responses((status = 200, description = "The catalogue as a DCAT-AP 3 dcat:Catalog", content_type = "application/ld+json", body = Object)))]
pub(super) async fn catalog_jsonld(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> HttpResponse {
    let catalog = state.catalog.snapshot();
    let datasets = catalog.datasets().map(|d| d.as_ref());
    linked_data(crate::catalog::linked_data::dcat_catalog(
        datasets,
        &super::public_base(&state, &req),
    ))
}
