//! Answers that are a committed file's own bytes.
//!
//! When a caller asks for a whole table as Parquet and their access plan
//! changes nothing (every column, none masked, no row filter, no row cap),
//! the answer's rows are exactly the committed file's. Decoding and
//! encoding them again only costs time: a steward who puts the file on a
//! web server sends it at the link's speed. So the answer is the file's
//! bytes as stored up to its footer, and a new footer: the same row groups
//! and column chunks (their offsets are unchanged, as nothing before them
//! is), the file's Arrow schema without any metadata it carried, and the
//! answer's provenance, as every Parquet answer has. Nothing else from the
//! file's footer goes out.
//!
//! A request for some of the columns, every row, is answered the same way
//! from those columns' chunks: each row group's chunks of the asked
//! columns, copied in the order asked, and a footer describing them at
//! their new offsets (page indexes and Bloom filters are not carried).
//!
//! Any change the plan makes (a mask, a hidden column, a row filter, a cap,
//! a pseudonym) or the request makes (a filter, a page) goes through the
//! engine instead; [`from_file`] is the one place that says which answers
//! qualify.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::file::metadata::{
    FileMetaData, FooterTail, KeyValue, ParquetMetaData, ParquetMetaDataBuilder,
    ParquetMetaDataReader, ParquetMetaDataWriter, RowGroupMetaData,
};
use parquet::schema::types::{SchemaDescriptor, Type as SchemaType};

use super::{OnFinish, Sink, SliceError, SliceRequest};
use crate::catalog::Version;
use crate::formats::Provenance;
use crate::policy::AccessPlan;
use crate::util::internal::{Internal, OrInternal};

/// Bytes handed over at a time: the store reads in small pieces.
const CHUNK_BYTES: usize = 1 << 20;
/// The Parquet footer's last 8 bytes: metadata length and `PAR1`.
const TAIL_BYTES: u64 = 8;
/// How many of a file's last bytes are read for its footer at first.
const FOOTER_GUESS: u64 = 64 * 1024;
/// A Parquet file's first bytes, `PAR1`.
const MAGIC_BYTES: u64 = 4;

/// A committed file's bytes that are an answer.
#[derive(Debug, Clone)]
pub struct FromFile<'v> {
    pub file: &'v ObjectMeta,
    /// All of the file, or these of its columns (indexes into its schema),
    /// in this order, every row.
    pub columns: Option<Vec<usize>>,
}

/// The committed bytes that are the whole answer to `request` under
/// `plan`, if there are: a version of one file, a plan that shows every
/// column of it in order and unmasked with no row filter or cap, and a
/// request for every row, of all columns (none named, or all of them in
/// order: the whole file) or of some (their chunks; only for a file of
/// flat columns, each one column chunk).
pub fn from_file<'v>(
    version: &'v Version,
    plan: &AccessPlan,
    request: &SliceRequest,
) -> Option<FromFile<'v>> {
    let [file] = version.files.as_slice() else {
        return None;
    };
    let fields = version.schema.fields();
    let changes_nothing = plan.row_filter.is_none()
        && plan.max_rows.is_none()
        && plan.mode.serves_rows()
        && plan.columns.len() == fields.len()
        && plan
            .columns
            .iter()
            .zip(fields)
            .all(|(c, f)| c.mask.is_none() && c.name.as_str() == f.name());
    let every_row = request.filter.is_none() && request.limit.is_none() && request.offset.is_none();
    if !(changes_nothing && every_row) {
        return None;
    }
    let Some(asked) = &request.columns else {
        return Some(FromFile {
            file,
            columns: None,
        });
    };
    let columns = asked
        .iter()
        .map(|name| fields.iter().position(|f| f.name() == name))
        .collect::<Option<Vec<usize>>>()?;
    if columns.iter().copied().eq(0..fields.len()) {
        return Some(FromFile {
            file,
            columns: None,
        });
    }
    let distinct = columns
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        == columns.len();
    let flat = fields.iter().all(|f| !f.data_type().is_nested());
    (distinct && flat && !columns.is_empty()).then_some(FromFile {
        file,
        columns: Some(columns),
    })
}

