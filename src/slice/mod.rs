//! Slices: a caller's request (columns, filter, limit, offset), checked
//! against their [`AccessPlan`], turned into a DataFusion plan and run as a
//! bounded stream of encoded chunks.
//!
//! The plan is built in this order, which is what makes the access rules
//! hold by construction:
//!
//! ```text
//! scan ─► policy row filter (raw columns) ─► mask + project to visible columns
//!      ─► caller's filter ─► caller's columns ─► offset/limit (and row cap)
//! ```
//!
//! The caller's filter and columns can only name what the projection
//! produced, so hidden columns do not exist for them and masked columns are
//! seen masked. The first two steps are planned apart from the rest when
//! the grant has a row filter or a mask ([`grant_view`]), so the optimiser
//! cannot move any part of the caller's filter across that line.
//!
//! Aggregate-only and DP callers do not send filters: they ask for tables
//! over declared fields ([`table`]), counted with the same work whichever
//! rows match. Plans run on a dedicated multi-threaded runtime, so the
//! engine decodes and encodes in parallel while the HTTP workers write to
//! sockets; the two meet in a bounded channel, which is the backpressure.

mod aggregate;
mod cell_noise;
pub mod committed;
mod fields;
mod grant_view;
mod known_files;
pub mod parts;
pub mod places;
mod selection;
mod table;
mod table_release;
pub use aggregate::AggregateRequest;
mod private;
pub use private::{PlannedRelease, PrivateQuery};
pub mod disclosure;
mod mask;
mod pseudonym;
pub use pseudonym::Secret;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::audit::Outcome;
use crate::catalog::{Catalog, Version};
use crate::filter::{self, FilterError};
use crate::formats::{Coding, Encoder, Format, Provenance, sanitize, sanitized_schema};
use crate::policy::AccessPlan;
use crate::util::internal::{Internal, OrInternal};

/// The URL under which the catalogue's object store is registered with the engine.
const STORE_URL: &str = "sluice-catalog://store";

/// The largest offset or limit a slice takes: offset plus limit must still
/// fit in the engine's row counters.
const MAX_ROW_NUMBER: u64 = i64::MAX as u64 / 2;
/// How deep pages of pseudonymised rows reach (offset plus limit): they are
/// cut from a sort, which holds that many rows.
const PSEUDONYM_PAGE_DEPTH: u64 = 1_000_000;

/// What a caller asked for, as received (names not yet resolved).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SliceRequest {
    pub columns: Option<Vec<String>>,
    pub filter: Option<String>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

/// Why a slice could not be planned or run.
#[derive(Debug, thiserror::Error)]
pub enum SliceError {
    /// A column name that is not visible to the caller (or does not exist;
    /// the two are deliberately the same).
    #[error("{0}")]
    UnknownColumn(crate::util::suggest::UnknownColumn),
    /// The column list is malformed.
    #[error("{0}")]
    BadColumns(String),
    /// The caller's filter was refused.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// An aggregate-only or DP caller's question is not a table over
    /// declared fields; says what may be asked.
    #[error("{0}")]
    Selection(String),
    /// The filter parsed but could not be applied to these columns' types.
    /// Deliberately generic: engine messages can quote cell values.
    #[error(
        "the filter could not be applied: check that each comparison is between compatible types (numbers with numbers, text with quoted text, dates with 'YYYY-MM-DD')"
    )]
    FilterTypes,
    /// Evaluating the query failed while reading rows (also generic).
    #[error("the query failed while reading rows; check the filter's types and arithmetic")]
    Evaluation,
    /// The engine's line was too long to wait in.
    #[error("the server is busy; try again in {retry_after_secs} s")]
    Busy { retry_after_secs: u64 },
    /// Anything else in the engine: a server fault.
    #[error("engine: {0}")]
    Internal(#[from] Internal),
}

/// How a stream ended, for the audit trail and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// `Complete`, `ClientAborted` or `Error`.
    pub outcome: Outcome,
    pub rows: u64,
    pub bytes: u64,
}

/// Called once when a stream's engine work ends, however it ends.
pub type OnFinish = Box<dyn FnOnce(Finished) + Send>;

