//! An answer's Arrow IPC stream, cut into Flight messages without decoding
//! a single array: each IPC message (continuation marker, length, the
//! flatbuffer header, then the body the header sizes) becomes one
//! `FlightData` with that header and body. The bytes are the ones the
//! HTTPS answer carries, so the two answers cannot differ.

use arrow_flight::FlightData;
use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::http::problem::ApiError;
use crate::slice::SliceError;
use crate::util::internal::Internal;

/// The IPC stream's continuation marker (Arrow ≥ 0.15).
const CONTINUATION: u32 = 0xFFFF_FFFF;
/// The largest message header taken (a schema of many thousand columns is
/// still far smaller): a bound on what a malformed stream could make us hold.
const MAX_HEADER_BYTES: usize = 64 << 20;

/// One IPC message: its header as the IPC stream frames it (marker,
/// length, flatbuffer), and its body.
pub(super) struct Frame {
    pub(super) framed_header: Bytes,
    pub(super) body: Bytes,
}

impl Frame {
    /// The message as Flight sends it.
    pub(super) fn flight_data(&self) -> FlightData {
        FlightData {
            data_header: self.framed_header.slice(8..),
            data_body: self.body.clone(),
            ..Default::default()
        }
    }
}

/// Reads the IPC messages out of an answer's chunks, however the chunks cut
/// them.
pub(super) struct Frames {
    chunks: BoxStream<'static, Result<Bytes, SliceError>>,
    buffer: BytesMut,
    ended: bool,
}

impl Frames {
    pub(super) fn new(chunks: BoxStream<'static, Result<Bytes, SliceError>>) -> Self {
        Self {
            chunks,
            buffer: BytesMut::new(),
            ended: false,
        }
    }

    /// The next message; `None` after the end-of-stream marker (or the
    /// stream's end), and after the first error.
    pub(super) async fn next(&mut self) -> Option<Result<Frame, ApiError>> {
        if self.ended {
            return None;
        }
        let next = self.read().await;
        if !matches!(next, Some(Ok(_))) {
            self.ended = true;
        }
        next
    }

    async fn read(&mut self) -> Option<Result<Frame, ApiError>> {
        let header_len = match self.fill(8).await {
            Ok(true) => {
                let marker = u32::from_le_bytes(self.buffer[0..4].try_into().ok()?);
                let len = u32::from_le_bytes(self.buffer[4..8].try_into().ok()?) as usize;
                if marker != CONTINUATION || len > MAX_HEADER_BYTES {
                    return Some(Err(malformed()));
                }
                len
            }
            Ok(false) => return (!self.buffer.is_empty()).then(|| Err(malformed())),
            Err(e) => return Some(Err(e.into())),
        };
        if header_len == 0 {
            return None;
        }
        match self.fill(8 + header_len).await {
            Ok(true) => {}
            Ok(false) => return Some(Err(malformed())),
            Err(e) => return Some(Err(e.into())),
        }
        let body_len = match arrow::ipc::root_as_message(&self.buffer[8..8 + header_len]) {
            Ok(message) => match usize::try_from(message.bodyLength()) {
                Ok(n) => n,
                Err(_) => return Some(Err(malformed())),
            },
            Err(_) => return Some(Err(malformed())),
        };
        match self.fill(8 + header_len + body_len).await {
            Ok(true) => {}
            Ok(false) => return Some(Err(malformed())),
            Err(e) => return Some(Err(e.into())),
        }
        let framed_header = self.buffer.split_to(8 + header_len).freeze();
        let body = self.buffer.split_to(body_len).freeze();
        Some(Ok(Frame {
            framed_header,
            body,
        }))
    }

    /// Reads chunks until `n` bytes are buffered: false if the stream ended
    /// first.
    async fn fill(&mut self, n: usize) -> Result<bool, SliceError> {
        while self.buffer.len() < n {
            match self.chunks.next().await {
                Some(Ok(mut chunk)) => {
                    if self.buffer.is_empty() && chunk.len() >= n {
                        // The common case: a chunk holds whole messages.
                        self.buffer = BytesMut::from(std::mem::take(&mut chunk));
                    } else {
                        self.buffer.extend_from_slice(chunk.chunk());
                    }
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

fn malformed() -> ApiError {
    Internal::new("cutting an Arrow answer into Flight messages").into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::record_batch::RecordBatch;
    use std::sync::Arc;

    #[tokio::test]
    async fn messages_cut_anywhere_come_out_whole_and_read_back() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batches: Vec<RecordBatch> = (0..3)
            .map(|i| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(Int64Array::from_iter_values(i * 100..i * 100 + 50)),
                        Arc::new(StringArray::from_iter(
                            (0..50).map(|j| (j % 7 != 0).then(|| format!("row {j} of {i}"))),
                        )),
                    ],
                )
                .unwrap()
            })
            .collect();
        let mut ipc = Vec::new();
        {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &schema).unwrap();
            for b in &batches {
                w.write(b).unwrap();
            }
            w.finish().unwrap();
        }
        for cut in [1usize, 7, 64, 1000, ipc.len()] {
            let chunks: Vec<Result<Bytes, SliceError>> = ipc
                .chunks(cut)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let mut frames = Frames::new(futures::stream::iter(chunks).boxed());
            let mut data = Vec::new();
            while let Some(frame) = frames.next().await {
                data.push(frame.unwrap().flight_data());
            }
            assert_eq!(data.len(), 4, "schema and three batches (cut {cut})");
            let decoded = arrow_flight::utils::flight_data_to_batches(&data).unwrap();
            assert_eq!(decoded, batches, "cut {cut}");
        }
        let cut_short: Vec<Result<Bytes, SliceError>> =
            vec![Ok(Bytes::copy_from_slice(&ipc[..ipc.len() / 2]))];
        let mut frames = Frames::new(futures::stream::iter(cut_short).boxed());
        let mut saw_error = false;
        while let Some(frame) = frames.next().await {
            saw_error |= frame.is_err();
        }
        assert!(
            saw_error,
            "a stream cut mid-message is an error, not a short answer"
        );
    }
}
