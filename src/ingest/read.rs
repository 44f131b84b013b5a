//! Opening an uploaded file as a stream of record batches, after checking
//! what can be checked before decoding: Parquet footers against size,
//! row-group and column limits and against decompression bombs; CSV headers
//! and types from a bounded sample.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchReader};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use super::{CsvOptions, Failure, Job, JobLimits, UploadFormat, infer};

/// An opened upload.
pub struct Input {
    schema: SchemaRef,
    batches: Box<dyn Iterator<Item = Result<RecordBatch, Failure>>>,
    /// CSV header names that became other column names.
    renamed: Vec<(String, String)>,
    /// CSV columns' types in words, and what the steward should look at.
    inferred: Vec<(String, String)>,
    warnings: Vec<String>,
}

impl Input {
    /// An input whose columns and types the file itself states.
    fn typed(
        schema: SchemaRef,
        batches: Box<dyn Iterator<Item = Result<RecordBatch, Failure>>>,
    ) -> Self {
        Self {
            schema,
            batches,
            renamed: Vec::new(),
            inferred: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn renamed(&self) -> &[(String, String)] {
        &self.renamed
    }

    /// What each CSV column's type was taken to be, and the warnings.
    pub fn inferred(&self) -> (Vec<(String, String)>, Vec<String>) {
        (self.inferred.clone(), self.warnings.clone())
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn into_batches(self) -> Box<dyn Iterator<Item = Result<RecordBatch, Failure>>> {
        self.batches
    }
}

fn invalid(what: &str) -> impl Fn(ArrowError) -> Failure + '_ {
    move |e| Failure::Invalid(format!("{what}: {}", message(&e)))
}

/// Arrow's message without its kind prefix ("Csv error: ..."): the caller
/// already says what failed.
fn message(e: &ArrowError) -> String {
    match e {
        ArrowError::CsvError(m)
        | ArrowError::ParseError(m)
        | ArrowError::IpcError(m)
        | ArrowError::InvalidArgumentError(m) => m.clone(),
        other => other.to_string(),
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::Internal(format!("reading the staged upload: {e}"))
}

/// Opens the job's input in its format.
pub fn open(job: &Job) -> Result<Input, Failure> {
    let file = File::open(&job.input).map_err(io_failure)?;
    match job.format {
        UploadFormat::Parquet => open_parquet(file, &job.limits),
        UploadFormat::Csv => open_csv(file, job),
        UploadFormat::Arrow => open_arrow(file),
    }
}

/// The Arrow schema of a Parquet file Sluice wrote (a trusted file).
pub fn parquet_schema(path: &Path) -> Result<Schema, Failure> {
    let file = File::open(path).map_err(io_failure)?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Failure::Internal(format!("reading the current version: {e}")))?;
    Ok(builder.schema().as_ref().clone())
}

/// Reads and checks a Parquet footer before anything is decoded.
fn checked_footer(file: &mut File, limits: &JobLimits) -> Result<ParquetMetaData, Failure> {
    let bad = |m: String| Failure::Invalid(format!("not a valid Parquet file: {m}"));
    let len = file.metadata().map_err(io_failure)?.len();
    if len < 12 {
        return Err(bad(format!("{len} bytes is too short")));
    }
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(io_failure)?;
    file.read_exact(&mut tail).map_err(io_failure)?;
    if &tail[4..] != b"PAR1" {
        return Err(bad(
            "it does not end with the Parquet magic (truncated?)".into()
        ));
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    // A footer larger than the file, or than any honest schema needs.
    if footer + 12 > len || footer > 64 * 1024 * 1024 {
        return Err(bad(format!(
            "its footer claims {footer} bytes in a {len}-byte file"
        )));
    }
    file.seek(SeekFrom::Start(0)).map_err(io_failure)?;
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Skip)
        .parse_and_finish(&*file)
        .map_err(|e| bad(e.to_string()))?;
    let row_groups = metadata.num_row_groups();
    if row_groups > limits.max_row_groups {
        return Err(bad(format!(
            "{row_groups} row groups (at most {} accepted)",
            limits.max_row_groups
        )));
    }
    let columns = metadata.file_metadata().schema_descr().num_columns();
    if columns > limits.max_columns {
        return Err(bad(format!(
            "{columns} columns (at most {} accepted)",
            limits.max_columns
        )));
    }
    let mut uncompressed: u64 = 0;
    for group in metadata.row_groups() {
        if group.num_rows() < 0 {
            return Err(bad("a row group has a negative row count".into()));
        }
        for column in group.columns() {
            let size = u64::try_from(column.uncompressed_size())
                .map_err(|_| bad("a column chunk has a negative size".into()))?;
            uncompressed = uncompressed.saturating_add(size);
        }
    }
    let most = len.saturating_mul(limits.max_expansion);
    if uncompressed > most {
        return Err(Failure::Invalid(format!(
            "the file would decompress to {uncompressed} bytes, more than {} times its {len} bytes: refused as a decompression bomb",
            limits.max_expansion
        )));
    }
    Ok(metadata)
}

fn open_parquet(mut file: File, limits: &JobLimits) -> Result<Input, Failure> {
    let metadata = checked_footer(&mut file, limits)?;
    let reader_metadata =
        ArrowReaderMetadata::try_new(Arc::new(metadata), ArrowReaderOptions::new())
            .map_err(|e| Failure::Invalid(format!("not a valid Parquet file: {e}")))?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, reader_metadata)
        .with_batch_size(limits.batch_rows)
        .build()
        .map_err(|e| Failure::Invalid(format!("not a valid Parquet file: {e}")))?;
    let schema = reader.schema();
    let batches = reader.map(|batch| batch.map_err(invalid("the Parquet data is damaged")));
    Ok(Input::typed(schema, Box::new(batches)))
}

fn open_arrow(file: File) -> Result<Input, Failure> {
    let mut reader = BufReader::new(file);
    let is_file_format = reader
        .fill_buf()
        .map_err(io_failure)?
        .starts_with(b"ARROW1");
    if is_file_format {
        let reader = arrow::ipc::reader::FileReader::try_new(reader.into_inner(), None)
            .map_err(invalid("not a valid Arrow IPC file"))?;
        let schema = reader.schema();
        let batches = reader.map(|b| b.map_err(invalid("the Arrow IPC data is damaged")));
        Ok(Input::typed(schema, Box::new(batches)))
    } else {
        let reader = arrow::ipc::reader::StreamReader::try_new(reader, None)
            .map_err(invalid("not a valid Arrow IPC stream"))?;
        let schema = reader.schema();
        let batches = reader.map(|b| b.map_err(invalid("the Arrow IPC data is damaged")));
        Ok(Input::typed(schema, Box::new(batches)))
    }
}

/// Longest CSV header row: `ingest.max_columns` names of up to 128 bytes
/// fit many times over.
const MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// CSV with a header row. Types come from the current version, else from
/// the manifest's declared types, else from a bounded sample of rows.
fn open_csv(mut file: File, job: &Job) -> Result<Input, Failure> {
    let options = &job.csv;
    let header = {
        // Read at most MAX_HEADER_BYTES (and one more, to tell): a header
        // is names, and a file whose first "row" is hundreds of megabytes
        // is refused before anything holds it.
        let limited = (&file).take(MAX_HEADER_BYTES + 1);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .delimiter(options.delimiter)
            .quote(options.quote)
            .from_reader(BufReader::new(limited));
        let header = reader
            .headers()
            .map_err(|e| {
                Failure::Invalid(format!(
                    "the CSV header cannot be read: {}",
                    crate::util::echo::cut_quoted(&e.to_string())
                ))
            })?
            .iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        if reader.position().byte() > MAX_HEADER_BYTES {
            return Err(Failure::Invalid(format!(
                "the CSV header row is longer than {MAX_HEADER_BYTES} bytes; it should name the columns"
            )));
        }
        header
    };
    if options.header && (header.is_empty() || header.iter().all(String::is_empty)) {
        return Err(Failure::Invalid(
            "the CSV upload has no header row naming its columns (send header=absent if it has none)".into(),
        ));
    }
    // The first row's cells name the columns: as the steward renamed them,
    // else made column names where they are not (`Trust Name` →
    // `trust_name`, `Durée` → `duree`); without a header, its width gives
    // `column_1`, `column_2`, ….
    let mut renamed = Vec::new();
    let header: Vec<String> = if options.header {
        header
            .into_iter()
            .map(|cell| {
                let folded = column_name_for(&cell);
                // The steward's rename for this upload wins over the
                // manifest's source.
                let column = options
                    .rename
                    .iter()
                    .chain(&options.sources)
                    .find(|(from, _)| *from == cell.trim() || *from == folded)
                    .map_or(folded, |(_, to)| to.clone());
                if column != cell {
                    renamed.push((cell, column.clone()));
                }
                column
            })
            .collect()
    } else {
        (1..=header.len()).map(|i| format!("column_{i}")).collect()
    };
    for (from, _) in &options.rename {
        if !renamed
            .iter()
            .any(|(cell, _)| cell.trim() == from || column_name_for(cell) == *from)
        {
            return Err(Failure::SchemaMismatch(format!(
                "rename names '{}', which is not a header cell of the file",
                crate::util::echo::cut(from)
            )));
        }
    }
    let known: Vec<(String, DataType)> = match &job.reference {
        Some(path) => parquet_schema(path)?
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect(),
        None => job
            .declared
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.declared_type?.data_type())))
            .collect(),
    };
    let known_type = |name: &str| known.iter().find(|(n, _)| n == name).map(|(_, t)| t);
    // A bounded sample decides the types the dataset does not fix, and the
    // order of any dates written day/month or month/day.
    let evidence = if header
        .iter()
        .all(|h| known_type(h).is_some_and(|t| *t != DataType::Date32))
    {
        Vec::new()
    } else {
        file.seek(SeekFrom::Start(0)).map_err(io_failure)?;
        sample(&file, options, header.len(), job.limits.csv_sample_rows)?
    };
    let decisions: Vec<infer::Decision> = header
        .iter()
        .enumerate()
        .map(|(i, name)| match evidence.get(i) {
            Some(seen) => infer::decide(name, seen, known_type(name), options.date_format),
            None => infer::Decision {
                data_type: known_type(name).cloned().unwrap_or(DataType::Utf8),
                dates: None,
                words: "as declared".into(),
                warning: None,
            },
        })
        .collect();
    // Dates in another order are read as text and converted below.
    let read_schema = Arc::new(Schema::new(
        header
            .iter()
            .zip(&decisions)
            .map(|(name, d)| {
                let read_as = if d.dates.is_some() {
                    DataType::Utf8
                } else {
                    d.data_type.clone()
                };
                Field::new(name, read_as, true)
            })
            .collect::<Vec<_>>(),
    ));
    let schema = Arc::new(Schema::new(
        header
            .iter()
            .zip(&decisions)
            .map(|(name, d)| Field::new(name, d.data_type.clone(), true))
            .collect::<Vec<_>>(),
    ));
    file.seek(SeekFrom::Start(0)).map_err(io_failure)?;
    let reader = arrow::csv::ReaderBuilder::new(read_schema.clone())
        .with_format(csv_format(options)?)
        .with_batch_size(job.limits.batch_rows)
        .build(BufReader::with_capacity(1 << 20, file))
        .map_err(invalid("the CSV cannot be read"))?;
    let dates: Vec<(usize, infer::DateOrder)> = decisions
        .iter()
        .enumerate()
        .filter_map(|(i, d)| Some((i, d.dates?)))
        .collect();
    let first_line = if options.header { 2 } else { 1 };
    let mut rows_before = 0usize;
    let out_schema = schema.clone();
    let batches = reader.map(move |b| {
        let batch = b.map_err(|e| {
            Failure::Invalid(format!(
                "the CSV is not valid: {}",
                name_csv_column(&message(&e), &read_schema)
            ))
        })?;
        let line = first_line + rows_before;
        rows_before += batch.num_rows();
        if dates.is_empty() {
            return Ok(batch);
        }
        let mut columns = batch.columns().to_vec();
        for (i, order) in &dates {
            columns[*i] = infer::to_dates(&columns[*i], *order).map_err(|(row, value)| {
                Failure::Invalid(format!(
                    "the CSV is not valid: '{value}' in column '{}' at line {} is not a date (read as {})",
                    out_schema.field(*i).name(),
                    line + row,
                    order.words()
                ))
            })?;
        }
        RecordBatch::try_new(out_schema.clone(), columns)
            .map_err(|e| Failure::Internal(format!("converting dates: {e}")))
    });
    let inferred = header
        .iter()
        .zip(&decisions)
        .filter(|(name, _)| known_type(name).is_none() || !evidence.is_empty())
        .map(|(name, d)| (name.clone(), d.words.clone()))
        .collect();
    let warnings = decisions.iter().filter_map(|d| d.warning.clone()).collect();
    Ok(Input {
        schema,
        batches: Box::new(batches),
        renamed,
        inferred,
        warnings,
    })
}