/// Sends `file`'s bytes (all, or whole `columns`) with a footer carrying
/// `provenance` into `sink`.
pub(super) async fn produce(
    store: Arc<dyn ObjectStore>,
    file: ObjectMeta,
    columns: Option<Vec<usize>>,
    provenance: Provenance,
    mut sink: Sink,
    on_finish: OnFinish,
) {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let done = async {
        let (metadata, data_end) = footer(store.as_ref(), &file).await?;
        rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or_default();
        let (ranges, footer) = match columns {
            None => {
                let schema = whole_schema(&metadata)?;
                let footer = footer_with(&metadata, &schema, &provenance)?;
                (std::iter::once(0..data_end).collect(), footer)
            }
            Some(columns) => {
                let schema = whole_schema(&metadata)?
                    .project(&columns)
                    .or_internal("projecting a committed file's schema")?;
                let (ranges, metadata) = chunks_of(&metadata, &columns)?;
                (ranges, footer_with(&metadata, &schema, &provenance)?)
            }
        };
        let mut chunk = BytesMut::new();
        for range in ranges {
            let expected = range.end - range.start;
            let mut data = store
                .get_opts(&file.location, read(&file, GetRange::Bounded(range)))
                .await
                .or_internal("reading a committed file")?
                .into_stream();
            let mut got = 0u64;
            loop {
                let next = tokio::select! {
                    _ = sink.tx.closed() => return Ok(false),
                    next = data.next() => next,
                };
                let Some(piece) = next else { break };
                let piece = piece.or_internal("reading a committed file")?;
                got += piece.len() as u64;
                chunk.extend_from_slice(&piece);
                if chunk.len() >= CHUNK_BYTES
                    && !sink.send(&mut bytes, chunk.split().freeze()).await
                {
                    return Ok(false);
                }
            }
            if got != expected {
                return Err(Internal::new(format!(
                    "a committed file gave {got} bytes where {expected} were expected"
                ))
                .into());
            }
        }
        chunk.extend_from_slice(&footer);
        Ok(sink.send_last(&mut bytes, chunk.freeze()).await)
    }
    .await;
    sink.end(done, rows, bytes, on_finish).await;
}

/// The byte ranges of `metadata`'s file that make a file of `columns`
/// (`PAR1` first, then each row group's chunks of them in that order), and
/// that file's metadata: the chunks at their new offsets, without page
/// indexes or Bloom filters (not copied).
fn chunks_of(
    metadata: &ParquetMetaData,
    columns: &[usize],
) -> Result<(Vec<std::ops::Range<u64>>, ParquetMetaData), SliceError> {
    let file = metadata.file_metadata();
    let root = file.schema_descr().root_schema();
    let fields = root.get_fields();
    let projected = SchemaType::group_type_builder(root.name())
        .with_fields(columns.iter().map(|&c| fields[c].clone()).collect())
        .build()
        .or_internal("projecting a committed file's schema")?;
    let schema = Arc::new(SchemaDescriptor::new(Arc::new(projected)));
    let orders = file
        .column_orders()
        .map(|orders| columns.iter().map(|&c| orders[c]).collect());
    let mut ranges: Vec<_> = std::iter::once(0..MAGIC_BYTES).collect();
    let mut at = MAGIC_BYTES;
    let mut row_groups = Vec::new();
    for (ordinal, group) in metadata.row_groups().iter().enumerate() {
        let starts_at = at;
        let mut chunks = Vec::new();
        for &c in columns {
            let chunk = group.column(c);
            let (start, length) = chunk.byte_range();
            let moved = |offset: i64| offset - start as i64 + at as i64;
            // The deprecated ColumnChunk.file_offset is left as it was;
            // readers locate a chunk by its page offsets.
            chunks.push(
                chunk
                    .clone()
                    .into_builder()
                    .set_data_page_offset(moved(chunk.data_page_offset()))
                    .set_dictionary_page_offset(chunk.dictionary_page_offset().map(moved))
                    .set_index_page_offset(None)
                    .set_offset_index_offset(None)
                    .set_offset_index_length(None)
                    .set_column_index_offset(None)
                    .set_column_index_length(None)
                    .set_bloom_filter_offset(None)
                    .set_bloom_filter_length(None)
                    .build()
                    .or_internal("moving a column chunk")?,
            );
            // Chunks that lie one after the other in the file are read
            // in one request.
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = start + length,
                _ => ranges.push(start..start + length),
            }
            at += length;
        }
        let group = RowGroupMetaData::builder(schema.clone())
            .set_num_rows(group.num_rows())
            .set_total_byte_size(chunks.iter().map(|c| c.uncompressed_size()).sum())
            .set_column_metadata(chunks)
            .set_ordinal(i16::try_from(ordinal).unwrap_or(i16::MAX))
            .set_file_offset(starts_at as i64)
            .build()
            .or_internal("moving a row group")?;
        row_groups.push(group);
    }
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_owned),
        None,
        schema,
        orders,
    );
    let metadata = ParquetMetaDataBuilder::new(file)
        .set_row_groups(row_groups)
        .build();
    Ok((ranges, metadata))
}

