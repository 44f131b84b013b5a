//! The engine's view of the catalogue's store, answering `head` for the
//! files of committed versions from what the catalogue already listed.
//!
//! DataFusion heads every file of a table on every query (to learn its
//! size and ETag before reading). A committed version's files never
//! change, and the catalogue listed them when it loaded the version, so
//! on S3 that head would be a round trip per file per query for an answer
//! already known (answering it here took small slices over moto from 111
//! to 145 per second in `scripts/bench-replicas`). Everything else passes
//! through. Footers and page indexes are cached by DataFusion's metadata
//! cache (50 MB by default), which checks an entry against this metadata
//! (size and last-modified time) before using it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectMeta, ObjectStore, Result};

/// `inner`, with the metadata of known immutable files.
#[derive(Debug)]
pub(super) struct KnownFiles {
    inner: Arc<dyn ObjectStore>,
    known: RwLock<HashMap<Path, ObjectMeta>>,
}

impl KnownFiles {
    pub(super) fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            known: Default::default(),
        }
    }

    /// Remembers `files`: committed, so never changed again.
    pub(super) fn remember<'a>(&self, files: impl IntoIterator<Item = &'a ObjectMeta>) {
        let mut known = self.known.write().unwrap_or_else(|e| e.into_inner());
        for meta in files {
            known.insert(meta.location.clone(), meta.clone());
        }
    }

    /// The answer to a plain `head` of a known file.
    fn known_head(&self, location: &Path, options: &GetOptions) -> Option<GetResult> {
        let plain = options.head
            && options.range.is_none()
            && options.if_match.is_none()
            && options.if_none_match.is_none()
            && options.if_modified_since.is_none()
            && options.if_unmodified_since.is_none()
            && options.version.is_none();
        if !plain {
            return None;
        }
        let known = self.known.read().unwrap_or_else(|e| e.into_inner());
        let meta = known.get(location)?.clone();
        Some(GetResult {
            payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
            range: 0..meta.size,
            meta,
            attributes: Default::default(),
        })
    }
}

impl std::fmt::Display for KnownFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KnownFiles({})", self.inner)
    }
}

impl KnownFiles {
    async fn wrapped_get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.known_head(location, &options) {
            Some(answer) => Ok(answer),
            None => self.inner.get_opts(location, options).await,
        }
    }
}

crate::catalog::rooted::wrap_object_store!(KnownFiles);

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};

    #[tokio::test]
    async fn a_known_file_is_headed_without_the_store_and_read_through_it() {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let file = Path::from("d/versions/1/part-00000.parquet");
        inner
            .put(&file, PutPayload::from_static(b"parquet"))
            .await
            .unwrap();
        let meta = inner.head(&file).await.unwrap();
        let known = KnownFiles::new(inner.clone());
        known.remember([&meta]);
        // Gone from the store: a head still answers what was listed, a
        // read goes to the store (and fails).
        inner.delete(&file).await.unwrap();
        assert_eq!(known.head(&file).await.unwrap(), meta);
        assert!(known.get(&file).await.is_err());
        // Unknown files are headed in the store.
        assert!(known.head(&Path::from("other")).await.is_err());
    }
}