/// What the first `rows` records (at most) show of each of `width` columns;
/// cells that are null markers count as empty.
fn sample(
    file: &File,
    options: &CsvOptions,
    width: usize,
    rows: usize,
) -> Result<Vec<infer::Evidence>, Failure> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(options.header)
        .delimiter(options.delimiter)
        .quote(options.quote)
        .flexible(true)
        .from_reader(BufReader::new(file));
    let mut evidence: Vec<infer::Evidence> = (0..width).map(|_| Default::default()).collect();
    for record in reader.records().take(rows) {
        let record = record.map_err(|e| {
            Failure::Invalid(format!(
                "the CSV sample cannot be read: {}",
                crate::util::echo::cut_quoted(&e.to_string())
            ))
        })?;
        for (cell, seen) in record.iter().zip(&mut evidence) {
            if !options.nulls.iter().any(|n| n == cell) {
                seen.see(cell);
            }
        }
    }
    Ok(evidence)
}

/// Arrow's reading of a CSV written as `options` says.
fn csv_format(options: &CsvOptions) -> Result<arrow::csv::reader::Format, Failure> {
    let mut format = arrow::csv::reader::Format::default()
        .with_header(options.header)
        .with_delimiter(options.delimiter)
        .with_quote(options.quote);
    if !options.nulls.is_empty() {
        // Empty cells stay null too, as without markers.
        let alternatives: Vec<String> = std::iter::once(String::new())
            .chain(options.nulls.iter().map(|n| regex::escape(n)))
            .collect();
        let pattern = format!("^(?:{})$", alternatives.join("|"));
        let regex = regex::Regex::new(&pattern)
            .map_err(|e| Failure::Invalid(format!("the null markers cannot be used: {e}")))?;
        format = format.with_null_regex(regex);
    }
    Ok(format)
}