/// A running slice: the first chunk (already produced, so early errors
/// become proper HTTP errors) and the rest as a bounded channel. What was
/// sent is reported to the stream's [`OnFinish`].
pub struct SliceStream {
    first: Option<bytes::Bytes>,
    rest: mpsc::Receiver<Result<bytes::Bytes, SliceError>>,
    /// Set once the producer handed over the answer's last chunk.
    complete: Arc<std::sync::atomic::AtomicBool>,
}

impl SliceStream {
    /// The answer's chunks, in order, ending in an error if the answer
    /// stopped before its end (its reader stalled or was slower than the
    /// floor rate): a response cut off must not end like a whole one, or a
    /// CSV reader would take a truncated file for the slice.
    pub fn into_chunks(
        self,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, SliceError>> + Send + 'static {
        let complete = self.complete;
        let cut_off = futures::stream::once(async move {
            (!complete.load(Ordering::Acquire))
                .then(|| Err(Internal::new("the answer was cut off before its end").into()))
        })
        .filter_map(std::future::ready);
        futures::stream::iter(self.first.map(Ok))
            .chain(tokio_stream::wrappers::ReceiverStream::new(self.rest))
            .chain(cut_off)
    }
}

/// The query engine: a DataFusion context over the catalogue's store, and
/// the runtime its plans run on.
pub struct Engine {
    ctx: SessionContext,
    /// The same engine on one partition: rows come in file order, so a
    /// slice with an offset or a limit (a page, a row cap) or a snapshot is
    /// the same rows every time it is asked for. Parallel scans interleave
    /// their partitions in whatever order they finish.
    in_file_order: SessionContext,
    runtime: crate::util::runtime::OwnedRuntime,
    /// The query runtime's worker threads.
    threads: usize,
    buffer_chunks: usize,
    /// Places in the engine (`limits.max_running_slices`): a slice,
    /// aggregate or snapshot holds one from before its plan runs until its
    /// last byte is handed over.
    places: Arc<places::Places>,
    queue_wait: Duration,
    stall: Duration,
    /// The floor rate below which a reader is cut off.
    pace: ReaderPace,
    active: Arc<AtomicUsize>,
    secret: Secret,
    /// The fixed noise of aggregate-only tables' cells.
    cell_noise: cell_noise::CellNoise,
    /// Tables by the files they read (see [`Engine::table`]).
    tables: std::sync::Mutex<std::collections::HashMap<String, Arc<ListingTable>>>,
    /// The store the engine reads, knowing the committed files' metadata.
    files: Arc<known_files::KnownFiles>,
}

