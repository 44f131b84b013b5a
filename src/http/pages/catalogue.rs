//! The catalogue's pages: home (sectors, search, recently updated), search
//! results (the same search and paging as `GET /v1/datasets`) and a
//! dataset's page (metadata, schema, versions, your access, a preview,
//! snippets). Each answers JSON instead when the caller did not ask for
//! HTML, so the three addresses serve people and programs alike.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde_json::Value;

use super::layout::{bytes, encode, error_page, page};
use super::{Visitor, access, snippets, wants_html};
use crate::auth::Caller;
use crate::catalog::Dataset;
use crate::domain::Tier;
use crate::http::AppState;
use crate::http::catalog_routes::{self, ListParams, ShowParams};
use crate::http::problem::ApiError;
use crate::policy::steward::steward_scope;

/// `GET /`: the home page, or for programs a map of the API.
pub(super) async fn home(
    state: web::Data<AppState>,
    visitor: Visitor,
    req: HttpRequest,
) -> HttpResponse {
    if !wants_html(&req) {
        return HttpResponse::Ok()
            .insert_header((header::VARY, "accept"))
            .json(serde_json::json!({
                "datasets": "/v1/datasets",
                "catalog": "/v1/catalog.jsonld",
                "openapi": "/openapi.json",
                "docs": "/docs",
            }));
    }
    let catalog = state.catalog.snapshot();
    let live: Vec<&Dataset> = catalog
        .datasets()
        .map(|d| d.as_ref())
        .filter(|d| d.manifest.is_live())
        .collect();
    let mut sectors: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &live {
        *sectors.entry(d.manifest.sector.as_str()).or_default() += 1;
    }
    let mut recent = live.clone();
    recent.sort_by_key(|d| std::cmp::Reverse(d.current().map(|v| v.published)));
    recent.truncate(5);
    let content = html! {
        h1 { "Find open and controlled datasets" }
        p.muted { (live.len()) " datasets. Search them, read what each holds, see what you may use and ask for the rest." }
        (search_form("", None, None))
        h2 { "Sectors" }
        ul.cards {
            @for (sector, count) in &sectors {
                li {
                    a href={ "/datasets?sector=" (encode(sector)) } { (capitalised(sector)) }
                    " "
                    span.muted { (count) (if *count == 1 { " dataset" } else { " datasets" }) }
                }
            }
        }
        h2 { "Recently updated" }
        ul.results {
            @for d in &recent { li { (result(d)) } }
        }
    };
    page(&state, &visitor, &req, "Datasets", content)
}

/// `GET /datasets`: search results with sector and tier facets.
pub(super) async fn search(
    state: web::Data<AppState>,
    params: web::Query<ListParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Programs are known by their token, people by their session: one or
    // the other is extracted (and rate-limited), never both.
    if !wants_html(&req) {
        let caller = Caller::extract(&req).await?;
        return catalog_routes::list(state, caller, params)
            .await
            .map(varies);
    }
    let visitor = Visitor::extract(&req).await?;
    let query = match catalog_routes::search_query(&state, &visitor.caller(), &params) {
        Ok(query) => query,
        Err(e) => return Ok(error_page(&state, &visitor, &req, e)),
    };
    let catalog = state.catalog.snapshot();
    let found = catalog.search(&query);
    let q = params.q.as_deref().unwrap_or("");
    let sector = params.sector.as_deref();
    let tier = params.tier.as_deref();
    // Facet counts over the live catalogue, so every choice shows what it holds.
    let mut sectors: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tiers: BTreeMap<&str, usize> = BTreeMap::new();
    for d in catalog.datasets().filter(|d| d.manifest.is_live()) {
        *sectors.entry(d.manifest.sector.as_str()).or_default() += 1;
        *tiers.entry(d.manifest.tier.as_str()).or_default() += 1;
    }
    let link = |sector: Option<&str>, tier: Option<&str>| {
        let mut url = format!("/datasets?q={}", encode(q));
        if let Some(size) = &params.page_size {
            url.push_str(&format!("&page_size={}", encode(size)));
        }
        if let Some(s) = sector {
            url.push_str(&format!("&sector={}", encode(s)));
        }
        if let Some(t) = tier {
            url.push_str(&format!("&tier={}", encode(t)));
        }
        url
    };
    let next = found.next.as_ref().map(|cursor| {
        format!(
            "{}&page_token={}",
            link(sector, tier),
            encode(&catalog_routes::page_token(cursor))
        )
    });
    let title = if q.is_empty() {
        "All datasets".to_owned()
    } else {
        format!("Datasets matching “{}”", crate::util::echo::cut(q))
    };
    let content = html! {
        h1 { (title) }
        (search_form(q, sector, tier))
        div.layout {
            aside.facets aria-label="Filters" {
                h2 { "Sector" }
                ul {
                    li { a href=(link(None, tier)) aria-current=[sector.is_none().then_some("true")] { "Any sector" } }
                    @for (s, n) in &sectors {
                        li { a href=(link(Some(s), tier)) aria-current=[(sector == Some(*s)).then_some("true")] { (capitalised(s)) " (" (n) ")" } }
                    }
                }
                h2 { "Access" }
                ul {
                    li { a href=(link(sector, None)) aria-current=[tier.is_none().then_some("true")] { "Any access" } }
                    @for (t, n) in &tiers {
                        li { a href=(link(sector, Some(t))) aria-current=[(tier == Some(*t)).then_some("true")] { (capitalised(t)) " (" (n) ")" } }
                    }
                }
            }
            section aria-label="Results" {
                @if found.datasets.is_empty() {
                    p { "No dataset matches. Try fewer or shorter words, or another sector." }
                }
                ul.results {
                    @for d in &found.datasets { li { (result(d)) } }
                }
                @if let Some(next) = &next {
                    p { a href=(next) rel="next" { "Next page" } }
                }
            }
        }
    };
    Ok(page(&state, &visitor, &req, &title, content))
}

