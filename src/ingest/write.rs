//! Writing an upload as Parquet tuned for slicing: plain storage types,
//! each column laid out for what its values are (`formats::parquet_layout`,
//! chosen from the first row group), page-level statistics and page index,
//! row groups sized for pruning, bloom filters on key columns whose values
//! are not in order, and the manifest's sort order (an external sort that
//! spills to the staging folder, so memory stays bounded whatever the
//! upload's size).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::formats::parquet_layout::{self, Layout};

use super::read::Input;
use super::{ColumnSummary, Failure, Job, Summary};

/// The one file a version is written as.
pub const PART_FILE: &str = "part-00000.parquet";

/// Memory the external sort may hold before spilling.
const SORT_MEMORY_BYTES: usize = 256 * 1024 * 1024;

fn internal(what: &str) -> impl Fn(String) -> Failure + '_ {
    move |e| {
        // The writers' errors wrap the I/O error as text; a full disk is
        // the server's condition to report as such (503), not a fault.
        let full = [
            "No space left on device",
            "os error 28",
            "Disk quota exceeded",
        ]
        .iter()
        .any(|m| e.contains(m));
        let message = format!("{what}: {e}");
        if full {
            Failure::StorageFull(message)
        } else {
            Failure::Internal(message)
        }
    }
}

/// The writer's settings for `job`, from a sample of its rows. A key
/// column gets a bloom filter unless its values are in order (the first
/// sort column, or a sample that never decreases): then min/max statistics
/// and the page index already narrow a lookup to a page, and the filter
/// would cost a byte a row for nothing.
fn properties(job: &Job, layout: &Layout) -> WriterProperties {
    let mut builder = layout
        .apply(parquet_layout::base())
        .set_max_row_group_row_count(Some(job.limits.row_group_rows.max(1)));
    for key in &job.keys {
        let first_sort = job.sort_by.first() == Some(key);
        let in_order = first_sort || layout.column(key).is_some_and(|c| c.sorted);
        if !in_order {
            builder = builder.set_column_bloom_filter_enabled(ColumnPath::from(key.as_str()), true);
        }
    }
    builder.build()
}

/// Writes an empty Parquet file with `schema` (how a version's schema is
/// handed to the worker) and returns its path.
pub fn schema_file(path: &Path, schema: &SchemaRef) -> Result<PathBuf, Failure> {
    let file = File::create(path).map_err(|e| internal("staging")(e.to_string()))?;
    ArrowWriter::try_new(file, schema.clone(), None)
        .and_then(|writer| writer.close().map(drop))
        .map_err(|e| internal("writing the reference schema")(e.to_string()))?;
    Ok(path.to_owned())
}

/// Reads every batch of `input`, casts it to `target` and writes the
/// version's file (sorted when the manifest asks).
pub fn normalise(job: &Job, input: Input, target: SchemaRef) -> Result<Summary, Failure> {
    std::fs::create_dir_all(&job.output).map_err(|e| internal("staging")(e.to_string()))?;
    let final_path = job.output.join(PART_FILE);
    let first_pass = if job.sort_by.is_empty() {
        final_path.clone()
    } else {
        // Outside the version folder: only the sorted file is published.
        job.output.with_file_name("unsorted.parquet")
    };
    let (rows, props) = write_batches(&first_pass, &target, input, job)?;
    if rows == 0 {
        return Err(Failure::Invalid("the upload holds no rows".into()));
    }
    if !job.sort_by.is_empty() {
        sort_file(job, &first_pass, &final_path, &target, props)?;
        let _ = std::fs::remove_file(&first_pass);
    }
    Ok(Summary {
        rows,
        columns: target
            .fields()
            .iter()
            .map(|f| ColumnSummary {
                name: f.name().clone(),
                data_type: f.data_type().to_string(),
            })
            .collect(),
        renamed: Vec::new(),
        inferred: Vec::new(),
        warnings: Vec::new(),
    })
}

