//! Encoders: one per format, each turning record batches into byte chunks
//! as they arrive. Each keeps at most one batch's encoding (or, for
//! Parquet, one bounded row group) in memory.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use super::parquet_layout::{self, Layout};

use super::{Coding, Format};

/// A Parquet row group is flushed once its buffered size passes this, so a
/// Parquet response holds at most about this much in memory.
const PARQUET_ROW_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// Most bytes reserved up front for one encoded batch (a batch sliced from
/// a larger one reports its whole buffers' size).
const RESERVE_MAX: usize = 64 * 1024 * 1024;

/// The type a column is served as: views and dictionaries are served as
/// their plain types (their buffers can hold values of rows not served).
fn served_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => served_type(value),
        other => other.clone(),
    }
}

/// The schema of what is served: served types, no metadata.
pub fn sanitized_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| Field::new(f.name(), served_type(f.data_type()), f.is_nullable()))
        .collect();
    Arc::new(Schema::new(fields))
}

/// Rebuilds a batch under `schema` (from [`sanitized_schema`]): columns
/// whose buffers may reach beyond the batch's rows are copied into fresh
/// ones, everything else is shared.
pub fn sanitize(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                arrow::compute::cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<ArrayRef>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

/// Turns batches into byte chunks for one response.
pub enum Encoder {
    Arrow(ArrowEncoder),
    Parquet(Box<ParquetEncoder>),
    Csv {
        header_done: bool,
        schema: SchemaRef,
        coding: Coding,
    },
    Ndjson {
        coding: Coding,
    },
}

/// zstd level for text answers: the fastest, since compression runs on
/// the same cores as decoding (about a fifth of CSV's size here).
const ZSTD_LEVEL: i32 = 1;

/// A text chunk as it travels: as is, or as one zstd frame. Empty text
/// still makes a frame under zstd, so a coded body is never empty.
fn coded(coding: Coding, text: Vec<u8>) -> Result<Bytes, ArrowError> {
    match coding {
        Coding::Identity => Ok(Bytes::from(text)),
        Coding::Lz4 => Err(ArrowError::InvalidArgumentError(
            "lz4 compresses Arrow answers only".into(),
        )),
        Coding::Zstd => zstd::bulk::compress(&text, ZSTD_LEVEL)
            .map(Bytes::from)
            .map_err(|e| ArrowError::ExternalError(Box::new(e))),
    }
}

/// One batch's encoding, detached from its [`Encoder`].
pub type EncodeJob = Box<dyn FnOnce() -> Result<Bytes, ArrowError> + Send>;

/// Where a file came from, as key-value pairs written into the formats that
/// keep them (Parquet's footer): a researcher's saved file says which
/// dataset, version, licence and access it is. Only facts about the
/// dataset and the caller's own access, never a grant's filter values.
pub type Provenance = Vec<(String, String)>;

impl Encoder {
    /// An encoder for one answer, compressed as `coding` says (see
    /// [`Coding`]; Parquet's own codecs apply whatever it says).
    pub fn new(
        format: Format,
        coding: Coding,
        schema: &SchemaRef,
        provenance: &Provenance,
    ) -> Result<Self, ArrowError> {
        Ok(match format {
            Format::Arrow => Encoder::Arrow(ArrowEncoder::new(schema, coding)?),
            Format::Parquet => Encoder::Parquet(Box::new(ParquetEncoder {
                file: None,
                schema: schema.clone(),
                provenance: provenance.clone(),
                pending: Vec::new(),
                pending_bytes: 0,
            })),
            Format::Csv => Encoder::Csv {
                header_done: false,
                schema: schema.clone(),
                coding,
            },
            Format::Ndjson => Encoder::Ndjson { coding },
        })
    }

    /// Encodes one batch; returns whatever bytes are ready (possibly none).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        match self {
            Encoder::Parquet(p) => p.write(batch),
            Encoder::Arrow(_) | Encoder::Csv { .. } | Encoder::Ndjson { .. } => {
                match self.detached(batch.clone()) {
                    Some(job) => job(),
                    None => Err(ArrowError::ComputeError("an encoder did not detach".into())),
                }
            }
        }
    }

    /// For formats whose batches encode independently of each other (Arrow
    /// IPC, CSV, NDJSON): this batch's encoding as work that can run on
    /// another thread, the header taken care of. Successive jobs, run in
    /// parallel and sent in order, give the same bytes as
    /// [`Encoder::write`]. `None` for Parquet, whose row groups span
    /// batches.
    pub fn detached(&mut self, batch: RecordBatch) -> Option<EncodeJob> {
        match self {
            Encoder::Arrow(arrow) => Some(arrow.detached(batch)),
            Encoder::Csv {
                header_done,
                coding,
                ..
            } => {
                let header = !std::mem::replace(header_done, true);
                let coding = *coding;
                Some(Box::new(move || {
                    // Text is about as long as the batch's buffers: one
                    // allocation instead of a buffer grown (and copied) as
                    // rows are appended.
                    let room = batch.get_array_memory_size().min(RESERVE_MAX);
                    let mut text = Vec::with_capacity(room);
                    super::csv_text::write_batch(&batch, header, &mut text)?;
                    coded(coding, text)
                }))
            }
            Encoder::Ndjson { coding } => {
                let coding = *coding;
                Some(Box::new(move || {
                    let mut w = arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, arrow::json::writer::LineDelimited>(Vec::new());
                    w.write(&batch)?;
                    w.finish()?;
                    coded(coding, w.into_inner())
                }))
            }
            Encoder::Parquet(_) => None,
        }
    }

    /// Ends the body: the Arrow end-of-stream marker, the Parquet footer, a
    /// CSV header for an empty result.
    pub fn finish(&mut self) -> Result<Bytes, ArrowError> {
        match self {
            Encoder::Arrow(arrow) => Ok(arrow.finish()),
            Encoder::Parquet(p) => p.finish(),
            Encoder::Csv {
                header_done,
                schema,
                ..
            } => {
                if *header_done {
                    return Ok(Bytes::new());
                }
                let empty = RecordBatch::new_empty(schema.clone());
                self.write(&empty)
            }
            // An empty frame, so that a zstd body of no rows is a valid
            // zstd stream rather than no bytes at all.
            Encoder::Ndjson { coding } => coded(*coding, Vec::new()),
        }
    }
}