/// `GET /datasets/{id}`: a dataset's page.
pub(super) async fn dataset(
    state: web::Data<AppState>,
    path: web::Path<String>,
    params: web::Query<ShowParams>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    if !wants_html(&req) {
        let caller = Caller::extract(&req).await?;
        return catalog_routes::show(state, caller, path, params, req.clone())
            .await
            .map(varies);
    }
    let visitor = Visitor::extract(&req).await?;
    let who = visitor.caller();
    let shown = catalog_routes::visible_dataset(&state, &steward_scope(&who), &path)
        .and_then(|d| catalog_routes::describe(&state, &who, &d, None).map(|v| (d, v)));
    let (dataset, described) = match shown {
        Ok(shown) => shown,
        Err(e) => return Ok(error_page(&state, &visitor, &req, e)),
    };
    let base = crate::http::public_base(&state, &req);
    let access_section = access::section(&state, &visitor, &req, &dataset, &described).await;
    let title = dataset.manifest.title.clone();
    let content = html! {
        h1 { (title) }
        p { (described["description"].as_str().unwrap_or("")) }
        (facts(&described))
        (access_section)
        h2 { "Columns" }
        div.scroll {
            table {
                caption.muted { "Each column's type, meaning and how it is protected" }
                thead { tr { th scope="col" { "Column" } th scope="col" { "Type" } th scope="col" { "Description" } th scope="col" { "Classification" } th scope="col" { "Mask" } } }
                tbody {
                    @for c in described["columns"].as_array().into_iter().flatten() {
                        tr {
                            th scope="row" { code { (text(&c["name"])) } }
                            td { (readable_type(c["type"].as_str().unwrap_or_default())) }
                            td { (text(&c["description"])) }
                            td { (classification(&c["classification"])) }
                            td { (mask(&c["mask"])) }
                        }
                    }
                }
            }
        }
        h2 { "Versions" }
        div.scroll {
            table {
                thead { tr { th scope="col" { "Version" } th scope="col" { "Published" } th scope="col" { "Rows" } th scope="col" { "Size" } } }
                tbody {
                    @for v in described["versions"].as_array().into_iter().flatten().rev() {
                        tr {
                            th scope="row" { (text(&v["version"])) }
                            td { (text(&v["published"]).get(..10).unwrap_or("")) }
                            td { (v["rows"].as_u64().unwrap_or(0)) }
                            td { (bytes(v["bytes"].as_u64().unwrap_or(0))) }
                        }
                    }
                }
            }
        }
        (snippets::section(&state, &dataset, &visitor, &base))
        p.muted {
            "Cite it: "
            a href={ "/v1/datasets/" (dataset.id()) "/citation" } { "CFF" } " · "
            a href={ "/v1/datasets/" (dataset.id()) "/citation?format=bibtex" } { "BibTeX" }
        }
    };
    Ok(page(&state, &visitor, &req, &title, content))
}

