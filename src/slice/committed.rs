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
//! Any change the plan makes (a mask, a hidden column, a row filter, a cap,
//! a pseudonym) or the request makes (columns, a filter, a page) goes
//! through the engine instead; [`whole_file`] is the one place that says
//! which answers qualify.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore};
use parquet::arrow::{ARROW_SCHEMA_META_KEY, encode_arrow_schema, parquet_to_arrow_schema};
use parquet::file::metadata::{
    FileMetaData, FooterTail, KeyValue, ParquetMetaData, ParquetMetaDataBuilder,
    ParquetMetaDataReader, ParquetMetaDataWriter,
};

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

/// The file whose bytes are the whole answer to `request` under `plan`, if
/// there is one: a version of one file, a plan that shows every column of
/// it in order and unmasked with no row filter or cap, and a request for
/// all of it (no columns named, or all of them in order).
pub fn whole_file<'v>(
    version: &'v Version,
    plan: &AccessPlan,
    request: &SliceRequest,
) -> Option<&'v ObjectMeta> {
    let [file] = version.files.as_slice() else {
        return None;
    };
    // Every column, by leaving them out or by naming each in order.
    let every_column = request.columns.as_ref().is_none_or(|asked| {
        asked.iter().map(String::as_str).eq(version
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str()))
    });
    let asks_all = every_column
        && request.filter.is_none()
        && request.limit.is_none()
        && request.offset.is_none();
    let changes_nothing = plan.row_filter.is_none()
        && plan.max_rows.is_none()
        && plan.mode.serves_rows()
        && plan.columns.len() == version.schema.fields().len()
        && plan
            .columns
            .iter()
            .zip(version.schema.fields())
            .all(|(c, f)| c.mask.is_none() && c.name.as_str() == f.name());
    (asks_all && changes_nothing).then_some(file)
}

/// Sends `file`'s bytes with a footer carrying `provenance` into `sink`.
pub(super) async fn produce(
    store: Arc<dyn ObjectStore>,
    file: ObjectMeta,
    provenance: Provenance,
    mut sink: Sink,
    on_finish: OnFinish,
) {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let done = async {
        let (metadata, data_end) = footer(store.as_ref(), &file).await?;
        let footer = footer_with(&metadata, &provenance)?;
        rows = u64::try_from(metadata.file_metadata().num_rows()).unwrap_or_default();
        let mut data = store
            .get_opts(&file.location, read(&file, GetRange::Bounded(0..data_end)))
            .await
            .or_internal("reading a committed file")?
            .into_stream();
        let mut chunk = BytesMut::new();
        loop {
            let next = tokio::select! {
                _ = sink.tx.closed() => return Ok(false),
                next = data.next() => next,
            };
            let Some(piece) = next else { break };
            chunk.extend_from_slice(&piece.or_internal("reading a committed file")?);
            if chunk.len() >= CHUNK_BYTES && !sink.send(&mut bytes, chunk.split().freeze()).await {
                return Ok(false);
            }
        }
        let read = bytes + chunk.len() as u64;
        if read != data_end {
            return Err(Internal::new(format!(
                "a committed file gave {read} bytes where {data_end} were expected"
            ))
            .into());
        }
        chunk.extend_from_slice(&footer);
        Ok(sink.send_last(&mut bytes, chunk.freeze()).await)
    }
    .await;
    sink.end(done, rows, bytes, on_finish).await;
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
/// key-value pairs are the file's Arrow schema without metadata, and
/// `provenance`.
fn footer_with(metadata: &ParquetMetaData, provenance: &Provenance) -> Result<Bytes, SliceError> {
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .or_internal("reading a committed file's schema")?;
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