/// An Arrow IPC stream written message by message: the schema, then each
/// batch as its own message, encoded (and compressed, when asked) on any
/// thread, since after [`sanitize`] no batch carries a dictionary that a
/// later one would refer to; then the end-of-stream marker. The bytes are
/// those of arrow's `StreamWriter` (a test holds them to it).
pub struct ArrowEncoder {
    options: arrow::ipc::writer::IpcWriteOptions,
    /// The schema message, sent with the first chunk.
    header: Option<Vec<u8>>,
}

impl ArrowEncoder {
    fn new(schema: &SchemaRef, coding: Coding) -> Result<Self, ArrowError> {
        use arrow::ipc::writer::{DictionaryTracker, IpcDataGenerator, IpcWriteOptions};
        let compression = match coding {
            Coding::Identity => None,
            Coding::Zstd => Some(arrow::ipc::CompressionType::ZSTD),
            Coding::Lz4 => Some(arrow::ipc::CompressionType::LZ4_FRAME),
        };
        let options = IpcWriteOptions::default().try_with_compression(compression)?;
        let message = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut DictionaryTracker::new(false),
            &options,
        );
        let mut header = Vec::new();
        arrow::ipc::writer::write_message(&mut header, message, &options)?;
        Ok(Self {
            options,
            header: Some(header),
        })
    }

    fn detached(&mut self, batch: RecordBatch) -> EncodeJob {
        let header = self.header.take().unwrap_or_default();
        let options = self.options.clone();
        Box::new(move || {
            use arrow::ipc::writer::{
                DictionaryTracker, IpcDataGenerator, IpcWriteContext, write_message,
            };
            let (dictionaries, message) = IpcDataGenerator::default().encode(
                &batch,
                &mut DictionaryTracker::new(false),
                &options,
                &mut IpcWriteContext::default(),
            )?;
            // Room for the whole message at once: growing the buffer as
            // messages are appended copied each answer about twice.
            let mut out = header;
            out.reserve(batch.get_array_memory_size().min(RESERVE_MAX));
            for dictionary in dictionaries {
                write_message(&mut out, dictionary, &options)?;
            }
            write_message(&mut out, message, &options)?;
            Ok(Bytes::from(out))
        })
    }

    /// The schema (if no batch carried it) and the end-of-stream marker
    /// (IPC format version 5: continuation, then a zero length).
    fn finish(&mut self) -> Bytes {
        let mut out = self.header.take().unwrap_or_default();
        out.extend_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]);
        Bytes::from(out)
    }
}

