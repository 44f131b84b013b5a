//! One slice cut into parts a client reads at once: Flight SQL answers a
//! large slice with one endpoint per part, and clients (ADBC's driver,
//! polars through it) fetch the endpoints side by side.
//!
//! A part is a run of whole row groups of the version's files, in file
//! order. The parts of a version are disjoint and together hold every row
//! group once, so the answer to the same request over each part, put end
//! to end in part order, is exactly the whole answer in file order. Each
//! part is its own answer: it is authorised, planned, audited and streamed
//! like any slice, under the policy in force when it is fetched.
//!
//! Only answers whose rows do not depend on each other are cut: no page
//! (`limit`, `offset`) and no row cap (both count rows across the whole
//! answer), and no pseudonym (rows showing one are ordered by it; keeping
//! them whole leaves nothing to compare between two projects' parts).
//!
//! A part reaches the engine as [`PartTable`]: the version's table whose
//! scan reads only the part's byte ranges. DataFusion reads a row group
//! when its first page starts inside a file's range (the rule its own
//! parallel scans rely on), so ranges cut at row-group starts select
//! exactly the part's row groups.

use std::ops::Range;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Statistics;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use object_store::path::Path;

use super::{SliceError, SliceRequest};
use crate::catalog::Version;
use crate::domain::Mask;
use crate::policy::AccessPlan;

/// One part of a version: which part of how many, and the byte ranges of
/// the files whose row groups it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The version the part was cut from; it reads no other.
    pub version: u64,
    pub index: usize,
    pub count: usize,
    ranges: Vec<(Path, Range<u64>)>,
}

impl Part {
    /// "2/4": the second of four, as the audit trail records it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.index + 1, self.count)
    }
}

/// Whether `request` under `plan` may be answered in parts (see the
/// module's documentation).
pub fn splittable(plan: &AccessPlan, request: &SliceRequest) -> bool {
    request.limit.is_none()
        && request.offset.is_none()
        && plan.max_rows.is_none()
        && plan.mode.serves_rows()
        && !plan.columns.iter().any(|c| c.mask == Some(Mask::Hash))
}

/// `version` cut into at most `most` parts of whole row groups, each of at
/// least `rows_each` rows (by the row groups' counts, so balanced by rows);
/// empty when it is too small to cut in two.
pub async fn split(
    store: &dyn ObjectStore,
    version: &Version,
    most: usize,
    rows_each: u64,
) -> Result<Vec<Part>, SliceError> {
    let count = usize::try_from(version.rows / rows_each.max(1))
        .unwrap_or(usize::MAX)
        .min(most);
    if count < 2 {
        return Ok(Vec::new());
    }
    // Each row group: its file, where its first page starts, its rows.
    let mut groups = Vec::new();
    for file in &version.files {
        let (metadata, data_end) = super::committed::footer(store, file).await?;
        let starts: Vec<(u64, u64)> = metadata
            .row_groups()
            .iter()
            // Where its first chunk starts: its dictionary page, or its
            // first data page (the rule DataFusion's range reads use).
            .map(|g| {
                let rows = u64::try_from(g.num_rows()).unwrap_or_default();
                (g.column(0).byte_range().0, rows)
            })
            .collect();
        for (i, &(start, rows)) in starts.iter().enumerate() {
            let end = starts.get(i + 1).map_or(data_end, |next| next.0);
            groups.push((&file.location, start..end, rows));
        }
    }
    let count = count.min(groups.len());
    if count < 2 {
        return Ok(Vec::new());
    }
    let total: u64 = groups.iter().map(|g| g.2).sum();
    let mut parts: Vec<Part> = (0..count)
        .map(|index| Part {
            version: version.number,
            index,
            count,
            ranges: Vec::new(),
        })
        .collect();
    let (groups_in_all, mut seen, mut last) = (groups.len(), 0u64, 0usize);
    for (i, (file, range, rows)) in groups.iter().enumerate() {
        // The part whose share of the rows this group starts in, but never
        // skipping a part, and leaving enough groups for the parts after.
        let by_rows =
            usize::try_from(seen.saturating_mul(count as u64) / total.max(1)).unwrap_or(usize::MAX);
        let ceiling = if i == 0 { 0 } else { last + 1 };
        let floor = count.saturating_sub(groups_in_all - i);
        let index = by_rows.min(ceiling).max(floor).min(count - 1);
        (seen, last) = (seen + rows, index);
        let ranges = &mut parts[index].ranges;
        match ranges.last_mut() {
            Some((path, run)) if path == *file && run.end == range.start => run.end = range.end,
            _ => ranges.push(((*file).clone(), range.clone())),
        }
    }
    Ok(parts)
}

