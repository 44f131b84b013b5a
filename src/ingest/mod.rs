//! Turning an uploaded file into a version Sluice can serve.
//!
//! Uploads are untrusted: the Parquet and Arrow readers have panicked and
//! aborted on hostile files (docs/security.md, "Untrusted uploads"), and an abort kills the process.
//! So decoding never happens in the server. The server writes the body to a
//! staging folder and runs `sluice ingest-worker` ([`sandbox`]) under memory
//! and CPU limits; the worker ([`run`]) checks the file, reads it in
//! batches, matches its schema against what the dataset expects, and writes
//! fresh Parquet tuned for slicing ([`write`]). The server only ever serves
//! files the worker wrote.

pub mod infer;
pub mod read;
pub mod sandbox;
pub mod write;

use std::path::PathBuf;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::catalog::live::{Publication, Published};
use crate::catalog::local::Staging;
use crate::catalog::{Dataset, DeclaredType, LiveCatalog, WriteError};
use crate::config::IngestSettings;
use crate::domain::ColumnName;
use crate::util::echo::{cut, cut_to};

/// The formats an upload may come in, named by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadFormat {
    Parquet,
    Csv,
    /// Arrow IPC, stream or file format (told apart by the file's magic).
    Arrow,
}

impl UploadFormat {
    /// The format for a media type, or `None` if uploads cannot use it.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let essence = media_type.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/vnd.apache.parquet" | "application/parquet" | "application/x-parquet" => {
                Some(Self::Parquet)
            }
            "text/csv" | "application/csv" => Some(Self::Csv),
            "application/vnd.apache.arrow.stream"
            | "application/vnd.apache.arrow.file"
            | "application/vnd.apache.arrow" => Some(Self::Arrow),
            _ => None,
        }
    }

    /// The format for a file name's extension (the CLI's guess).
    pub fn from_extension(path: &std::path::Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            "arrow" | "arrows" | "ipc" | "feather" => Some(Self::Arrow),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Self::Parquet => "application/vnd.apache.parquet",
            Self::Csv => "text/csv",
            Self::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// A column the manifest declares before any data exists.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeclaredColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub declared_type: Option<DeclaredType>,
}

/// What the worker is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub input: PathBuf,
    pub format: UploadFormat,
    /// Folder the normalised Parquet is written to.
    pub output: PathBuf,
    /// A file of the current version: the upload must have its columns and
    /// types. `None` for a first upload.
    pub reference: Option<PathBuf>,
    /// The manifest's columns (first upload only; empty = the data defines them).
    pub declared: Vec<DeclaredColumn>,
    /// Columns that get bloom filters.
    pub keys: Vec<String>,
    /// Columns the data is sorted by, in order.
    pub sort_by: Vec<String>,
    pub limits: JobLimits,
    /// How a CSV upload is written (ignored for other formats).
    #[serde(default)]
    pub csv: CsvOptions,
}

/// How a CSV file is written: its separator and quote, whether its first
/// row names the columns, and which texts stand for a missing value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CsvOptions {
    pub delimiter: u8,
    pub quote: u8,
    /// Without a header row, columns are named `column_1`, `column_2`, ….
    pub header: bool,
    /// Cells holding exactly one of these are null (empty cells always are).
    pub nulls: Vec<String>,
    /// Whether `a/b/yyyy` dates are day-first or month-first, when the
    /// file's own values cannot tell.
    #[serde(default)]
    pub date_format: Option<infer::DateOrder>,
    /// Header cells given other column names: (cell, name).
    #[serde(default)]
    pub rename: Vec<(String, String)>,
    /// Header cells the manifest's columns are read from (their `source`):
    /// (cell, name), applied where the file has the cell.
    #[serde(default)]
    pub sources: Vec<(String, String)>,
}

/// CSV options as a steward writes them, in a query string or on the
/// command line.
#[derive(Debug, Default, Clone, Copy)]
pub struct CsvText<'a> {
    /// One ASCII character, or `tab`.
    pub delimiter: Option<&'a str>,
    pub quote: Option<&'a str>,
    pub header: bool,
    /// Comma-separated texts that mean a missing value.
    pub null: Option<&'a str>,
    /// `%d/%m/%Y` or `%m/%d/%Y`.
    pub date_format: Option<&'a str>,
    /// Comma-separated `header cell=column_name` pairs.
    pub rename: Option<&'a str>,
}