/// The Arrow schema of a whole committed file, as its footer gives it.
fn whole_schema(metadata: &ParquetMetaData) -> Result<arrow::datatypes::Schema, SliceError> {
    let file = metadata.file_metadata();
    Ok(
        parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .or_internal("reading a committed file's schema")?,
    )
}

/// A read of `range` of the committed `file`, refused if the stored
/// object is no longer the one the catalogue committed.
fn read(file: &ObjectMeta, range: GetRange) -> GetOptions {
    GetOptions {
        range: Some(range),
        if_match: file.e_tag.clone(),
        ..Default::default()
    }
}

/// The file's footer, and where its data ends (where the footer starts):
/// one read of the file's last [`FOOTER_GUESS`] bytes, which holds most
/// footers (on S3 a second sequential read is another round trip), and a
/// second read only for a footer longer than that.
pub(super) async fn footer(
    store: &dyn ObjectStore,
    file: &ObjectMeta,
) -> Result<(ParquetMetaData, u64), SliceError> {
    let get = |range| async move {
        store
            .get_opts(&file.location, read(file, range))
            .await
            .or_internal("reading a committed file's footer")?
            .bytes()
            .await
            .or_internal("reading a committed file's footer")
    };
    let not_parquet = || Internal::new("a committed file has no Parquet footer");
    let size = file.size;
    let end = get(GetRange::Suffix(FOOTER_GUESS.min(size))).await?;
    let read = end.len() as u64;
    let tail: &[u8; 8] = read
        .checked_sub(TAIL_BYTES)
        .and_then(|at| end.get(at as usize..))
        .and_then(|tail| tail.try_into().ok())
        .ok_or_else(not_parquet)?;
    let tail = FooterTail::try_new(tail).or_internal("reading a committed file's footer")?;
    let length = tail.metadata_length() as u64;
    let data_end = size
        .checked_sub(TAIL_BYTES + length)
        .filter(|_| !tail.is_encrypted_footer())
        .ok_or_else(not_parquet)?;
    let metadata = match read.checked_sub(TAIL_BYTES + length) {
        Some(at) => end.slice(at as usize..(read - TAIL_BYTES) as usize),
        None => get(GetRange::Bounded(data_end..size - TAIL_BYTES)).await?,
    };
    let metadata = ParquetMetaDataReader::decode_metadata(&metadata)
        .or_internal("reading a committed file's footer")?;
    Ok((metadata, data_end))
}

/// `metadata` written as a footer (metadata, its length, `PAR1`) whose
/// key-value pairs are `schema` without metadata, and `provenance`.
fn footer_with(
    metadata: &ParquetMetaData,
    schema: &arrow::datatypes::Schema,
    provenance: &Provenance,
) -> Result<Bytes, SliceError> {
    let file = metadata.file_metadata();
    let bare = arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_metadata(Default::default()))
            .collect::<Vec<_>>(),
    );
    let pairs = std::iter::once(KeyValue::new(
        ARROW_SCHEMA_META_KEY.to_owned(),
        encode_arrow_schema(&bare),
    ))
    .chain(
        provenance
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    )
    .collect();
    let file = FileMetaData::new(
        file.version(),
        file.num_rows(),
        file.created_by().map(str::to_owned),
        Some(pairs),
        file.schema_descr_ptr(),
        file.column_orders().cloned(),
    );
    let metadata = ParquetMetaDataBuilder::new(file)
        .set_row_groups(metadata.row_groups().to_vec())
        .build();
    let mut out = Vec::new();
    ParquetMetaDataWriter::new(&mut out, &metadata)
        .finish()
        .or_internal("writing an answer's footer")?;
    Ok(out.into())
}