/// A header cell as a column name: kept when it is one, else folded to
/// ASCII (`Durée` → `Duree`, `Âge` → `Age`), lower-cased, with every run
/// of other characters made one `_` (`Trust Name`,
/// `Trust-name ` and `trust.name` all become `trust_name`), and `c_` put
/// before a leading digit. An empty cell becomes `column`.
fn column_name_for(cell: &str) -> String {
    if crate::domain::ColumnName::parse(cell).is_ok() {
        return cell.to_owned();
    }
    let mut name = String::with_capacity(cell.len());
    for c in deunicode::deunicode(cell.trim()).chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    let name = name.trim_matches('_');
    match name.chars().next() {
        None => "column".to_owned(),
        Some(c) if c.is_ascii_digit() => format!("c_{name}"),
        Some(_) => name.to_owned(),
    }
}

/// Arrow reports a bad CSV value by column index, counts lines from the
/// first data row, and echoes the whole row: name the column, give the
/// file's line number (the header is line 1) and drop the row.
fn name_csv_column(message: &str, schema: &Schema) -> String {
    let message = message.split(". Row data:").next().unwrap_or(message);
    const MARK: &str = "for column ";
    if let Some(start) = message.find(MARK) {
        let rest = &message[start + MARK.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Some(field) = digits
            .parse::<usize>()
            .ok()
            .and_then(|i| schema.fields().get(i))
        {
            let after = &rest[digits.len()..];
            let line = after
                .strip_prefix(" at line ")
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| format!(" at line {}", n + 1))
                .unwrap_or_else(|| after.to_owned());
            return format!("{}for column '{}'{line}", &message[..start], field.name());
        }
    }
    message.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_csv_values_name_their_column_not_the_row() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("pupils", DataType::Int64, true),
        ]);
        let got = name_csv_column(
            "Error while parsing value 'many' as type 'Int64' for column 1 at line 1. Row data: '[x,many]'",
            &schema,
        );
        assert_eq!(
            got,
            "Error while parsing value 'many' as type 'Int64' for column 'pupils' at line 2"
        );
    }
}