impl CsvOptions {
    /// The options from their text. The error says what is wrong.
    pub fn from_text(text: CsvText<'_>) -> Result<Self, String> {
        let CsvText {
            delimiter,
            quote,
            header,
            null,
            date_format,
            rename,
        } = text;
        let one_char = |name: &str, text: Option<&str>, default: u8| match text {
            None => Ok(default),
            Some("tab") | Some("\t") => Ok(b'\t'),
            Some(t) if t.len() == 1 && t.is_ascii() && t != "\n" && t != "\r" => {
                Ok(t.as_bytes()[0])
            }
            Some(t) => Err(format!(
                "{name} must be one ASCII character (or tab), not '{}'",
                crate::util::echo::cut(t)
            )),
        };
        let defaults = Self::default();
        let options = Self {
            delimiter: one_char("delimiter", delimiter, defaults.delimiter)?,
            quote: one_char("quote", quote, defaults.quote)?,
            header,
            nulls: null
                .map(|list| list.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            date_format: date_format.map(infer::DateOrder::from_format).transpose()?,
            rename: rename.map(renames).transpose()?.unwrap_or_default(),
            sources: Vec::new(),
        };
        if options.delimiter == options.quote {
            return Err("delimiter and quote must differ".into());
        }
        Ok(options)
    }
}

/// `cell=name,cell=name`: each pair split at its last `=` (a column name
/// has none), so a header cell may hold one.
fn renames(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (cell, name) = pair.rsplit_once('=').ok_or_else(|| {
                format!(
                    "rename takes header=column pairs, not '{}'",
                    crate::util::echo::cut(pair)
                )
            })?;
            ColumnName::parse(name.trim()).map_err(|e| {
                format!(
                    "rename: '{}' is not a column name: {e}",
                    crate::util::echo::cut(name)
                )
            })?;
            Ok((cell.trim().to_owned(), name.trim().to_owned()))
        })
        .collect()
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            delimiter: b',',
            quote: b'"',
            header: true,
            nulls: Vec::new(),
            date_format: None,
            rename: Vec::new(),
            sources: Vec::new(),
        }
    }
}

/// A staged upload body and how to read it.
#[derive(Debug, Clone)]
pub struct Body {
    pub path: PathBuf,
    pub format: UploadFormat,
    pub csv: CsvOptions,
}

/// Bounds on what a file may make the worker do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobLimits {
    pub csv_sample_rows: usize,
    pub row_group_rows: usize,
    pub batch_rows: usize,
    pub max_expansion: u64,
    pub max_row_groups: usize,
    pub max_columns: usize,
}

/// What a successful normalisation produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub rows: u64,
    pub columns: Vec<ColumnSummary>,
    /// CSV header names that were not column names, and the names they
    /// became (`Trust Name` → `trust_name`).
    #[serde(default)]
    pub renamed: Vec<(String, String)>,
    /// What each CSV column's type was taken to be, in words (`code_postal`:
    /// text, values such as '01012' start with 0 …).
    #[serde(default)]
    pub inferred: Vec<(String, String)>,
    /// What the steward should look at: columns kept as text that look
    /// like numbers or dates.
    #[serde(default)]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// Why an upload was refused. The detail names the column or line at fault.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum Failure {
    /// The file is not valid in its format (truncated, corrupt, ragged,
    /// bad encoding, over the limits).
    #[error("{0}")]
    Invalid(String),
    /// The file is valid but its columns do not match the dataset's.
    #[error("{0}")]
    SchemaMismatch(String),
    /// The worker could not run or write (our side, not the file's).
    #[error("{0}")]
    Internal(String),
    /// The staging disk is full: nothing was changed; try again later.
    #[error("{0}")]
    StorageFull(String),
}

impl Failure {
    /// The failure with its message's quoted values cut and the whole
    /// bounded ([`crate::util::echo::cut_quoted`]): decoder messages quote
    /// values from the file, which may be of any size.
    pub fn bounded(self) -> Self {
        match self {
            Failure::Invalid(m) => Failure::Invalid(crate::util::echo::cut_quoted(&m)),
            Failure::SchemaMismatch(m) => {
                Failure::SchemaMismatch(crate::util::echo::cut_quoted(&m))
            }
            Failure::Internal(m) => Failure::Internal(crate::util::echo::cut_quoted(&m)),
            Failure::StorageFull(m) => Failure::StorageFull(crate::util::echo::cut_quoted(&m)),
        }
    }
}

/// The worker's answer on its stdout.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Done(Summary),
    Refused(Failure),
}

/// Why an upload was not published. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A rewrite of a dataset with no one-file published version.
    #[error("{0}")]
    NothingToRewrite(String),
    #[error("{0}")]
    Ingest(Failure),
    #[error("{0}")]
    Write(WriteError),
}