/// A JSON answer from an address that also serves pages says that it
/// depends on `Accept`, so no cache hands one to the other.
fn varies(mut response: HttpResponse) -> HttpResponse {
    response
        .headers_mut()
        .insert(header::VARY, header::HeaderValue::from_static("accept"));
    response
}

fn search_form(q: &str, sector: Option<&str>, tier: Option<&str>) -> Markup {
    html! {
        form.search method="get" action="/datasets" role="search" {
            label for="q" { "Search datasets" }
            input #q type="search" name="q" value=(q) placeholder="e.g. vaccination, admissions, schools";
            @if let Some(s) = sector { input type="hidden" name="sector" value=(s); }
            @if let Some(t) = tier { input type="hidden" name="tier" value=(t); }
            button type="submit" { "Search" }
        }
    }
}

/// One dataset in a list: title, tier, description, size and date.
fn result(d: &Dataset) -> Markup {
    let m = &d.manifest;
    let updated = d.current().map(|v| v.published.date().to_string());
    html! {
        h3 { a href={ "/datasets/" (m.id) } { (m.title) } " " (tier_badge(m.tier)) }
        p { (first_sentence(&m.description)) }
        p.muted {
            (capitalised(&m.sector)) " · " (m.publisher)
            @if let Some(v) = d.current() { " · " (v.rows) " rows" }
            @if let Some(u) = updated { " · updated " (u) }
        }
    }
}

fn facts(d: &Value) -> Markup {
    let keywords: Vec<&str> = d["keywords"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let tier = d["tier"].as_str().unwrap_or("");
    html! {
        dl.facts {
            dt { "Access" } dd { (capitalised(tier)) ": " (tier_words(tier)) }
            @if d["mode"].as_str() == Some("aggregate") { dt { "Without a grant" } dd { "aggregates only: counts and sums of groups large enough to publish, never rows" } }
            dt { "Publisher" } dd { (text(&d["publisher"])) }
            dt { "Licence" } dd { (text(&d["license"])) }
            dt { "Sector" } dd { a href={ "/datasets?sector=" (encode(d["sector"].as_str().unwrap_or(""))) } { (capitalised(d["sector"].as_str().unwrap_or(""))) } }
            @if !keywords.is_empty() { dt { "Keywords" } dd { (keywords.join(", ")) } }
            dt { "Current version" } dd { (text(&d["version"])) ", " (d["rows"].as_u64().unwrap_or(0)) " rows, " (bytes(d["bytes"].as_u64().unwrap_or(0))) }
            @if let Some(updated) = d["updated"].as_str() { dt { "Updated" } dd { (updated.get(..10).unwrap_or(updated)) } }
            dt { "Identifier" } dd { code { (text(&d["id"])) } }
        }
    }
}

pub(super) fn tier_badge(tier: Tier) -> Markup {
    html! { span class={ "badge " (tier.as_str()) } { (capitalised(tier.as_str())) } }
}

fn tier_words(tier: &str) -> &'static str {
    match tier {
        "open" => "anyone may read it",
        "registered" => "signed-in researchers may read it",
        _ => "only holders of a grant may read it",
    }
}

fn classification(v: &Value) -> &'static str {
    match v.as_str() {
        Some("direct-identifier") => "Direct identifier (never served)",
        Some("quasi-identifier") => "Quasi-identifier",
        _ => "—",
    }
}

fn mask(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value as plain text (strings without quotes).
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn first_sentence(text: &str) -> String {
    match text.find(". ") {
        Some(i) if i < 300 => text[..=i].to_owned(),
        _ => crate::util::echo::cut(text),
    }
}

/// An Arrow type as a researcher reads it (`Utf8` → text, `Date32` → date).
fn readable_type(arrow: &str) -> &str {
    match arrow {
        "Utf8" | "LargeUtf8" | "Utf8View" => "text",
        "Int8" | "Int16" | "Int32" | "Int64" | "UInt8" | "UInt16" | "UInt32" | "UInt64" => {
            "whole number"
        }
        "Float16" | "Float32" | "Float64" => "decimal number",
        "Boolean" => "true/false",
        "Date32" | "Date64" => "date",
        t if t.starts_with("Timestamp") => "date and time",
        t if t.starts_with("Decimal") => "exact decimal",
        "Binary" | "LargeBinary" => "bytes",
        other => other,
    }
}