/// Writes every batch, laid out from the first row group's rows (held
/// until they are all in: the writer would hold them anyway). Returns the
/// rows written and the settings used.
fn write_batches(
    path: &Path,
    target: &SchemaRef,
    input: Input,
    job: &Job,
) -> Result<(u64, WriterProperties), Failure> {
    let source = input.schema().clone();
    let positions: Vec<usize> = target
        .fields()
        .iter()
        .map(|f| source.index_of(f.name()))
        .collect::<Result<_, _>>()
        .map_err(|e| internal("matching columns")(e.to_string()))?;
    let file = File::create(path).map_err(|e| internal("staging")(e.to_string()))?;
    let sample_rows = job.limits.row_group_rows.max(1);
    let mut sample: Vec<RecordBatch> = Vec::new();
    let mut writer: Option<ArrowWriter<File>> = None;
    let mut file = Some(file);
    let mut props: Option<WriterProperties> = None;
    // Starts the writer from the sample, then writes the sample.
    let mut start = |sample: &mut Vec<RecordBatch>,
                     writer: &mut Option<ArrowWriter<File>>|
     -> Result<(), Failure> {
        let chosen = properties(job, &Layout::choose(sample));
        props = Some(chosen.clone());
        let file = file
            .take()
            .ok_or_else(|| Failure::Internal("the writer started twice".into()))?;
        let mut started = ArrowWriter::try_new(file, target.clone(), Some(chosen))
            .map_err(|e| internal("writing Parquet")(e.to_string()))?;
        for batch in sample.drain(..) {
            started
                .write(&batch)
                .map_err(|e| internal("writing Parquet")(e.to_string()))?;
        }
        *writer = Some(started);
        Ok(())
    };
    let mut rows = 0u64;
    for batch in input.into_batches() {
        let batch = batch?;
        let columns: Vec<ArrayRef> = target
            .fields()
            .iter()
            .zip(&positions)
            .map(|(field, &i)| {
                let column = batch.column(i);
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    cast(column, field.data_type()).map_err(|e| {
                        Failure::SchemaMismatch(format!(
                            "column '{}' cannot be stored as {}: {e}",
                            field.name(),
                            field.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<_, _>>()?;
        let batch = RecordBatch::try_new(target.clone(), columns)
            .map_err(|e| Failure::Invalid(format!("the data is not consistent: {e}")))?;
        rows += batch.num_rows() as u64;
        match writer.as_mut() {
            Some(w) => w
                .write(&batch)
                .map_err(|e| internal("writing Parquet")(e.to_string()))?,
            None => {
                sample.push(batch);
                if rows >= sample_rows as u64 {
                    start(&mut sample, &mut writer)?;
                }
            }
        }
    }
    if writer.is_none() {
        start(&mut sample, &mut writer)?;
    }
    let file = writer
        .ok_or_else(|| Failure::Internal("the writer did not start".into()))?
        .into_inner()
        .map_err(|e| internal("writing Parquet")(e.to_string()))?;
    file.sync_all()
        .map_err(|e| internal("syncing Parquet")(e.to_string()))?;
    let props = props.ok_or_else(|| Failure::Internal("the writer did not start".into()))?;
    Ok((rows, props))
}

/// Sorts `from` by the job's sort columns into `to` with DataFusion's
/// external sort, spilling next to the staged files.
fn sort_file(
    job: &Job,
    from: &Path,
    to: &Path,
    target: &SchemaRef,
    props: WriterProperties,
) -> Result<(), Failure> {
    use datafusion::common::Column;
    use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::{Expr, ParquetReadOptions, SessionConfig, SessionContext};
    use futures::StreamExt;

    let fail = internal("sorting");
    let spill: PathBuf = from.parent().unwrap_or(Path::new(".")).to_owned();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(SORT_MEMORY_BYTES, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Directories(vec![spill])),
        )
        .build_arc()
        .map_err(|e| fail(e.to_string()))?;
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_batch_size(job.limits.batch_rows);
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    tokio.block_on(async {
        let from = from
            .to_str()
            .ok_or_else(|| fail("path is not UTF-8".into()))?;
        let df = ctx
            .read_parquet(from, ParquetReadOptions::default())
            .await
            .map_err(|e| fail(e.to_string()))?;
        let order = job
            .sort_by
            .iter()
            .map(|c| Expr::Column(Column::from_name(c)).sort(true, false))
            .collect();
        let mut stream = df
            .sort(order)
            .map_err(|e| fail(e.to_string()))?
            .execute_stream()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let file = File::create(to).map_err(|e| fail(e.to_string()))?;
        let mut writer = ArrowWriter::try_new(file, target.clone(), Some(props))
            .map_err(|e| fail(e.to_string()))?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| fail(e.to_string()))?;
            let batch = RecordBatch::try_new(target.clone(), batch.columns().to_vec())
                .map_err(|e| fail(e.to_string()))?;
            writer.write(&batch).map_err(|e| fail(e.to_string()))?;
        }
        let file = writer.into_inner().map_err(|e| fail(e.to_string()))?;
        file.sync_all().map_err(|e| fail(e.to_string()))
    })?;
    Ok(())
}