/// Writes the dataset's current version again with today's writer and
/// publishes it as the next version, through the same worker and commit as
/// an upload: for versions written before the writer last changed. The old
/// version stays as it is, readable by number.
pub async fn rewrite(
    catalog: &LiveCatalog,
    dataset: &Dataset,
    settings: &IngestSettings,
    batch_rows: usize,
    publication: Publication<'_>,
) -> Result<(Published, Summary), UploadError> {
    use futures::StreamExt;
    use object_store::ObjectStoreExt;
    use tokio::io::AsyncWriteExt;

    let refuse = UploadError::NothingToRewrite;
    let current = dataset
        .current()
        .ok_or_else(|| refuse("the dataset has no published version to rewrite".into()))?;
    let [file] = current.files.as_slice() else {
        return Err(refuse(format!(
            "version {} is stored as {} files; rewriting takes a version of one file",
            current.number,
            current.files.len()
        )));
    };
    let staging = catalog.staging().await.map_err(UploadError::Write)?;
    let body = staging.body();
    let io = |e: std::io::Error| UploadError::Write(WriteError::Storage(e));
    let storage = |e: object_store::Error| io(std::io::Error::other(e));
    let mut chunks = catalog
        .snapshot()
        .store()
        .get(&file.location)
        .await
        .map_err(storage)?
        .into_stream();
    let mut out = tokio::fs::File::create(&body).await.map_err(io)?;
    while let Some(chunk) = chunks.next().await {
        out.write_all(&chunk.map_err(storage)?).await.map_err(io)?;
    }
    out.flush().await.map_err(io)?;
    drop(out);
    let body = Body {
        path: body,
        format: UploadFormat::Parquet,
        csv: CsvOptions::default(),
    };
    upload(
        catalog,
        dataset,
        staging,
        body,
        settings,
        batch_rows,
        Publication {
            based_on: Some(current.number),
            ..publication
        },
    )
    .await
}

/// Normalises `input` in a worker process and publishes the result as the
/// dataset's next version: the one upload path of the server and the CLI
/// (and of [`rewrite`]).
pub async fn upload(
    catalog: &LiveCatalog,
    dataset: &Dataset,
    staging: Staging,
    body: Body,
    settings: &IngestSettings,
    batch_rows: usize,
    publication: Publication<'_>,
) -> Result<(Published, Summary), UploadError> {
    let Body {
        path: input,
        format,
        csv,
    } = body;
    let manifest = &dataset.manifest;
    // The current version's schema, handed to the worker as an empty
    // Parquet file: the same for a local folder and an object store.
    let reference = match dataset.current() {
        Some(version) => Some(
            write::schema_file(&staging.path().join("reference.parquet"), &version.schema)
                .map_err(UploadError::Ingest)?,
        ),
        None => None,
    };
    let job = Job {
        input,
        format,
        output: staging.output(),
        declared: if reference.is_some() {
            Vec::new()
        } else {
            manifest
                .columns
                .iter()
                .map(|c| DeclaredColumn {
                    name: c.name.to_string(),
                    declared_type: c.declared_type,
                })
                .collect()
        },
        reference,
        keys: manifest
            .columns
            .iter()
            .filter(|c| c.key)
            .map(|c| c.name.to_string())
            .collect(),
        sort_by: manifest.sort_by.iter().map(ToString::to_string).collect(),
        limits: JobLimits {
            csv_sample_rows: settings.csv_sample_rows,
            row_group_rows: settings.row_group_rows,
            batch_rows,
            max_expansion: settings.max_expansion,
            max_row_groups: settings.max_row_groups,
            max_columns: settings.max_columns,
        },
        csv: CsvOptions {
            sources: manifest
                .columns
                .iter()
                .filter_map(|c| Some((c.source.clone()?, c.name.to_string())))
                .collect(),
            ..csv
        },
    };
    let summary = sandbox::run(&job, settings)
        .await
        .map_err(UploadError::Ingest)?;
    let columns: Vec<ColumnName> = summary
        .columns
        .iter()
        .filter_map(|c| ColumnName::parse(&c.name).ok())
        .collect();
    let published = catalog
        .publish(dataset, staging, &columns, publication)
        .await
        .map_err(UploadError::Write)?;
    Ok((published, summary))
}

/// The worker's whole job: read, check, normalise, write.
pub fn run(job: &Job) -> Result<Summary, Failure> {
    let input = read::open(job)?;
    let target = target_schema(job, input.schema())?;
    let renamed = input.renamed().to_vec();
    let (inferred, warnings) = input.inferred();
    let mut summary = write::normalise(job, input, target)?;
    summary.renamed = renamed;
    summary.inferred = inferred;
    summary.warnings = warnings;
    Ok(summary)
}