/// The version's table, scanning only `part`'s ranges.
#[derive(Debug)]
pub(super) struct PartTable {
    table: Arc<ListingTable>,
    part: Part,
}

impl PartTable {
    pub(super) fn new(table: Arc<ListingTable>, part: Part) -> Self {
        Self { table, part }
    }
}

#[async_trait]
impl TableProvider for PartTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    /// The whole table's scan with its files replaced by the part's ranges
    /// (one group, read in order), and no statistics: the whole files'
    /// would be wrong for a part.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let whole = self.table.scan(state, projection, filters, limit).await?;
        let config = whole
            .downcast_ref::<DataSourceExec>()
            .and_then(|exec| exec.data_source().downcast_ref::<FileScanConfig>())
            .ok_or_else(|| DataFusionError::Internal("a table scan is not a file scan".into()))?;
        let files = config
            .file_groups
            .iter()
            .flat_map(|group| group.files())
            .collect::<Vec<_>>();
        let ranged = self
            .part
            .ranges
            .iter()
            .map(|(path, range)| {
                let file = files
                    .iter()
                    .find(|f| &f.object_meta.location == path)
                    .ok_or_else(|| {
                        DataFusionError::Internal("a part names a file outside its table".into())
                    })?;
                let (start, end) = (
                    i64::try_from(range.start).unwrap_or(i64::MAX),
                    i64::try_from(range.end).unwrap_or(i64::MAX),
                );
                Ok((*file).clone().with_range(start, end))
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = config.file_schema().clone();
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(vec![FileGroup::new(ranged)])
            .with_statistics(Statistics::new_unknown(&schema))
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt as _, PutPayload};

    /// A version of one file whose row groups hold `groups` rows each.
    async fn version_of(store: &InMemory, groups: &[usize]) -> Version {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut bytes = Vec::new();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(&mut bytes, schema.clone(), None).unwrap();
        for (g, &rows) in groups.iter().enumerate() {
            let values = Int64Array::from_iter_values((0..rows).map(|i| (g * 1000 + i) as i64));
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
            writer.write(&batch).unwrap();
            writer.flush().unwrap();
        }
        writer.close().unwrap();
        let path = Path::from("d/versions/1/part-0.parquet");
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
        Version {
            number: 1,
            files: vec![store.head(&path).await.unwrap()],
            rows: groups.iter().sum::<usize>() as u64,
            bytes: 0,
            published: time::OffsetDateTime::UNIX_EPOCH,
            schema,
        }
    }

    /// For each part, the row groups (by index) whose first page starts in
    /// one of its ranges: what DataFusion reads for it.
    async fn groups_read(store: &InMemory, version: &Version, parts: &[Part]) -> Vec<Vec<usize>> {
        let (metadata, _) = crate::slice::committed::footer(store, &version.files[0])
            .await
            .unwrap();
        let starts: Vec<u64> = metadata
            .row_groups()
            .iter()
            .map(|g| g.column(0).byte_range().0)
            .collect();
        parts
            .iter()
            .map(|part| {
                (0..starts.len())
                    .filter(|&g| part.ranges.iter().any(|(_, r)| r.contains(&starts[g])))
                    .collect()
            })
            .collect()
    }

    #[tokio::test]
    async fn parts_hold_every_row_group_once_in_order_balanced_by_rows() {
        let store = InMemory::new();
        let version = version_of(&store, &[100; 10]).await;
        let parts = split(&store, &version, 4, 200).await.unwrap();
        assert_eq!(parts.len(), 4);
        let read = groups_read(&store, &version, &parts).await;
        assert_eq!(read.concat(), (0..10).collect::<Vec<_>>(), "{read:?}");
        assert!(read.iter().all(|g| (2..=3).contains(&g.len())), "{read:?}");
        assert!(parts.iter().all(|p| p.ranges.len() == 1), "runs are merged");
        assert_eq!(parts[1].label(), "2/4");
    }

    #[tokio::test]
    async fn no_part_is_left_empty_and_small_versions_are_not_cut() {
        let store = InMemory::new();
        // One large group first: the share by rows would skip parts.
        let version = version_of(&store, &[1000, 10, 10, 10]).await;
        let parts = split(&store, &version, 4, 10).await.unwrap();
        let read = groups_read(&store, &version, &parts).await;
        assert_eq!(read, vec![vec![0], vec![1], vec![2], vec![3]]);

        assert!(split(&store, &version, 4, 600).await.unwrap().is_empty());
        assert!(split(&store, &version, 1, 10).await.unwrap().is_empty());
        let single = version_of(&store, &[5000]).await;
        assert!(split(&store, &single, 4, 10).await.unwrap().is_empty());
    }
}
