//! The frame every page shares (language, skip link, header with sign-in
//! state, one `main`, footer), the page's security headers, HTML error
//! pages, and the one style sheet, served by Sluice itself: no CDN, no
//! font download, no script.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use maud::{DOCTYPE, Markup, html};

use super::Visitor;
use crate::auth::Role;
use crate::http::AppState;
use crate::http::problem::ApiError;

/// Colours meet WCAG AA contrast on white (text 15.3:1, links 7.1:1,
/// muted text 7.0:1, badges 6.9:1 or more); focus is always visible.
const STYLE: &str = r#"
:root { --ink: #1b1f24; --muted: #4a5058; --link: #0b4fa8; --line: #d0d5db; --soft: #f3f5f7; --ok: #0e5e2d; --warn: #7a4100; --bad: #9b1c1c; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: #fff; }
a { color: var(--link); }
a:focus, button:focus, input:focus, select:focus, textarea:focus, summary:focus { outline: 3px solid #f2a900; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: 1rem; top: 1rem; background: #fff; padding: .5rem; z-index: 1; }
header.site { display: flex; flex-wrap: wrap; gap: 1rem; align-items: center; padding: .75rem 1.5rem; border-bottom: 1px solid var(--line); }
header.site .brand { font-weight: 700; font-size: 1.2rem; text-decoration: none; color: var(--ink); }
header.site nav ul { display: flex; gap: 1rem; list-style: none; margin: 0; padding: 0; }
header.site .who { margin-left: auto; display: flex; gap: .75rem; align-items: center; }
main { max-width: 70rem; margin: 0 auto; padding: 1.5rem; }
footer { max-width: 70rem; margin: 2rem auto; padding: 0 1.5rem; color: var(--muted); font-size: .9rem; }
h1 { font-size: 1.8rem; margin: .5rem 0 1rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .75rem; border-bottom: 1px solid var(--line); padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin: 1.25rem 0 .5rem; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 0 .5rem; border-radius: .75rem; border: 1px solid currentColor; font-size: .85rem; }
.badge.open { color: var(--ok); } .badge.registered { color: var(--link); } .badge.controlled { color: var(--warn); }
.status-approved { color: var(--ok); font-weight: 600; } .status-pending { color: var(--warn); font-weight: 600; } .status-rejected { color: var(--bad); font-weight: 600; }
.cards { list-style: none; padding: 0; display: grid; gap: 1rem; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); }
.cards li { border: 1px solid var(--line); border-radius: .5rem; padding: 1rem; }
.results { list-style: none; padding: 0; }
.results li { border-bottom: 1px solid var(--line); padding: .75rem 0; }
.layout { display: grid; gap: 2rem; grid-template-columns: 14rem 1fr; }
@media (max-width: 50rem) { .layout { grid-template-columns: 1fr; } }
.facets ul { list-style: none; padding: 0; margin: 0 0 1rem; }
form.search { display: flex; gap: .5rem; margin: 1rem 0; flex-wrap: wrap; }
form.search input[type=search] { flex: 1; min-width: 12rem; }
input, select, textarea, button { font: inherit; padding: .4rem .6rem; border: 1px solid #6b7280; border-radius: .3rem; }
button { background: var(--link); color: #fff; border-color: var(--link); cursor: pointer; }
button.quiet { background: #fff; color: var(--link); }
.form-row { margin: 0 0 1rem; display: flex; flex-direction: column; gap: .25rem; max-width: 40rem; }
fieldset { border: 1px solid var(--line); border-radius: .3rem; margin: 0 0 1rem; max-width: 40rem; }
fieldset label { display: inline-flex; gap: .3rem; margin-right: 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .95rem; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); }
.scroll { overflow-x: auto; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.facts dt { font-weight: 600; }
dl.facts dd { margin: 0; }
pre { background: var(--soft); border: 1px solid var(--line); padding: .75rem; overflow-x: auto; font-size: .9rem; white-space: pre-wrap; word-break: break-all; }
.notice { border-left: 4px solid var(--link); background: var(--soft); padding: .75rem 1rem; }
.notice.bad { border-color: var(--bad); }
"#;

/// `GET /static/sluice.css`.
pub(super) async fn style_sheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .body(STYLE)
}

/// A whole page around `content`, as a response with the page headers.
pub(super) fn page(
    state: &AppState,
    visitor: &Visitor,
    req: &HttpRequest,
    title: &str,
    content: Markup,
) -> HttpResponse {
    respond(
        StatusCode::OK,
        visitor,
        frame(state, visitor, req, title, content),
    )
}

fn frame(
    state: &AppState,
    visitor: &Visitor,
    req: &HttpRequest,
    title: &str,
    content: Markup,
) -> Markup {
    let here = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Sluice" }
                link rel="stylesheet" href="/static/sluice.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.site {
                    a.brand href="/" { "Sluice" }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/datasets" { "Datasets" } }
                            @if visitor.has_role(Role::Steward) || visitor.has_role(Role::Admin) {
                                li { a href="/steward" { "Your datasets" } }
                            }
                            @if visitor.has_role(Role::Admin) {
                                li { a href="/admin" { "Admin" } }
                            }
                            @if visitor.session.is_some() {
                                li { a href="/me/tokens" { "Your tokens" } }
                            }
                            li { a href="/docs" { "API" } }
                        }
                    }
                    div.who {
                        @match &visitor.session {
                            Some(session) => {
                                span { "Signed in as " strong { (session.principal.sub) } }
                                form method="post" action="/auth/sign-out" {
                                    input type="hidden" name="csrf" value=(visitor.csrf(state));
                                    button.quiet type="submit" { "Sign out" }
                                }
                            }
                            None => {
                                a href={ "/auth/sign-in?next=" (encode(&here)) } { "Sign in" }
                            }
                        }
                    }
                }
                main #main {
                    (content)
                }
                footer {
                    p { "Sluice: open datasets, each reader's slice decided by policy and recorded. "
                        a href="/openapi.json" { "OpenAPI" } " · " a href="/v1/catalog.jsonld" { "DCAT catalogue" } }
                }
            }
        }
    }
}