/// A Parquet answer: the file starts at the first batch, laid out from it
/// (`parquet_layout`), with the provenance in the footer. Batches are held
/// until they make a row group (about [`PARQUET_ROW_GROUP_BYTES`] of
/// Arrow data), whose columns are then encoded and compressed at once, one
/// thread per column up to the machine's cores: one encoder thread was
/// what a Parquet answer's speed was bound by.
pub struct ParquetEncoder {
    file: Option<ParquetFile>,
    schema: SchemaRef,
    provenance: Provenance,
    /// The row group being gathered, and its size in memory.
    pending: Vec<RecordBatch>,
    pending_bytes: usize,
}

struct ParquetFile {
    writer: parquet::file::writer::SerializedFileWriter<Vec<u8>>,
    columns: parquet::arrow::arrow_writer::ArrowRowGroupWriterFactory,
    row_groups: usize,
}

impl ParquetEncoder {
    fn write(&mut self, batch: &RecordBatch) -> Result<Bytes, ArrowError> {
        if self.file.is_none() {
            self.file = Some(self.start(std::slice::from_ref(batch))?);
        }
        self.pending_bytes += batch.get_array_memory_size();
        self.pending.push(batch.clone());
        if self.pending_bytes < PARQUET_ROW_GROUP_BYTES {
            return Ok(Bytes::new());
        }
        self.flush()
    }

    fn finish(&mut self) -> Result<Bytes, ArrowError> {
        if self.file.is_none() {
            self.file = Some(self.start(&[])?);
        }
        let mut bytes = self.flush()?.to_vec();
        let file = self.started()?;
        file.writer.finish().map_err(parquet_err)?;
        bytes.append(file.writer.inner_mut());
        Ok(Bytes::from(bytes))
    }

    fn start(&self, sample: &[RecordBatch]) -> Result<ParquetFile, ArrowError> {
        let metadata = self
            .provenance
            .iter()
            .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = Layout::choose(sample)
            .apply(parquet_layout::base())
            .set_key_value_metadata(Some(metadata))
            .build();
        let (writer, columns) = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet_err)?;
        Ok(ParquetFile {
            writer,
            columns,
            row_groups: 0,
        })
    }

    fn started(&mut self) -> Result<&mut ParquetFile, ArrowError> {
        self.file
            .as_mut()
            .ok_or_else(|| ArrowError::ComputeError("the Parquet writer did not start".into()))
    }

    /// Writes the gathered batches as one row group, its columns encoded
    /// in parallel; the bytes ready to send.
    fn flush(&mut self) -> Result<Bytes, ArrowError> {
        let batches = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let schema = self.schema.clone();
        let file = self.started()?;
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(Bytes::from(std::mem::take(file.writer.inner_mut())));
        }
        let writers = file
            .columns
            .create_column_writers(file.row_groups)
            .map_err(parquet_err)?;
        // Each leaf column's values from every batch, beside its writer.
        let mut work: Vec<_> = writers.into_iter().map(|w| (w, Vec::new())).collect();
        for batch in &batches {
            let mut slot = 0;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                for leaf in parquet::arrow::arrow_writer::compute_leaves(field, column)
                    .map_err(parquet_err)?
                {
                    let Some((_, leaves)) = work.get_mut(slot) else {
                        return Err(ArrowError::ComputeError(
                            "a column without its Parquet writer".into(),
                        ));
                    };
                    leaves.push(leaf);
                    slot += 1;
                }
            }
        }
        let chunks = encode_columns(work)?;
        let mut row_group = file.writer.next_row_group().map_err(parquet_err)?;
        for chunk in chunks {
            chunk
                .append_to_row_group(&mut row_group)
                .map_err(parquet_err)?;
        }
        row_group.close().map_err(parquet_err)?;
        file.row_groups += 1;
        Ok(Bytes::from(std::mem::take(file.writer.inner_mut())))
    }
}