/// Counts a running producer for as long as it lives.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Engine {
    pub fn new(
        catalog: &Catalog,
        secret: Secret,
        threads: usize,
        limits: &crate::config::Limits,
    ) -> Result<Self, SliceError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            threads
        };
        let runtime = crate::util::runtime::OwnedRuntime::new(threads, "sluice-query")
            .or_internal("starting the query threads")?;
        let mut config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_batch_size(limits.batch_rows);
        let parquet = &mut config.options_mut().execution.parquet;
        // Plain Utf8, not views: view buffers carry other rows' strings
        // (docs/security.md) and cost 100x the bytes on a point lookup.
        parquet.schema_force_view_types = false;
        // Evaluate filters while decoding, so selective slices skip pages.
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        // One memory pool for both contexts: what every running answer's
        // hash tables and sorts hold together.
        let memory = RuntimeEnvBuilder::new()
            .with_memory_limit(limits.engine_memory_bytes, 1.0)
            .build_arc()
            .map_err(internal)?;
        let in_file_order = SessionContext::new_with_config_rt(
            config.clone().with_target_partitions(1),
            memory.clone(),
        );
        let ctx = SessionContext::new_with_config_rt(config, memory);
        let url = url_of(STORE_URL)?;
        let files = Arc::new(known_files::KnownFiles::new(catalog.store().clone()));
        ctx.register_object_store(&url, files.clone());
        in_file_order.register_object_store(&url, files.clone());
        Ok(Self {
            ctx,
            in_file_order,
            runtime,
            threads,
            buffer_chunks: limits.stream_buffer_chunks,
            places: places::Places::new(limits.max_running_slices),
            queue_wait: Duration::from_secs(limits.slice_queue_secs),
            stall: Duration::from_secs(limits.stalled_reader_secs),
            pace: ReaderPace {
                floor: limits.min_reader_bytes_per_sec,
                grace: Duration::from_secs(limits.slow_reader_grace_secs.max(1)),
            },
            active: Arc::new(AtomicUsize::new(0)),
            cell_noise: cell_noise::CellNoise::new(secret.derived("cell-noise")),
            secret,
            tables: Default::default(),
            files,
        })
    }

    /// The key uploads' data profiles are taken under.
    pub fn profile_key(&self) -> crate::catalog::profile::ProfileKey {
        self.secret.profile_key()
    }

    /// A frame over an answer built outside the engine (released
    /// aggregates), ready to stream in any format.
    pub fn frame_of(&self, batch: arrow::array::RecordBatch) -> Result<DataFrame, SliceError> {
        self.ctx.read_batch(batch).map_err(internal)
    }

    /// Slices whose engine work is still running.
    pub fn active_streams(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Builds the plan for `request` on `version` under `plan`. A slice
    /// with an offset or a limit, or under a row cap, reads rows in file
    /// order, so the same request always gets the same rows.
    pub fn plan(
        &self,
        version: &Version,
        plan: &AccessPlan,
        request: &SliceRequest,
        max_filter_bytes: usize,
    ) -> Result<DataFrame, SliceError> {
        let paged = request.offset.is_some() || request.limit.is_some() || plan.max_rows.is_some();
        self.plan_on(paged, version, plan, request, max_filter_bytes, None)
    }

    /// [`Engine::plan`] over one part of `version` (see [`parts`]), in
    /// file order: the parts' answers end to end are the whole answer.
    pub fn plan_part(
        &self,
        version: &Version,
        plan: &AccessPlan,
        request: &SliceRequest,
        max_filter_bytes: usize,
        part: &parts::Part,
    ) -> Result<DataFrame, SliceError> {
        if part.version != version.number || !parts::splittable(plan, request) {
            return Err(Internal::new("a part planned outside what may be cut").into());
        }
        self.plan_on(true, version, plan, request, max_filter_bytes, Some(part))
    }

    /// `version` cut into at most `most` parts of at least `rows_each`
    /// rows (see [`parts::split`]); empty when it is too small to cut.
    pub async fn split(
        &self,
        version: &Version,
        most: usize,
        rows_each: u64,
    ) -> Result<Vec<parts::Part>, SliceError> {
        self.files.remember(&version.files);
        parts::split(self.files.as_ref(), version, most, rows_each).await
    }

    /// [`Engine::plan`], always in file order: what a snapshot is written
    /// from, so a file cut again after eviction has the same bytes.
    pub fn plan_in_file_order(
        &self,
        version: &Version,
        plan: &AccessPlan,
        request: &SliceRequest,
        max_filter_bytes: usize,
    ) -> Result<DataFrame, SliceError> {
        self.plan_on(true, version, plan, request, max_filter_bytes, None)
    }

    fn plan_on(
        &self,
        in_file_order: bool,
        version: &Version,
        plan: &AccessPlan,
        request: &SliceRequest,
        max_filter_bytes: usize,
        part: Option<&parts::Part>,
    ) -> Result<DataFrame, SliceError> {
        let visible = visible_names(plan);
        let ctx = if in_file_order {
            &self.in_file_order
        } else {
            &self.ctx
        };
        let mut df = self.visible_frame(
            ctx,
            (version, part),
            plan,
            request.filter.as_deref(),
            &visible,
            max_filter_bytes,
        )?;

        // 4. The caller's columns.
        if let Some(columns) = &request.columns {
            let names = resolve_columns(columns, &visible)?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            df = df.select_columns(&names).map_err(internal)?;
        }

        // 5. Offset, limit and the grant's row cap. Past the row count is an
        //    empty answer; past what the engine can count is the caller's
        //    mistake, not a server fault.
        for (name, value) in [("offset", request.offset), ("limit", request.limit)] {
            if value.is_some_and(|v| v > MAX_ROW_NUMBER) {
                return Err(SliceError::BadColumns(format!(
                    "{name} must be at most {MAX_ROW_NUMBER}"
                )));
            }
        }
        let fetch = match (request.limit, plan.max_rows) {
            (Some(l), Some(m)) => Some(l.min(m)),
            (l, m) => l.or(m),
        };
        // Pages of rows that show a pseudonym are cut from the project's
        // own order (sorted by its pseudonyms), not from file order:
        // otherwise two projects could fetch "row k" one at a time and
        // link their pseudonyms by position.
        let paged_by_caller = request.offset.is_some() || request.limit.is_some();
        if paged_by_caller && let Some(index) = pseudonym_column(plan, df.schema().as_arrow()) {
            let depth = request
                .offset
                .unwrap_or(0)
                .saturating_add(fetch.unwrap_or(u64::MAX));
            if depth > PSEUDONYM_PAGE_DEPTH {
                return Err(SliceError::BadColumns(format!(
                    "pages of pseudonymised rows reach at most {PSEUDONYM_PAGE_DEPTH} rows deep (offset plus limit); give a limit, narrow with a filter, or download without offset and limit"
                )));
            }
            let name = df.schema().field(index).name().clone();
            df = df
                .sort(vec![
                    datafusion::logical_expr::Expr::Column(
                        datafusion::common::Column::new_unqualified(name),
                    )
                    .sort(true, true),
                ])
                .map_err(internal)?;
        }
        if fetch.is_some() || request.offset.is_some_and(|o| o > 0) {
            let skip = usize::try_from(request.offset.unwrap_or(0)).unwrap_or(usize::MAX);
            let fetch = fetch.map(|f| usize::try_from(f).unwrap_or(usize::MAX));
            df = df.limit(skip, fetch).map_err(internal)?;
        }
        Ok(df)
    }

    /// The engine's table over a version's files, made once per version:
    /// versions are immutable, so the same files always make the same table.
    fn table(&self, version: &Version) -> Result<Arc<ListingTable>, SliceError> {
        // Keyed by location and ETag: a path that ever named other bytes
        // makes another table.
        let key: String = version
            .files
            .iter()
            .map(|f| format!("{} {}", f.location, f.e_tag.as_deref().unwrap_or("-")))
            .collect::<Vec<_>>()
            .join("\n");
        let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(table) = tables.get(&key) {
            return Ok(table.clone());
        }
        self.files.remember(&version.files);
        let urls = version
            .files
            .iter()
            .map(|f| ListingTableUrl::parse(format!("{STORE_URL}/{}", f.location)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(internal)?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(version.schema.clone());
        let table = Arc::new(ListingTable::try_new(config).map_err(internal)?);
        tables.insert(key, table.clone());
        Ok(table)
    }

    /// Steps 1-3 of every plan: the policy's row filter on raw rows, masks
    /// and the visible projection, then the caller's filter, which may name
    /// only `filterable` columns (visible ones, or fewer). The rows are the
    /// version's, or only those of one part of it.
    fn visible_frame(
        &self,
        ctx: &SessionContext,
        (version, part): (&Version, Option<&parts::Part>),
        plan: &AccessPlan,
        caller_filter: Option<&str>,
        filterable: &BTreeSet<String>,
        max_filter_bytes: usize,
    ) -> Result<DataFrame, SliceError> {
        let table = self.table(version)?;
        let table: Arc<dyn datafusion::datasource::TableProvider> = match part {
            Some(part) => Arc::new(parts::PartTable::new(table, part.clone())),
            None => table,
        };

        // 1. The policy's row filter, on raw columns (written by an admin,
        //    checked when the policy was loaded).
        let row_filter = plan
            .row_filter
            .as_ref()
            .map(|row_filter| {
                let all: BTreeSet<String> = version
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                filter::parse(row_filter, usize::MAX, &all)
                    .or_internal("parsing the grant's row filter")
            })
            .transpose()?;

        // 2. Masks and the visible projection.
        let projection = plan
            .columns
            .iter()
            .map(|c| {
                let field = version
                    .schema
                    .field_with_name(c.name.as_str())
                    .or_internal("finding a planned column in the version's schema")?;
                mask::masked_column(
                    c.name.as_str(),
                    field.data_type(),
                    c.mask,
                    &self.secret,
                    &plan.project,
                )
                .map_err(internal)
            })
            .collect::<Result<Vec<_>, _>>()?;

        // Steps 1 and 2 are planned on their own when there is a line to
        // keep (rows outside the grant, or masked values): see
        // [`grant_view`].
        let mut df = if row_filter.is_some() || plan.columns.iter().any(|c| c.mask.is_some()) {
            let source = datafusion::datasource::provider_as_source(table);
            let mut rows = LogicalPlanBuilder::scan("dataset", source, None).map_err(internal)?;
            if let Some(expr) = row_filter {
                rows = rows.filter(expr).map_err(internal)?;
            }
            let rows = rows.build().map_err(internal)?;
            let view = grant_view::GrantView::new(rows, projection).map_err(internal)?;
            ctx.read_table(Arc::new(view)).map_err(internal)?
        } else {
            ctx.read_table(table)
                .and_then(|df| df.select(projection))
                .map_err(internal)?
        };

        // 3. The caller's filter, resolved against visible columns only.
        if let Some(text) = caller_filter.filter(|t| !t.trim().is_empty()) {
            let expr = filter::parse(text, max_filter_bytes, filterable)?;
            filter::check_types(&expr, df.schema())?;
            df = df.filter(expr).map_err(|_| SliceError::FilterTypes)?;
        }

        Ok(df)
    }

    /// Runs `df` on the query runtime, encoding to `format`, and returns
    /// once the first chunk is ready (or the run failed before it). The
    /// answer keeps `place` until its last chunk is handed over.
    pub async fn stream(
        &self,
        df: DataFrame,
        plan: &AccessPlan,
        (format, coding): (Format, Coding),
        provenance: Provenance,
        place: Place,
        on_finish: OnFinish,
    ) -> Result<SliceStream, SliceError> {
        let order = pseudonym_order(plan, &df);
        let encode_width = self.threads;
        self.run(place, move |sink| {
            produce(
                df,
                (format, coding),
                order,
                provenance,
                encode_width,
                sink,
                on_finish,
            )
        })
        .await
    }

    /// The Parquet answer that is a committed file's own bytes (all, or
    /// whole columns) with `provenance` in its footer (see [`committed`]):
    /// for a table or columns the caller's plan leaves unchanged, chosen by
    /// [`committed::from_file`].
    pub async fn stream_committed(
        &self,
        from: committed::FromFile<'_>,
        provenance: Provenance,
        place: Place,
        on_finish: OnFinish,
    ) -> Result<SliceStream, SliceError> {
        let store: Arc<dyn object_store::ObjectStore> = self.files.clone();
        let (file, columns) = (from.file.clone(), from.columns);
        self.run(place, move |sink| {
            committed::produce(store, file, columns, provenance, sink, on_finish)
        })
        .await
    }

    /// Runs a producer on the query runtime, sending into a bounded
    /// channel, and returns once its first chunk is ready (or it failed
    /// before it). The producer keeps `place` until it ends.
    async fn run<P, F>(&self, place: Place, producer: P) -> Result<SliceStream, SliceError>
    where
        P: FnOnce(Sink) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel(self.buffer_chunks);
        let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let guard = ActiveGuard::new(&self.active);
        let sink = Sink {
            tx,
            stall: self.stall,
            pace: self.pace,
            waited: Default::default(),
            complete: complete.clone(),
        };
        let work = producer(sink);
        let producer = async move {
            let _held = (guard, place);
            work.await
        };
        self.runtime.handle().spawn(producer.in_current_span());
        let first = match rx.recv().await {
            None => None,
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(e)) => return Err(e),
        };
        Ok(SliceStream {
            first,
            rest: rx,
            complete,
        })
    }
}

