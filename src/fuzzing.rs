//! What the fuzzers in `fuzz/` run, one function per target, each taking the
//! fuzzer's bytes. They live in the library, not in `fuzz/`, so the ordinary
//! test suite replays every seed and every input that once failed
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`) through the very
//! same code without a nightly toolchain: see the test at the bottom.
//!
//! Each target states the property it checks by panicking when it fails:
//! beyond "never panics", the filter target checks that a filter the checks
//! accept never fails while rows are read (such a failure would tell the
//! caller that some row reached the failing part), and the manifest target
//! that an accepted manifest survives being written and read back.

// A target reports a broken property by panicking, and its fixed inputs
// (the edge rows, the shipped catalogue, a scratch folder) cannot be
// absent in a fuzzing run.
#![allow(clippy::panic, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::auth::{Caller, Principal, Role, Verifier};
use crate::catalog::{Catalog, Manifest};
use crate::config::AuthSettings;
use crate::ingest::{self, Failure, Job, JobLimits, UploadFormat};
use crate::policy::Policy;

/// A fuzz target: takes any bytes, panics when its property fails.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus folder and `fuzz/fuzz_targets/` file have.
pub const TARGETS: &[(&str, Target)] = &[
    ("filter", filter),
    ("manifest", manifest),
    ("policy", policy),
    ("token", token),
    ("upload", upload),
];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the fuzz targets")
    })
}

/// A folder of this process's own for the targets' files.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        dir
    })
}

/// One column of each type a filter can meet, each holding the values
/// where conversions and arithmetic break: zero, one, minus one, the
/// extremes, NaN, infinities, empty text and NULL.
fn edge_rows() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("i", DataType::Int64, true),
        Field::new("n", DataType::Int32, true),
        Field::new("f", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("d", DataType::Date32, true),
        Field::new("m", DataType::Decimal128(12, 2), true),
        Field::new("b", DataType::Boolean, true),
        Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![
            Some(0),
            Some(1),
            Some(-1),
            Some(i64::MIN),
            Some(i64::MAX),
            None,
        ])),
        Arc::new(Int32Array::from(vec![
            Some(0),
            Some(1),
            Some(-1),
            Some(i32::MIN),
            Some(i32::MAX),
            None,
        ])),
        Arc::new(Float64Array::from(vec![
            Some(0.0),
            Some(-0.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
            Some(f64::MIN),
            None,
        ])),
        Arc::new(StringArray::from(vec![
            Some(""),
            Some("north"),
            Some("1"),
            Some("2020-01-01"),
            Some("ünï\u{0}"),
            None,
        ])),
        Arc::new(Date32Array::from(vec![
            Some(0),
            Some(18_000),
            Some(-719_162),
            Some(2_932_896),
            Some(-1),
            None,
        ])),
        Arc::new(
            Decimal128Array::from(vec![
                Some(0),
                Some(1),
                Some(-1),
                Some(999_999_999_999),
                Some(-999_999_999_999),
                None,
            ])
            .with_precision_and_scale(12, 2)
            .expect("a valid decimal type"),
        ),
        Arc::new(BooleanArray::from(vec![
            Some(true),
            Some(false),
            None,
            Some(true),
            Some(false),
            None,
        ])),
        Arc::new(TimestampMicrosecondArray::from(vec![
            Some(0),
            Some(1),
            Some(-1),
            Some(253_402_300_799_000_000),
            Some(-62_135_596_800_000_000),
            None,
        ])),
    ];
    RecordBatch::try_new(schema, columns).expect("a valid batch")
}

/// A filter the parser and the type checks accept is read over rows of
/// extreme values: it must not fail there.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let batch = edge_rows();
    let columns: BTreeSet<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let Ok(expr) = crate::filter::parse(text, 4096, &columns) else {
        return;
    };
    runtime().block_on(async {
        let ctx = SessionContext::new();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).expect("a table");
        ctx.register_table("t", Arc::new(table))
            .expect("registering the table");
        let df = ctx.table("t").await.expect("the table");
        if crate::filter::check_types(&expr, df.schema()).is_err() {
            return;
        }
        // Planning may still refuse (the plan is made before any row is
        // read, so that tells nothing about rows); reading may not.
        let Ok(df) = df.filter(expr.clone()) else {
            return;
        };
        if let Err(e) = df.collect().await {
            panic!("the accepted filter {text:?} ({expr}) failed while reading rows: {e}");
        }
    });
}

/// A manifest that parses and passes its checks is written back and read
/// again: the steward's file and the one Sluice writes must agree.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };
    if manifest.check().is_err() || manifest.check_size().is_err() {
        return;
    }
    let written = manifest.to_toml();
    let again = Manifest::parse(&written)
        .unwrap_or_else(|e| panic!("an accepted manifest did not read back: {e}\n{written}"));
    if let Err(e) = again.check() {
        panic!("an accepted manifest failed its checks once written: {e}\n{written}");
    }
    assert_eq!(again.to_toml(), written, "writing is not stable");
}

/// The repository's own catalogue, which policies are checked against.
fn shipped_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets");
        runtime()
            .block_on(crate::catalog::live::load_local(&folder))
            .expect("the shipped catalogue")
    })
}

/// A policy is parsed and checked; one it accepts is asked about a few
/// callers on every dataset.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = Policy::parse(text, "fuzz.toml") else {
        return;
    };
    let catalog = shipped_catalog();
    if policy.check(catalog, "fuzz.toml", 4096).is_err() {
        return;
    }
    let researcher = |sub: &str, organisation: Option<&str>| {
        Caller::Principal(Principal {
            sub: sub.into(),
            roles: BTreeSet::from([Role::Researcher]),
            groups: BTreeSet::from(["epi-team".to_string()]),
            organisation: organisation.map(Into::into),
            visas: Vec::new(),
            expires: None,
            scope: None,
        })
    };
    let callers = [
        Caller::Anonymous,
        researcher("alice@uni.example", Some("University")),
        researcher("bob@uni.example", None),
    ];
    let today = time::OffsetDateTime::now_utc().date();
    for dataset in catalog.datasets() {
        for caller in &callers {
            let _ = crate::policy::evaluate(&policy, caller, &dataset.manifest, None, today);
        }
    }
}

fn verifier() -> &'static (Verifier, jsonwebtoken::EncodingKey) {
    static VERIFIER: OnceLock<(Verifier, jsonwebtoken::EncodingKey)> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let settings = AuthSettings {
            dev_mode: true,
            ..AuthSettings::default()
        };
        let verifier = Verifier::new(&settings, scratch()).expect("a verifier");
        let pem = std::fs::read(crate::auth::dev::DevKey::path(scratch())).expect("the dev key");
        let key = jsonwebtoken::EncodingKey::from_ed_pem(&pem).expect("an Ed25519 key");
        (verifier, key)
    })
}

/// A token is verified. Inputs starting with `{` are taken as a header and
/// claims (split at the first newline) and signed with the trusted key, so
/// the fuzzer reaches the claim checks behind the signature.
pub fn token(data: &[u8]) {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (verifier, key) = verifier();
    let token = if data.first() == Some(&b'{') {
        let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
        let (header, claims) = data.split_at(split);
        let claims = claims.get(1..).unwrap_or_default();
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let Ok(signature) =
            jsonwebtoken::crypto::sign(message.as_bytes(), key, jsonwebtoken::Algorithm::EdDSA)
        else {
            return;
        };
        format!("{message}.{signature}")
    } else {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        text.to_string()
    };
    if let Ok(principal) = verifier.verify(&token) {
        // Every rule keys on the subject.
        assert!(
            !principal.sub.trim().is_empty(),
            "a token about nobody passed"
        );
    }
}

/// The upload decoders as the ingest worker runs them: the first byte picks
/// the format (CSV, Parquet, Arrow), the rest is the file. A file may be
/// refused as invalid; it may not be blamed on the server (an internal
/// failure). A panic here is a finding even when it is inside a third-party
/// decoder: the worker process turns one into a refusal
/// (`ingest::sandbox::serve_one`), but libFuzzer's panic hook stops the run
/// before any `catch_unwind` could, so each is reported and fixed or
/// pinned by an API test instead (an arrow-ipc panic found this way is
/// `steward_bad_uploads::an_arrow_stream_that_panics_the_decoder_is_refused`).
pub fn upload(data: &[u8]) {
    let Some((choice, body)) = data.split_first() else {
        return;
    };
    let format = match choice % 3 {
        0 => UploadFormat::Csv,
        1 => UploadFormat::Parquet,
        _ => UploadFormat::Arrow,
    };
    let dir = scratch().join("upload");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("an upload folder");
    let input = dir.join("body");
    std::fs::write(&input, body).expect("writing the body");
    let job = Job {
        input,
        format,
        output: dir.clone(),
        reference: None,
        declared: Vec::new(),
        keys: Vec::new(),
        sort_by: Vec::new(),
        limits: JobLimits {
            csv_sample_rows: 100,
            row_group_rows: 1024,
            batch_rows: 1024,
            max_expansion: 200,
            max_row_groups: 1000,
            max_columns: 200,
        },
        csv: Default::default(),
    };
    if let Err(Failure::Internal(message)) = ingest::run(&job) {
        panic!("a {format:?} upload was taken for the server's fault: {message}");
    }
}

#[cfg(test)]
mod tests {
    use super::TARGETS;

    /// Replays every seed and every input a fuzzer once failed on.
    #[test]
    fn corpora_and_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, target) in TARGETS {
            for kind in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for entry in entries {
                    let path = entry.expect("a corpus entry").path();
                    let data = std::fs::read(&path).expect("a corpus file");
                    eprintln!("{}", path.display());
                    target(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= TARGETS.len(), "the corpora are missing");
    }
}