type ColumnWork = (
    parquet::arrow::arrow_writer::ArrowColumnWriter,
    Vec<parquet::arrow::arrow_writer::ArrowLeafColumn>,
);

/// Encodes each column's values with its writer, the columns spread over
/// as many threads as the machine has cores; the chunks in column order.
fn encode_columns(
    work: Vec<ColumnWork>,
) -> Result<Vec<parquet::arrow::arrow_writer::ArrowColumnChunk>, ArrowError> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, work.len().max(1));
    let encode = |(mut writer, leaves): ColumnWork| {
        for leaf in &leaves {
            writer.write(leaf)?;
        }
        writer.close()
    };
    // Column i goes to thread i % threads; the results are put back in order.
    let mut shares: Vec<Vec<(usize, ColumnWork)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, w) in work.into_iter().enumerate() {
        shares[i % threads].push((i, w));
    }
    let mut done = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| {
                scope.spawn(move || {
                    share
                        .into_iter()
                        .map(|(i, w)| encode(w).map(|chunk| (i, chunk)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(parquet::errors::ParquetError::General(
                        "a column encoder panicked".into(),
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .map_err(parquet_err)?
    .into_iter()
    .flatten()
    .collect::<Vec<_>>();
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, chunk)| chunk).collect())
}

fn parquet_err(e: parquet::errors::ParquetError) -> ArrowError {
    ArrowError::ExternalError(Box::new(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, DictionaryArray, Int32Array, StringViewArray};
    use arrow::datatypes::Int32Type;

    #[test]
    fn filtered_dictionaries_and_views_lose_unseen_values() {
        let dict: DictionaryArray<Int32Type> = vec!["secret-a", "visible", "secret-b"]
            .into_iter()
            .collect();
        let view = StringViewArray::from(vec![
            "secret-long-string-aaaa",
            "visible-long-string-bbb",
            "x",
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", dict.data_type().clone(), true),
            Field::new("v", DataType::Utf8View, true),
            Field::new("n", DataType::Int32, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(dict),
                Arc::new(view),
                Arc::new(Int32Array::from(vec![1, 2, 3])),
            ],
        )
        .unwrap();
        let one_row = arrow::compute::filter_record_batch(
            &batch,
            &arrow::array::BooleanArray::from(vec![false, true, false]),
        )
        .unwrap();
        let served = sanitized_schema(&schema);
        let clean = sanitize(&one_row, &served).unwrap();
        let mut encoder =
            Encoder::new(Format::Arrow, Coding::Identity, &served, &Vec::new()).unwrap();
        let mut bytes = encoder.write(&clean).unwrap().to_vec();
        bytes.extend_from_slice(&encoder.finish().unwrap());
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("visible"));
        assert!(
            !text.contains("secret"),
            "hidden values leaked into the IPC bytes"
        );
    }

    /// Arrow batches encoded apart (in any order, on any thread), sent in
    /// order, are the bytes arrow's own `StreamWriter` writes, compressed
    /// or not, and with no batch at all.
    #[test]
    fn arrow_messages_encoded_apart_are_the_stream_writers_bytes() {
        use arrow::array::{Float64Array, StringArray};
        use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
        let schema = Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("cost", DataType::Float64, true),
        ]));
        let batch = |n: usize| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        (0..n).map(|i| format!("region-{}", i % 7)),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (0..n).map(|i| i as f64 / 3.0),
                    )),
                ],
            )
            .unwrap()
        };
        let batches = [batch(1000), batch(0), batch(37)];
        for (coding, compression) in [
            (Coding::Identity, None),
            (Coding::Lz4, Some(arrow::ipc::CompressionType::LZ4_FRAME)),
            (Coding::Zstd, Some(arrow::ipc::CompressionType::ZSTD)),
        ] {
            for sent in [&batches[..], &[]] {
                let options = IpcWriteOptions::default()
                    .try_with_compression(compression)
                    .unwrap();
                let mut writer =
                    StreamWriter::try_new_with_options(Vec::new(), &schema, options).unwrap();
                for b in sent {
                    writer.write(b).unwrap();
                }
                writer.finish().unwrap();
                let expected = writer.into_inner().unwrap();

                let mut encoder =
                    Encoder::new(Format::Arrow, coding, &schema, &Vec::new()).unwrap();
                let jobs: Vec<EncodeJob> = sent
                    .iter()
                    .map(|b| encoder.detached(b.clone()).unwrap())
                    .collect();
                // Run last first: nothing depends on order but the sending.
                let mut chunks: Vec<Bytes> =
                    jobs.into_iter().rev().map(|job| job().unwrap()).collect();
                chunks.reverse();
                let mut got: Vec<u8> = chunks.concat();
                got.extend_from_slice(&encoder.finish().unwrap());
                assert_eq!(got, expected, "{coding:?}, {} batches", sent.len());
            }
        }
    }

    /// Row groups whose columns are encoded on several threads read back
    /// as the rows sent, in order, with the provenance in the footer; an
    /// answer of no rows is still a Parquet file.
    #[test]
    fn parquet_row_groups_encoded_in_parallel_read_back_whole() {
        use arrow::array::{Float64Array, Int64Array, StringArray};
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("cost", DataType::Float64, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        // About 22 MB of Arrow each: every batch closes a row group.
        let batch = |start: i64, n: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values(start..start + n)),
                    Arc::new(Float64Array::from_iter_values(
                        (start..start + n).map(|i| i as f64 / 7.0),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (start..start + n).map(|i| format!("r{}", i % 5)),
                    )),
                ],
            )
            .unwrap()
        };
        let provenance = vec![("sluice.dataset".to_owned(), "x".to_owned())];
        let sent = [
            batch(0, 700_000),
            batch(700_000, 700_000),
            batch(1_400_000, 1_000),
        ];
        let mut encoder =
            Encoder::new(Format::Parquet, Coding::Identity, &schema, &provenance).unwrap();
        let mut file = Vec::new();
        for b in &sent {
            file.extend_from_slice(&encoder.write(b).unwrap());
        }
        file.extend_from_slice(&encoder.finish().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(file)).unwrap();
        assert!(reader.metadata().num_row_groups() >= 2);
        let footer = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        assert!(footer.iter().any(|kv| kv.key == "sluice.dataset"));
        let got: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let got = arrow::compute::concat_batches(&schema, &got).unwrap();
        let want = arrow::compute::concat_batches(&schema, &sent).unwrap();
        assert_eq!(got, want);

        let mut empty =
            Encoder::new(Format::Parquet, Coding::Identity, &schema, &provenance).unwrap();
        let file = empty.finish().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }

    #[test]
    fn an_empty_csv_still_has_its_header() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "region",
            DataType::Utf8,
            true,
        )]));
        let mut encoder =
            Encoder::new(Format::Csv, Coding::Identity, &schema, &Vec::new()).unwrap();
        assert_eq!(encoder.finish().unwrap(), Bytes::from_static(b"region\n"));
    }
}