impl SliceError {
    /// The server is too busy for this answer now; the caller may retry.
    pub fn busy() -> Self {
        SliceError::Busy {
            retry_after_secs: BUSY_RETRY_SECS,
        }
    }
}

/// A place in the engine (one of `limits.max_running_slices`), held by
/// one answer from before its plan runs (aggregates and DP answers compute
/// under it, before anything is paid for) until its last chunk is handed
/// over. Taken once per answer, never while holding another, so answers
/// cannot wait on each other.
pub struct Place(#[allow(dead_code, reason = "held, not read")] places::Held);

impl Engine {
    /// Waits for a place in the engine, at most `limits.slice_queue_secs`,
    /// taking no more than the caller's fair share while others wait (see
    /// [`places`]). `share` is whom the place counts against.
    pub async fn admit(&self, share: &str) -> Result<Place, SliceError> {
        match tokio::time::timeout(self.queue_wait, self.places.acquire(share)).await {
            Ok(held) => Ok(Place(held)),
            Err(_) => Err(SliceError::busy()),
        }
    }
}

/// The `Retry-After` of an answer refused because the engine's line or
/// memory pool was full.
const BUSY_RETRY_SECS: u64 = 5;

fn internal(e: DataFusionError) -> SliceError {
    Internal::caused("planning the slice", e).into()
}

fn visible_names(plan: &AccessPlan) -> BTreeSet<String> {
    plan.columns.iter().map(|c| c.name.to_string()).collect()
}

fn url_of(text: &str) -> Result<url::Url, SliceError> {
    Ok(url::Url::parse(text).or_internal("reading the catalogue's storage URL")?)
}

/// Resolves a `columns` list against the visible names, keeping its order.
fn resolve_columns(
    requested: &[String],
    visible: &BTreeSet<String>,
) -> Result<Vec<String>, SliceError> {
    if requested.is_empty() {
        return Err(SliceError::BadColumns(
            "columns must name at least one column".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for name in requested {
        if !visible.contains(name) {
            return Err(SliceError::UnknownColumn(
                crate::util::suggest::UnknownColumn::new(name, visible),
            ));
        }
        if !seen.insert(name) {
            return Err(SliceError::BadColumns(format!(
                "column '{name}' is listed twice"
            )));
        }
    }
    Ok(requested.to_vec())
}

/// Pulls batches, encodes them and sends chunks until done, failed, or the
/// receiver is gone (the client disconnected): then it stops pulling, and
/// dropping the engine's stream cancels the scan.
async fn produce(
    df: DataFrame,
    (format, coding): (Format, Coding),
    order: Option<usize>,
    provenance: Provenance,
    encode_width: usize,
    mut sink: Sink,
    on_finish: OnFinish,
) {
    let (mut rows, mut bytes) = (0u64, 0u64);
    let outcome = async {
        let mut batches = df.execute_stream().await.map_err(engine_error)?;
        let schema = sanitized_schema(&batches.schema());
        let mut encoder = Encoder::new(format, coding, &schema, &provenance)
            .or_internal("starting the encoder")?;
        // Text formats encode each batch on its own task, up to
        // `encode_width` at once, and send the chunks in order: CSV and
        // NDJSON encoding costs more than decoding, and one thread of it
        // was a download's limit.
        let mut encoding = FuturesOrdered::new();
        loop {
            let next = tokio::select! {
                _ = sink.tx.closed() => return Ok(false),
                next = batches.next() => next,
            };
            let Some(batch) = next else { break };
            let mut batch = sanitize(&batch.map_err(engine_error)?, &schema)
                .or_internal("preparing a batch for encoding")?;
            if let Some(column) = order {
                batch = in_pseudonym_order(&batch, column)
                    .or_internal("ordering a batch by its pseudonyms")?;
            }
            rows += batch.num_rows() as u64;
            let chunk = match encoder.detached(batch.clone()) {
                Some(job) => {
                    // On the query runtime's own workers (as decoding is): no more
                    // threads than cores, however many answers are running.
                    encoding.push_back(tokio::spawn(async move { job() }));
                    if encoding.len() < encode_width {
                        continue;
                    }
                    encoded(encoding.next().await)?
                }
                None => encoder.write(&batch).or_internal("encoding a batch")?,
            };
            if !sink.send(&mut bytes, chunk).await {
                return Ok(false);
            }
        }
        while let Some(done) = encoding.next().await {
            if !sink.send(&mut bytes, encoded(Some(done))?).await {
                return Ok(false);
            }
        }
        let tail = encoder.finish().or_internal("finishing the encoding")?;
        Ok(sink.send_last(&mut bytes, tail).await)
    }
    .await;
    sink.end(outcome, rows, bytes, on_finish).await;
}

/// The column of `df` whose pseudonyms order the rows within each batch:
/// the first column the answer shows through the `hash` mask.
///
/// Pseudonyms are per project, so two projects asking the same question
/// get the same rows in each batch but in unrelated orders, and cannot
/// link their pseudonyms by zipping the answers row by row. (Rows can
/// still be matched on the other columns both may read: README, "What
/// per-project pseudonyms protect".) The order is the same for the same
/// request, so pages and snapshots stay reproducible; sorting one batch
/// at a time keeps memory bounded, where a global order would not.
fn pseudonym_order(plan: &AccessPlan, df: &DataFrame) -> Option<usize> {
    pseudonym_column(plan, df.schema().as_arrow())
}

/// The first column of `schema` that `plan` serves through the `hash` mask.
fn pseudonym_column(plan: &AccessPlan, schema: &arrow::datatypes::Schema) -> Option<usize> {
    let hashed = |name: &str| {
        plan.columns
            .iter()
            .any(|c| c.mask == Some(crate::domain::Mask::Hash) && c.name.as_str() == name)
    };
    schema.fields().iter().position(|f| hashed(f.name()))
}

/// `batch` with its rows sorted by column `column`.
fn in_pseudonym_order(
    batch: &arrow::array::RecordBatch,
    column: usize,
) -> Result<arrow::array::RecordBatch, arrow::error::ArrowError> {
    let order = arrow::compute::sort_to_indices(batch.column(column), None, None)?;
    arrow::compute::take_record_batch(batch, &order)
}

/// A detached encoding's chunk, or why there is none.
fn encoded(
    done: Option<Result<Result<bytes::Bytes, arrow::error::ArrowError>, tokio::task::JoinError>>,
) -> Result<bytes::Bytes, SliceError> {
    let done = done.ok_or_else(|| Internal::new("an encoding went missing"))?;
    Ok(done
        .or_internal("running an encoding task")?
        .or_internal("encoding a batch")?)
}

/// The slowest a reader may be (`limits.min_reader_bytes_per_sec`, judged
/// over `limits.slow_reader_grace_secs` of the engine waiting on it).
#[derive(Debug, Clone, Copy)]
struct ReaderPace {
    floor: u64,
    grace: Duration,
}

/// How long the reader has kept the engine waiting: since when, and for
/// how long in all (what it has taken is the answer's bytes sent). Judged over the
/// whole answer: the socket buffers on both sides (megabytes) take chunks
/// in bursts, so a reader at a steady rate above the floor can leave the
/// engine waiting a whole grace period at a time; over the answer, those
/// buffers only ever add to the rate, so a reader at or above the floor is
/// never cut, and one below it is cut once the buffers' head start is used
/// up (about buffers / (floor - rate)).
#[derive(Debug)]
struct Waited {
    started: std::time::Instant,
    blocked: Duration,
}

impl Default for Waited {
    fn default() -> Self {
        Self {
            started: std::time::Instant::now(),
            blocked: Duration::ZERO,
        }
    }
}

impl ReaderPace {
    /// Whether the reader is below the floor: the engine has waited on it
    /// for at least the grace period in all, and what it took over the
    /// whole answer is under the floor rate. Only time blocked on the
    /// reader counts towards the grace, so a slow plan is never taken for
    /// a slow reader.
    fn too_slow(&self, waited: &Waited, taken: u64) -> bool {
        if self.floor == 0 || waited.blocked < self.grace {
            return false;
        }
        let rate = taken as f64 / waited.started.elapsed().as_secs_f64().max(1e-3);
        rate < self.floor as f64
    }
}

/// Where a producer's chunks go: the response's bounded channel.
struct Sink {
    tx: mpsc::Sender<Result<bytes::Bytes, SliceError>>,
    /// How long a full channel may stay full before the reader is taken
    /// to be gone (`limits.stalled_reader_secs`).
    stall: Duration,
    pace: ReaderPace,
    waited: Waited,
    /// Set when the last chunk was handed over (see [`SliceStream::into_chunks`]).
    complete: Arc<std::sync::atomic::AtomicBool>,
}

impl Sink {
    /// Hands over the answer's last chunk and marks the answer complete
    /// if the reader took it: before the channel closes (the producer
    /// ends), so the reader that sees the end sees it whole.
    async fn send_last(&mut self, sent_bytes: &mut u64, chunk: bytes::Bytes) -> bool {
        let sent = self.send(sent_bytes, chunk).await;
        self.complete.store(sent, Ordering::Release);
        sent
    }

    /// Ends a producer's work: an error goes to the reader, and what was
    /// sent to `on_finish` (`done`: whether the last chunk was taken).
    async fn end(self, done: Result<bool, SliceError>, rows: u64, bytes: u64, on_finish: OnFinish) {
        let outcome = match done {
            Ok(true) => Outcome::Complete,
            Ok(false) => Outcome::ClientAborted,
            Err(e) => {
                tracing::warn!(rows, bytes, error = %crate::util::internal::chain(&e), "slice failed");
                let _ = self.tx.send_timeout(Err(e), self.stall).await;
                Outcome::Error
            }
        };
        tracing::info!(rows, bytes, outcome = outcome.as_str(), "slice ended");
        on_finish(Finished {
            outcome,
            rows,
            bytes,
        });
    }

    /// Hands over a chunk; false when the reader is gone, stalled or
    /// slower than the floor rate, and the answer should stop (giving its
    /// place in the engine back).
    async fn send(&mut self, sent_bytes: &mut u64, chunk: bytes::Bytes) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let len = chunk.len() as u64;
        *sent_bytes += len;
        let mut chunk = match self.tx.try_send(Ok(chunk)) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(chunk)) => chunk,
        };
        // The reader is behind: wait for it, judging its pace at least
        // every grace period (a reader that takes nothing at all is judged
        // too), until it takes the chunk or has stalled.
        let started = std::time::Instant::now();
        loop {
            let stall_left = self.stall.saturating_sub(started.elapsed());
            let attempt = std::time::Instant::now();
            let sent = self
                .tx
                .send_timeout(chunk, stall_left.min(self.pace.grace))
                .await;
            self.waited.blocked += attempt.elapsed();
            let back = match sent {
                Ok(()) => None,
                Err(mpsc::error::SendTimeoutError::Closed(_)) => return false,
                Err(mpsc::error::SendTimeoutError::Timeout(back)) => Some(back),
            };
            // What the reader has taken: every byte sent but this chunk,
            // unless it took this one too.
            let taken = *sent_bytes - if back.is_some() { len } else { 0 };
            if self.pace.too_slow(&self.waited, taken) {
                tracing::info!(
                    floor = self.pace.floor,
                    "the reader was slower than the floor rate; answer cut off"
                );
                return false;
            }
            let Some(back) = back else { return true };
            chunk = back;
            if started.elapsed() >= self.stall {
                tracing::info!(
                    stalled_secs = self.stall.as_secs(),
                    "the reader took nothing for too long; answer abandoned"
                );
                return false;
            }
        }
    }
}

/// Engine failures while a caller's plan runs. Evaluation errors can quote
/// cell values (a failed cast or a division names the value), so callers
/// get one generic message and the log gets only the error's kind, never
/// its text. Storage faults are the server's, and carry no cell values.
fn engine_error(e: DataFusionError) -> SliceError {
    match e.find_root() {
        // The memory pool is shared: another time, with fewer answers
        // running, the same request may fit.
        DataFusionError::ResourcesExhausted(..) => SliceError::busy(),
        DataFusionError::ObjectStore(..) | DataFusionError::IoError(..) => {
            Internal::caused("reading the dataset's files", e).into()
        }
        root => {
            tracing::debug!(kind = error_kind(root), "slice evaluation failed");
            SliceError::Evaluation
        }
    }
}

/// The name of an engine error's variant, for logs that must not carry its
/// text.
fn error_kind(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::ArrowError(..) => "arrow",
        DataFusionError::ParquetError(..) => "parquet",
        DataFusionError::Plan(..) => "plan",
        DataFusionError::SchemaError(..) => "schema",
        DataFusionError::Execution(..) => "execution",
        DataFusionError::External(..) => "external",
        DataFusionError::NotImplemented(..) => "not-implemented",
        DataFusionError::Internal(..) => "internal",
        _ => "other",
    }
}
