//! Copy-paste code for a dataset's page: curl, pyarrow, polars, pandas,
//! DuckDB, R, the Delta Sharing connector and the CLI, each with this
//! server's address, its CA when it uses a private one, and the dataset's
//! id, so it runs as pasted (given a token where the dataset needs one),
//! and each shows the server's problem body when it refuses. The interop
//! tests run every one as copied from the page (the Delta Sharing one with
//! the connector's own venv); the browser test runs the curl one.

use maud::{Markup, html};

use super::Visitor;
use crate::catalog::Dataset;
use crate::domain::Tier;
use crate::http::AppState;

/// The section "Use it from your tools".
pub(super) fn section(
    state: &AppState,
    dataset: &Dataset,
    visitor: &Visitor,
    base: &str,
) -> Markup {
    let id = dataset.id().as_str();
    let open = dataset.manifest.tier == Tier::Open;
    let url = format!("{base}/v1/datasets/{id}/data?limit=1000");
    let ca = state.web.ca_file.as_deref();
    let token_line = if state.web.dev_mode {
        // Dev mode mints any identity: one that holds a grant here, so the
        // snippets answer with rows.
        let holders: Vec<String> = state
            .policy
            .current()
            .grants
            .iter()
            .filter(|g| g.dataset == *dataset.id())
            .flat_map(|g| g.subjects.iter().cloned())
            .collect();
        let sub = visitor
            .session
            .as_ref()
            .map(|s| s.principal.sub.clone())
            .or_else(|| holders.first().cloned())
            .unwrap_or_else(|| "you@example.org".to_owned());
        let note = if holders.is_empty() {
            "dev mode; no identity holds a grant for this dataset yet".to_owned()
        } else {
            format!(
                "dev mode; identities with a grant here: {}",
                holders.join(", ")
            )
        };
        format!(
            "export SLUICE_TOKEN=$(sluice token --sub {} --role researcher)   # {note}; else a personal token from {base}/me/tokens",
            sh(&sub)
        )
    } else if state.web.cli_login.is_some() {
        // The token `sluice login` got through the identity provider,
        // renewed when it is about to expire.
        format!(
            "export SLUICE_TOKEN=$(sluice print-token --server {0})   # after `sluice login --server {0}`; or a personal token from {0}/me/tokens",
            sh(base)
        )
    } else {
        format!(
            "export SLUICE_TOKEN=…   # a personal token: sign in, then {base}/me/tokens (or your identity provider's access token)"
        )
    };
    let curl_ca = ca
        .map(|c| format!(" --cacert {}", sh(c)))
        .unwrap_or_default();
    let curl_auth = if open {
        ""
    } else {
        " -H \"Authorization: Bearer $SLUICE_TOKEN\""
    };
    // --fail-with-body: a refusal prints the server's problem body (why,
    // and what to do), not only curl's exit status.
    let curl = format!(
        "curl -sS --fail-with-body{curl_ca}{curl_auth} {}",
        sh(&format!("{url}&format=csv"))
    );
    let py_headers = if open {
        "{}"
    } else {
        "{\"Authorization\": \"Bearer \" + os.environ[\"SLUICE_TOKEN\"]}"
    };
    let py_context = match ca {
        Some(c) => format!("ssl.create_default_context(cafile={})", string(c)),
        None => "ssl.create_default_context()".to_owned(),
    };
    let fetch = format!(
        "import io, os, ssl, urllib.error, urllib.request\n\
         def fetch(fmt):\n    \
             req = urllib.request.Request({} + fmt, headers={py_headers})\n    \
             try:\n        \
                 return urllib.request.urlopen(req, context={py_context}).read()\n    \
             except urllib.error.HTTPError as e:  # the server says why\n        \
                 raise SystemExit(f\"{{e.code}}: {{e.read().decode()}}\")\n",
        string(&format!("{url}&format="))
    );
    // Parquet for every Python reader: over a real link it is the
    // smallest answer and the soonest DataFrame (BENCHMARKS.md, "Over a
    // real link"); a whole open table is the committed file's bytes.
    // pyarrow reads it from its own buffer: read from a Python file object
    // (`io.BytesIO`) it can abort or hang the interpreter at exit
    // (apache/arrow#33975, #50482; seen here as "terminate called without
    // an active exception").
    let pyarrow = format!(
        "{fetch}import pyarrow as pa, pyarrow.parquet as pq\ntable = pq.read_table(pa.BufferReader(fetch(\"parquet\")))\nprint(table.num_rows, table.schema)"
    );
    let polars = format!(
        "{fetch}import polars as pl\ndf = pl.read_parquet(io.BytesIO(fetch(\"parquet\")))\nprint(df.head())"
    );
    let pandas = format!(
        "{fetch}import pyarrow as pa, pyarrow.parquet as pq\ndf = pq.read_table(pa.BufferReader(fetch(\"parquet\"))).to_pandas()\nprint(df.head())"
    );
    // DuckDB through pyarrow: no extension to install, the same CA handling.
    let duckdb = format!(
        "{fetch}import duckdb, pyarrow as pa, pyarrow.parquet as pq\nrows = pq.read_table(pa.BufferReader(fetch(\"parquet\")))\nprint(duckdb.sql(\"SELECT count(*) AS n FROM rows\").fetchall())"
    );
    let r_auth = if open {
        String::new()
    } else {
        " |>\n  req_auth_bearer_token(Sys.getenv(\"SLUICE_TOKEN\"))".to_owned()
    };
    let r_ca = ca
        .map(|c| format!(" |>\n  req_options(cainfo = {})", string(c)))
        .unwrap_or_default();
    // httr2 and base R only (Debian and CRAN both ship httr2); the arrow
    // package keeps the column types, from the same request.
    let r = format!(
        "library(httr2)\nresp <- request({}){r_auth}{r_ca} |>\n  req_error(body = function(resp) resp_body_string(resp)) |>  # the server says why\n  req_perform()\ndf <- read.csv(text = resp_body_string(resp))\nhead(df)\n# typed columns with the arrow package: format=arrow, then arrow::read_ipc_stream(resp_body_raw(resp))",
        string(&format!("{url}&format=csv"))
    );
    // The connector's two HTTP stacks trust a private CA through two
    // variables (requests reads the first, aiohttp the second).
    let sharing_env = ca
        .map(|c| format!("REQUESTS_CA_BUNDLE={0} SSL_CERT_FILE={0} ", sh(c)))
        .unwrap_or_default();
    let sharing = format!(
        "curl -sS --fail-with-body{curl_ca} -H \"Authorization: Bearer $SLUICE_TOKEN\" {} > sluice.share\n{sharing_env}python3 - <<'EOF'\nimport delta_sharing\nprint(delta_sharing.load_as_pandas({}).head())\nEOF",
        sh(&format!("{base}/v1/me/delta-sharing-profile")),
        string(&format!(
            "sluice.share#{}.default.{id}",
            dataset.manifest.sector
        ))
    );
    let cli_token = if open {
        ""
    } else {
        " --token \"$SLUICE_TOKEN\""
    };
    let cli_ca = ca.map(|c| format!(" --ca {}", sh(c))).unwrap_or_default();
    let cli = format!(
        "sluice datasets show {id} --server {}{cli_ca}{cli_token}",
        sh(base)
    );
    let snippets: [(&str, &str, String); 8] = [
        ("curl", "snippet-curl", curl),
        ("Python: pyarrow", "snippet-pyarrow", pyarrow),
        ("Python: polars", "snippet-polars", polars),
        ("Python: pandas", "snippet-pandas", pandas),
        ("Python: DuckDB", "snippet-duckdb", duckdb),
        ("R: httr2", "snippet-r", r),
        (
            "Delta Sharing (Spark, pandas)",
            "snippet-delta-sharing",
            sharing,
        ),
        ("Sluice CLI", "snippet-cli", cli),
    ];
    html! {
        h2 { "Use it from your tools" }
        @if !open {
            p { "This dataset needs a token. " code { (token_line) } }
        }
        @for (label, id, code) in &snippets {
            h3 { (label) }
            pre id=(id) { code { (code) } }
        }
    }
}

/// A shell word that stays one word, whatever it holds: single-quoted,
/// with each `'` closed, escaped and reopened. Values on a page come from
/// stewards (a sector) and requests (the host): none may run as code when
/// pasted.
fn sh(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A string literal for Python and R: JSON's escapes are valid in both.
fn string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_values_stay_values() {
        assert_eq!(sh("it's"), r"'it'\''s'");
        let hostile = "health'$(touch /tmp/x)'\"\\\n";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", sh(hostile)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), hostile);
        assert_eq!(string("a\"b\\c\n"), r#""a\"b\\c\n""#);
    }
}