/// The page headers: pages name the visitor, so nothing is cached or
/// shared; no script runs (CSP), no frame embeds them, no referrer leaks
/// a dataset's address to other sites.
fn respond(status: StatusCode, visitor: &Visitor, markup: Markup) -> HttpResponse {
    let mut response = HttpResponse::build(status);
    response
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::VARY, "accept, cookie"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ));
    if let Some(cookie) = visitor.cookie_to_set() {
        response.cookie(cookie);
    }
    response.body(markup.into_string())
}

/// An error as a page: the same words as the problem document's `detail`,
/// with the status code. Internal faults say only that they happened.
pub(super) fn error_page(
    state: &AppState,
    visitor: &Visitor,
    req: &HttpRequest,
    error: ApiError,
) -> HttpResponse {
    let status = error.status_code();
    // The problem answer logs an internal fault's cause and says when to
    // come back (`Retry-After`); the page keeps the latter.
    let retry_after = error
        .error_response()
        .headers()
        .get(header::RETRY_AFTER)
        .cloned();
    let title = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::UNAUTHORIZED => "Sign-in needed",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let detail = crate::util::echo::cut_to(&error.detail(), crate::util::echo::MAX_DETAIL_BYTES);
    let content = html! {
        h1 { (title) }
        p.notice.bad { (detail) }
        p { a href="/" { "Back to the catalogue" } }
    };
    let mut response = respond(status, visitor, frame(state, visitor, req, title, content));
    if let Some(wait) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, wait);
    }
    response
}

/// Percent-encodes a query value.
pub(super) fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// A byte count for people: 1.2 MB.
pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
