//! A catalogue under a prefix of a bucket (`s3://bucket/catalogue`), seen
//! as if the prefix were the root.
//!
//! `object_store`'s own `PrefixStore` (0.13) strips the prefix from the
//! locations that listings return, but not from the one in a `get_opts`
//! answer, and `head` goes through `get_opts`. DataFusion heads each file
//! of a table and keeps only answers under the table's path, so under a
//! `PrefixStore` every file was dropped and reads came back empty. This
//! wrapper strips that location too and passes everything else through.

use std::sync::Arc;

use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetResult, ObjectStore, Result};

/// The store at `url` (`s3://bucket/prefix`, `memory:///`, …) with the
/// URL's path as its root, configured from the usual environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`,
/// …): `object_store::parse_url` alone starts from empty settings.
pub fn open_url(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use anyhow::Context;
    let parsed = url::Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
    let options = std::env::vars()
        .filter(|(name, _)| name.starts_with("AWS_"))
        .map(|(name, value)| (name.to_ascii_lowercase(), value));
    let (store, prefix) = object_store::parse_url_opts(&parsed, options)
        .with_context(|| format!("cannot open the object store at {url}"))?;
    Ok(if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(RootedStore::new(Arc::from(store), prefix))
    })
}

/// `inner` with `prefix` as its root.
#[derive(Debug)]
pub struct RootedStore {
    inner: PrefixStore<Arc<dyn ObjectStore>>,
    prefix: Path,
}

impl RootedStore {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: Path) -> Self {
        Self {
            inner: PrefixStore::new(inner, prefix.clone()),
            prefix,
        }
    }

    /// `location` relative to the root (unchanged if it is not under it).
    fn relative(&self, location: Path) -> Path {
        let stripped: Option<Path> = location.prefix_match(&self.prefix).map(Iterator::collect);
        stripped.unwrap_or(location)
    }
}

impl std::fmt::Display for RootedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rooted({})", self.inner)
    }
}

impl RootedStore {
    async fn wrapped_get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut got = self.inner.get_opts(location, options).await?;
        got.meta.location = self.relative(got.meta.location);
        Ok(got)
    }
}

wrap_object_store!(RootedStore);

/// Implements `ObjectStore` for a wrapper type with an `inner` store and a
/// method `wrapped_get_opts`: every other method passes to `inner`
/// unchanged (the wrappers here change only what a `get` answers).
macro_rules! wrap_object_store {
    ($wrapper:ty) => {
        #[async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl object_store::ObjectStore for $wrapper {
            async fn put_opts(
                &self,
                location: &object_store::path::Path,
                payload: object_store::PutPayload,
                opts: object_store::PutOptions,
            ) -> object_store::Result<object_store::PutResult> {
                self.inner.put_opts(location, payload, opts).await
            }

            async fn put_multipart_opts(
                &self,
                location: &object_store::path::Path,
                opts: object_store::PutMultipartOptions,
            ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
                self.inner.put_multipart_opts(location, opts).await
            }

            async fn get_opts(
                &self,
                location: &object_store::path::Path,
                options: object_store::GetOptions,
            ) -> object_store::Result<object_store::GetResult> {
                self.wrapped_get_opts(location, options).await
            }

            async fn get_ranges(
                &self,
                location: &object_store::path::Path,
                ranges: &[std::ops::Range<u64>],
            ) -> object_store::Result<Vec<bytes::Bytes>> {
                self.inner.get_ranges(location, ranges).await
            }

            fn delete_stream(
                &self,
                locations: futures::stream::BoxStream<
                    'static,
                    object_store::Result<object_store::path::Path>,
                >,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>>
            {
                self.inner.delete_stream(locations)
            }

            fn list(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
            {
                self.inner.list(prefix)
            }

            fn list_with_offset(
                &self,
                prefix: Option<&object_store::path::Path>,
                offset: &object_store::path::Path,
            ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>
            {
                self.inner.list_with_offset(prefix, offset)
            }

            async fn list_with_delimiter(
                &self,
                prefix: Option<&object_store::path::Path>,
            ) -> object_store::Result<object_store::ListResult> {
                self.inner.list_with_delimiter(prefix).await
            }

            async fn copy_opts(
                &self,
                from: &object_store::path::Path,
                to: &object_store::path::Path,
                options: object_store::CopyOptions,
            ) -> object_store::Result<()> {
                self.inner.copy_opts(from, to, options).await
            }

            async fn rename_opts(
                &self,
                from: &object_store::path::Path,
                to: &object_store::path::Path,
                options: object_store::RenameOptions,
            ) -> object_store::Result<()> {
                self.inner.rename_opts(from, to, options).await
            }
        }
    };
}
pub(crate) use wrap_object_store;

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};

    #[tokio::test]
    async fn a_head_answers_with_the_location_asked_for() {
        let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let rooted = RootedStore::new(bucket.clone(), Path::from("catalogue"));
        let file = Path::from("d/versions/1/part-00000.parquet");
        rooted
            .put(&file, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert!(
            bucket
                .head(&Path::from("catalogue/d/versions/1/part-00000.parquet"))
                .await
                .is_ok()
        );
        assert_eq!(rooted.head(&file).await.unwrap().location, file);
        let got = rooted.get(&file).await.unwrap();
        assert_eq!(got.meta.location, file);
        assert_eq!(got.bytes().await.unwrap().as_ref(), b"x");
    }
}