/// The types Sluice stores: the plain form of dictionary, view and large
/// variants. Nested types are refused (no mask or text format serves them).
pub fn storage_type(name: &str, data_type: &DataType) -> Result<DataType, Failure> {
    use DataType as T;
    Ok(match data_type {
        T::Utf8 | T::Utf8View | T::LargeUtf8 => T::Utf8,
        T::Binary | T::BinaryView | T::LargeBinary => T::Binary,
        T::Dictionary(_, values) => storage_type(name, values)?,
        T::Null
        | T::Boolean
        | T::Int8
        | T::Int16
        | T::Int32
        | T::Int64
        | T::UInt8
        | T::UInt16
        | T::UInt32
        | T::UInt64
        | T::Float16
        | T::Float32
        | T::Float64
        | T::Date32
        | T::Date64
        | T::Timestamp(..)
        | T::Time32(_)
        | T::Time64(_)
        | T::Decimal32(..)
        | T::Decimal64(..)
        | T::Decimal128(..)
        | T::Decimal256(..)
        | T::FixedSizeBinary(_) => data_type.clone(),
        other => {
            return Err(Failure::SchemaMismatch(format!(
                "column '{}' has type {}, which Sluice does not store; flatten it into plain columns",
                cut(name),
                cut(&other.to_string())
            )));
        }
    })
}

/// The schema the new version gets: the current version's (when there is
/// one), else the declared columns (names and any types), else the file's.
/// Any difference is a [`Failure::SchemaMismatch`] naming the column.
fn target_schema(job: &Job, input: &Schema) -> Result<SchemaRef, Failure> {
    let mismatch = |m: String| Err(Failure::SchemaMismatch(m));
    let mut found = Vec::with_capacity(input.fields().len());
    for field in input.fields() {
        ColumnName::parse(field.name()).map_err(|e| {
            Failure::SchemaMismatch(format!(
                "column name '{}' is not valid: {e}",
                cut(field.name())
            ))
        })?;
        if found
            .iter()
            .any(|(name, _): &(String, DataType)| name == field.name())
        {
            return mismatch(format!("column '{}' appears twice", cut(field.name())));
        }
        found.push((
            field.name().clone(),
            storage_type(field.name(), field.data_type())?,
        ));
    }
    let lookup = |name: &str| found.iter().find(|(n, _)| n == name).map(|(_, t)| t);

    let expected: Vec<(String, Option<DataType>)> = match &job.reference {
        Some(path) => read::parquet_schema(path)?
            .fields()
            .iter()
            .map(|f| (f.name().clone(), Some(f.data_type().clone())))
            .collect(),
        None if !job.declared.is_empty() => job
            .declared
            .iter()
            .map(|c| (c.name.clone(), c.declared_type.map(DeclaredType::data_type)))
            .collect(),
        None => found
            .iter()
            .map(|(n, t)| (n.clone(), Some(t.clone())))
            .collect(),
    };
    let whose = if job.reference.is_some() {
        "the current version"
    } else {
        "the manifest"
    };
    for (name, _) in &found {
        if !expected.iter().any(|(n, _)| n == name) {
            return mismatch(format!(
                "column '{}' is not in {whose} (expected columns: {})",
                cut(name),
                cut_to(
                    &expected
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    512
                )
            ));
        }
    }
    let mut fields = Vec::with_capacity(expected.len());
    for (name, wanted) in &expected {
        let Some(actual) = lookup(name) else {
            return mismatch(format!("column '{name}' is missing from the upload"));
        };
        if let Some(wanted) = wanted
            && wanted != actual
        {
            return mismatch(format!(
                "column '{name}' is {actual} in the upload but {wanted} in {whose}"
            ));
        }
        fields.push(Field::new(name, actual.clone(), true));
    }
    for column in job.keys.iter().chain(&job.sort_by) {
        if lookup(column).is_none() {
            return mismatch(format!(
                "column '{column}' (a key or sort column) is missing"
            ));
        }
    }
    Ok(SchemaRef::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_formats_come_from_the_media_type() {
        for (media_type, format) in [
            (
                "application/vnd.apache.parquet",
                Some(UploadFormat::Parquet),
            ),
            ("application/parquet", Some(UploadFormat::Parquet)),
            ("text/csv; charset=utf-8", Some(UploadFormat::Csv)),
            ("Text/CSV", Some(UploadFormat::Csv)),
            (
                "application/vnd.apache.arrow.stream",
                Some(UploadFormat::Arrow),
            ),
            (
                "application/vnd.apache.arrow.file",
                Some(UploadFormat::Arrow),
            ),
            ("application/octet-stream", None),
            ("application/json", None),
            ("", None),
        ] {
            assert_eq!(
                UploadFormat::from_media_type(media_type),
                format,
                "{media_type}"
            );
        }
    }
}
