//! `/docs`: the OpenAPI document rendered as one HTML page on the server:
//! every operation with its parameters, body and answers, grouped by tag,
//! and the problem types. Plain HTML and inline CSS, so it reads offline
//! and with scripts off.

use std::fmt::Write;

use serde_json::Value;

/// Text made safe for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A schema's name or type, briefly.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    match schema.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1a1a1a}\
code,.path{font-family:ui-monospace,monospace}h2{border-bottom:1px solid #ccc;margin-top:2.5rem}\
.op{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}\
.method{display:inline-block;min-width:4.5rem;font-weight:700;text-transform:uppercase}\
table{border-collapse:collapse;width:100%;margin:.5rem 0}td,th{border-top:1px solid #eee;padding:.25rem .5rem;text-align:left;vertical-align:top}";

/// The page for `doc`.
pub(super) fn render(doc: &Value) -> String {
    let info = &doc["info"];
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} API</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{STYLE}</style></head><body>\
         <h1>{} API</h1><p>{}</p><p>The machine-readable document is at <a href=\"/openapi.json\"><code>/openapi.json</code></a> (OpenAPI {}).</p>",
        escape(text(info, "title")),
        escape(text(info, "title")),
        escape(text(info, "description")),
        escape(text(doc, "openapi")),
    );
    let tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                text(t, "name").to_owned(),
                text(t, "description").to_owned(),
            )
        })
        .collect();
    let paths = doc["paths"].as_object().cloned().unwrap_or_default();
    for (tag, description) in &tags {
        let _ = write!(
            page,
            "<h2 id=\"{0}\">{0}</h2><p>{1}</p>",
            escape(tag),
            escape(description)
        );
        for (path, item) in &paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let tagged = op["tags"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x == tag.as_str()));
                if tagged {
                    operation(&mut page, method, path, op);
                }
            }
        }
    }
    let kinds = &doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"];
    page.push_str("<h2 id=\"problems\">Problem types</h2><p>Every error is <code>application/problem+json</code> with one of these <code>type</code>s:</p><p>");
    let kinds: Vec<String> = kinds
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|k| format!("<code>{}</code>", escape(k)))
        .collect();
    page.push_str(&kinds.join(", "));
    page.push_str("</p></body></html>");
    page
}

fn operation(page: &mut String, method: &str, path: &str, op: &Value) {
    let _ = write!(
        page,
        "<section class=\"op\"><p><span class=\"method\">{}</span> <span class=\"path\">{}</span></p><p>{}</p>",
        escape(method),
        escape(path),
        escape(text(op, "description")).replace("\n\n", "</p><p>"),
    );
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        page.push_str("<table><tr><th>parameter</th><th>in</th><th>type</th><th></th></tr>");
        for p in params {
            let required = if p["required"] == true {
                " (required)"
            } else {
                ""
            };
            let _ = write!(
                page,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(text(p, "name")),
                escape(text(p, "in")),
                escape(&type_of(&p["schema"])),
                escape(text(p, "description")),
            );
        }
        page.push_str("</table>");
    }
    if let Some(body) = op["requestBody"]["content"].as_object() {
        let kinds: Vec<String> = body
            .iter()
            .map(|(media, c)| {
                format!(
                    "<code>{}</code> ({})",
                    escape(media),
                    escape(&type_of(&c["schema"]))
                )
            })
            .collect();
        let _ = write!(page, "<p>Body: {}</p>", kinds.join(", "));
    }
    page.push_str("<table><tr><th>answer</th><th>content</th><th></th></tr>");
    for (status, response) in op["responses"].as_object().into_iter().flatten() {
        let media: Vec<String> = response["content"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(m, _)| format!("<code>{}</code>", escape(m)))
            .collect();
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(status),
            media.join(" "),
            escape(text(response, "description")),
        );
    }
    page.push_str("</table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_document_is_escaped() {
        let doc = serde_json::json!({
            "info": {"title": "<script>x</script>", "description": "a & b"},
            "tags": [{"name": "t", "description": ""}],
            "paths": {"/p": {"get": {"tags": ["t"], "description": "\"q\"", "responses": {}}}},
        });
        let page = render(&doc);
        assert!(!page.contains("<script>"));
        assert!(
            page.contains("&lt;script&gt;")
                && page.contains("a &amp; b")
                && page.contains("&quot;q&quot;")
        );
    }
}
