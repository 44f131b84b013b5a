//! The Flight SQL service: who is calling (as over HTTPS), statements
//! turned into the HTTP API's requests and answered by the same path
//! ([`data_routes::answer`]), the answer parked until its `DoGet`, prepared
//! statements, and the catalogue as the caller may read it.
//!
//! A statement is run when its `FlightInfo` is asked for: that is when its
//! decision is audited and its first message is made, so the `FlightInfo`
//! carries the answer's exact schema. The ticket opens the running answer
//! once, for the same caller, within [`ANSWER_WAITS`].
//!
//! A large slice is cut into parts ([`crate::slice::parts`]), one endpoint
//! each: the first part runs at the statement like any answer; the others
//! wait as [`LaterPart`]s, holding nothing, and each runs through the same
//! path when its ticket is fetched, so clients read them side by side.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::ResponseError;
use actix_web::web;
use arrow::array::{Array, RecordBatch};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandStatementQuery, DoPutPreparedStatementResult,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    Ticket,
};
use base64::Engine as _;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::frames::{Frame, Frames};
use super::metadata::{self, CATALOG};
use super::parked::{Parked, Reserved};
use super::statement::{self, Literal};
use crate::auth::Caller;
use crate::domain::DatasetId;
use crate::formats::{Coding, Format};
use crate::http::AppState;
use crate::http::caller::{bearer_token, refused, share_key, verify_token};
use crate::http::data_routes::{self, Cut, Planner, Wanted};
use crate::http::problem::{ApiError, REQUEST_ID};
use crate::slice::SliceRequest;
use crate::slice::parts::Part;

/// How long a running answer waits for its `DoGet` (clients ask at once;
/// a waiting answer holds its engine place, as a slow reader would).
pub(super) const ANSWER_WAITS: Duration = Duration::from_secs(15);
/// How long a prepared statement lives unused.
const PREPARED_LIVES: Duration = Duration::from_secs(30 * 60);
/// The most prepared statements one caller keeps, and all callers.
const PREPARED_PER_CALLER: usize = 64;
const PREPARED_IN_ALL: usize = 4096;
/// The most answers one caller leaves waiting, and all callers (stream
/// slots and engine places bound them too).
const WAITING_PER_CALLER: usize = 4;
const WAITING_IN_ALL: usize = 1024;
/// The most bytes of values bound to a prepared statement at once (one
/// row; a filter is at most 4 KiB anyway).
const MAX_BOUND_BYTES: usize = 64 * 1024;
/// The gRPC header naming the grant to read under (HTTP's `grant=`).
const GRANT_HEADER: &str = "sluice-grant";
/// The most endpoints one answer is cut into (each holds a stream slot
/// and an engine place while it is read, as any answer does).
const MOST_ENDPOINTS: usize = 4;
/// How long a later part waits for its `DoGet`: it holds nothing, and a
/// client reading the endpoints one after another over a slow link comes
/// for the last one long after the first.
const LATER_PART_WAITS: Duration = Duration::from_secs(10 * 60);
/// The most later parts one caller leaves waiting, and all callers.
const LATER_PARTS_PER_CALLER: usize = 64;
const LATER_PARTS_IN_ALL: usize = 16 * 1024;
/// What marks a ticket for a later part of an answer cut in parts.
const LATER_PART: &str = "part:";

type DataStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send>>;

/// A running answer waiting for its `DoGet`.
pub(super) struct Waiting {
    schema: Frame,
    frames: Frames,
    headers: Vec<(&'static str, String)>,
    /// A later part's fetch, settled when the first message goes out.
    fetching: Option<Fetching>,
}

/// A later part of an answer cut in parts, run when its `DoGet` comes, by
/// the same path and under the access in force then.
#[derive(Clone)]
pub(super) struct LaterPart {
    dataset: String,
    slice: SliceRequest,
    grant: Option<String>,
    part: Part,
    /// The plan the answer was cut under: the part is served only under
    /// the same one.
    plan: String,
    /// The statement's request id, which every part's audit record carries.
    request_id: String,
    /// Being run by a `DoGet` now (a second one finds nothing).
    running: bool,
}

/// A prepared statement: its text, and the values bound to it.
#[derive(Clone)]
struct Prepared {
    sql: String,
    placeholders: usize,
    bound: Option<Vec<Literal>>,
}

/// A later part being fetched: fetchable again when this ends, unless it
/// was taken (when its first message went out: a fetch whose caller gave
/// up while it waited in line leaves the part to be fetched again).
struct Fetching {
    parts: Arc<Parked<LaterPart>>,
    owner: String,
    handle: String,
}

impl Fetching {
    /// The part is fetched: its ticket opens nothing more.
    fn taken(&self) {
        drop(self.parts.take(&self.owner, &self.handle));
    }
}

impl Drop for Fetching {
    fn drop(&mut self) {
        self.parts
            .with(&self.owner, &self.handle, |l| l.running = false);
    }
}

/// Who is calling, as the HTTP side would see them.
#[derive(Clone)]
struct Who {
    caller: Caller,
    /// Whom limits count against: the subject, or the peer address of
    /// anonymous callers.
    key: String,
    /// Whom handles belong to: the key, and the personal token if one was
    /// used (a token scoped to one dataset opens none of the handles the
    /// subject's other tokens made).
    owner: String,
    grant: Option<String>,
}

pub(super) struct SluiceFlight {
    state: web::Data<AppState>,
    /// The fewest rows one endpoint carries (`flight.endpoint_rows`).
    endpoint_rows: u64,
    answers: Arc<Parked<Waiting>>,
    later_parts: Arc<Parked<LaterPart>>,
    prepared: Parked<Prepared>,
    sql_info: arrow_flight::sql::metadata::SqlInfoData,
    xdbc_types: arrow_flight::sql::metadata::XdbcTypeInfoData,
}

impl SluiceFlight {
    pub(super) fn new(state: web::Data<AppState>, endpoint_rows: u64) -> Result<Self, FlightError> {
        Ok(Self {
            state,
            endpoint_rows,
            answers: Arc::new(Parked::new(
                ANSWER_WAITS,
                WAITING_PER_CALLER,
                WAITING_IN_ALL,
            )),
            // They hold nothing until fetched; bounded all the same.
            later_parts: Arc::new(Parked::new(
                LATER_PART_WAITS,
                LATER_PARTS_PER_CALLER,
                LATER_PARTS_IN_ALL,
            )),
            prepared: Parked::new(PREPARED_LIVES, PREPARED_PER_CALLER, PREPARED_IN_ALL),
            sql_info: metadata::sql_info()?,
            xdbc_types: metadata::xdbc_types()?,
        })
    }

    /// The waiting answers, for the sweeper that frees those nobody fetched.
    pub(super) fn answers(&self) -> Arc<Parked<Waiting>> {
        self.answers.clone()
    }

    /// The later parts waiting for their `DoGet`, for the same sweeper.
    pub(super) fn later_parts(&self) -> Arc<Parked<LaterPart>> {
        self.later_parts.clone()
    }

    /// The caller, from `authorization` (`Bearer <token>`, or `Basic` with
    /// the token as password), counted against their rate limit.
    async fn who(
        &self,
        metadata: &MetadataMap,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Who, Status> {
        let state = &self.state;
        let caller = match metadata.get("authorization") {
            None => Caller::Anonymous,
            Some(value) => {
                let token = value
                    .to_str()
                    .ok()
                    .and_then(token_of)
                    .ok_or_else(|| status(&refused(state, "not-bearer")))?;
                verify_token(state, &token).await.map_err(|e| status(&e))?
            }
        };
        let key = match caller.principal() {
            Some(_) => share_key(&caller),
            None => format!(
                "ip:{}",
                peer.map(|a| a.ip().to_string()).unwrap_or_default()
            ),
        };
        state
            .rate_limits
            .check(&key)
            .map_err(|wait| status(&ApiError::RateLimited(wait.as_secs().max(1))))?;
        let grant = metadata
            .get(GRANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let token = caller
            .principal()
            .and_then(|p| p.scope.as_ref())
            .map(|scope| scope.token.as_str());
        // As JSON, so no subject can spell another's key and token.
        let owner = serde_json::json!([key, token]).to_string();
        Ok(Who {
            caller,
            key,
            owner,
            grant,
        })
    }

    async fn who_of<T>(&self, request: &Request<T>) -> Result<Who, Status> {
        self.who(request.metadata(), request.remote_addr()).await
    }

    /// Runs `sql` for `who` and parks the answer: its `FlightInfo`, with
    /// one endpoint, or one per part when the answer is cut in parts.
    async fn execute(
        &self,
        who: &Who,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let state = &self.state;
        let parsed = self.parse(who, sql)?;
        if let Some(schema) = &parsed.schema
            && !in_sector(state, &parsed.dataset, schema)
        {
            let e = ApiError::DatasetNotFound;
            data_routes::record_refused(state, &who.caller, &parsed.dataset, sql, &e);
            return Err(status(&e));
        }
        // Room for the answer and its later parts is reserved before it
        // runs: a statement is refused (or answered whole) before any work,
        // never made and then turned away.
        let first = Reserved::up_to(&self.answers, &who.key, &who.owner, 1);
        if first.len() == 0 {
            let e = ApiError::TooManyStreams;
            data_routes::record_refused(state, &who.caller, &parsed.dataset, sql, &e);
            return Err(too_many_waiting());
        }
        let mut later_room = Reserved::up_to(&self.later_parts, &who.key, &who.owner, 0);
        let slice = match &parsed.planner {
            Planner::Slice(slice) if self.endpoint_rows > 0 => {
                later_room =
                    Reserved::up_to(&self.later_parts, &who.key, &who.owner, MOST_ENDPOINTS - 1);
                (later_room.len() == MOST_ENDPOINTS - 1).then(|| slice.clone())
            }
            _ => None,
        };
        let cut = match slice {
            Some(_) => Cut::Split {
                most: MOST_ENDPOINTS,
                rows_each: self.endpoint_rows,
            },
            None => Cut::Whole,
        };
        let (waiting, later, plan) = self
            .run(who, &parsed.dataset, parsed.planner, None, cut)
            .await?;
        let framed_schema = waiting.schema.framed_header.clone();
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let later = later.into_iter().map(|part| LaterPart {
            dataset: parsed.dataset.clone(),
            slice: slice.clone().unwrap_or_default(),
            grant: who.grant.clone(),
            part,
            plan: plan.clone(),
            request_id: request_id.clone(),
            running: false,
        });
        let handles = first.fill([waiting]).into_iter().chain(
            later_room
                .fill(later)
                .into_iter()
                .map(|h| format!("{LATER_PART}{h}")),
        );
        let mut info = FlightInfo::new()
            .with_descriptor(descriptor)
            .with_ordered(true);
        for handle in handles {
            let ticket = TicketStatementQuery {
                statement_handle: handle.into_bytes().into(),
            };
            info = info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
                ticket: ticket.as_any().encode_to_vec().into(),
            }));
        }
        info.schema = framed_schema;
        Ok(Response::new(info))
    }

    /// Answers one request for `who` by the HTTP API's path, up to its
    /// first message (the schema, so early errors are the statement's):
    /// the answer, the later parts when it was cut in parts, and the plan
    /// it was made under.
    async fn run(
        &self,
        who: &Who,
        dataset: &str,
        planner: Planner,
        version: Option<u64>,
        cut: Cut,
    ) -> Result<(Waiting, Vec<Part>, String), Status> {
        let aggregate = matches!(planner, Planner::Aggregate(_));
        let answered = data_routes::answer(
            &self.state,
            &who.caller,
            dataset,
            Wanted::arrow(planner, who.grant.clone(), cut),
            Ok(version),
            Ok((Format::Arrow, Coding::Identity)),
            &who.key,
        )
        .await
        .map_err(|e| status(&e))?;
        let headers = answered.headers(aggregate);
        let plan = answered.plan_print();
        let later = answered.later_parts;
        let mut frames = Frames::new(answered.stream.into_chunks().boxed());
        let schema = match frames.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(status(&e)),
            None => return Err(Status::internal("the answer ended before its schema")),
        };
        let waiting = Waiting {
            schema,
            frames,
            headers,
            fetching: None,
        };
        Ok((waiting, later, plan))
    }

    /// The answer waiting under `handle` for `who`: one run at its
    /// statement, or a later part of it, run now.
    async fn waiting(&self, who: &Who, handle: &[u8]) -> Result<Waiting, Status> {
        let not_found = || {
            Status::not_found(format!(
                "ticket-not-found: no answer of yours waits under this ticket (a ticket opens once, for whoever ran the statement: its first endpoint within {} s, the others within {} minutes)",
                ANSWER_WAITS.as_secs(),
                LATER_PART_WAITS.as_secs() / 60
            ))
        };
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        let Some(part_handle) = handle.strip_prefix(LATER_PART) else {
            let waiting = self.answers.take(&who.owner, handle);
            return waiting.ok_or_else(|| opened_nothing(who, not_found()));
        };
        let later = self
            .later_parts
            .with(&who.owner, part_handle, |l| {
                (!l.running).then(|| {
                    l.running = true;
                    l.clone()
                })
            })
            .flatten()
            .ok_or_else(|| opened_nothing(who, not_found()))?;
        // However this fetch ends (a full line, the caller gone while it
        // waited), the part is fetchable again unless it was taken.
        let fetching = Fetching {
            parts: self.later_parts.clone(),
            owner: who.owner.clone(),
            handle: part_handle.to_owned(),
        };
        let who = Who {
            grant: later.grant,
            ..who.clone()
        };
        let version = Some(later.part.version);
        let cut = Cut::Part {
            part: later.part,
            plan: later.plan,
        };
        let planner = Planner::Slice(later.slice);
        // Under the statement's request id: its parts' records go together.
        let run = self.run(&who, &later.dataset, planner, version, cut);
        let ran = REQUEST_ID.scope(later.request_id, run).await;
        match ran {
            Ok((waiting, ..)) => Ok(Waiting {
                fetching: Some(fetching),
                ..waiting
            }),
            // A line that was full: the ticket stays, to be fetched again.
            Err(e) if matches!(e.code(), Code::ResourceExhausted | Code::Unavailable) => Err(e),
            Err(e) => {
                fetching.taken();
                Err(e)
            }
        }
    }

    /// `sql` as a statement Sluice answers; a refusal is audited like any
    /// refused data request.
    fn parse(&self, who: &Who, sql: &str) -> Result<statement::Statement, Status> {
        statement::parse(sql).map_err(|refusal| self.refuse(who, sql, refusal))
    }

    fn refuse(&self, who: &Who, sql: &str, refusal: statement::Refused) -> Status {
        let e = ApiError::InvalidParameter(refusal.to_string());
        data_routes::record_refused(&self.state, &who.caller, "", sql, &e);
        status(&e)
    }

    /// A metadata listing's `FlightInfo`: its schema, and a ticket that is
    /// the command itself (listings are made for whoever fetches them).
    fn listing_info(
        command: impl ProstMessageExt,
        schema: &arrow::datatypes::Schema,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding a schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket {
                ticket: command.as_any().encode_to_vec().into(),
            }))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    fn prepared_sql(&self, who: &Who, handle: &[u8]) -> Result<String, Status> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        let prepared = self
            .prepared
            .with(&who.owner, handle, |p| p.clone())
            .ok_or_else(unknown_prepared)?;
        if prepared.placeholders == 0 {
            return Ok(prepared.sql);
        }
        let values = prepared.bound.ok_or_else(|| {
            statement::refused(format!(
                "the statement has {} placeholders; bind values to them first",
                prepared.placeholders
            ))
        });
        values
            .and_then(|values| statement::bind(&prepared.sql, &values))
            .map_err(|refusal| self.refuse(who, &prepared.sql, refusal))
    }
}

/// The token in an `authorization` value: `Bearer <token>`, or `Basic`
/// with the token as the password (the user name is not read), as ADBC's
/// username/password options and `pyarrow.flight`'s basic handshake send.
fn token_of(value: &str) -> Option<String> {
    if let Some(token) = bearer_token(value) {
        return Some(token.to_owned());
    }
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (_, password) = text.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

/// Whether `dataset` sits in sector `schema` (a statement may name it).
fn in_sector(state: &AppState, dataset: &str, schema: &str) -> bool {
    DatasetId::parse(dataset)
        .ok()
        .and_then(|id| state.catalog.snapshot().get(&id).cloned())
        .is_some_and(|d| d.manifest.sector == schema)
}

fn too_many_waiting() -> Status {
    Status::resource_exhausted(format!(
        "too-many-streams: {WAITING_PER_CALLER} of your answers (or too many of everyone's) already wait for their DoGet, or {LATER_PARTS_PER_CALLER} later parts of them; fetch them first"
    ))
}

/// A ticket that opened nothing, logged (a guess at someone's ticket
/// leaves a trace).
fn opened_nothing(who: &Who, status: Status) -> Status {
    tracing::info!(caller = %who.key, "a Flight ticket opened nothing");
    status
}

fn unknown_prepared() -> Status {
    Status::not_found(
        "prepared-statement-not-found: no such prepared statement of yours (they are dropped after 30 minutes unused)",
    )
}

/// An API error as a gRPC status: the code nearest its HTTP status, and
/// the problem's stable type and detail as the message.
pub(super) fn status(e: &ApiError) -> Status {
    use tonic::Code;
    let code = match e.status_code().as_u16() {
        400 | 413 | 414 | 415 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 | 410 => Code::NotFound,
        406 => Code::InvalidArgument,
        409 => Code::FailedPrecondition,
        429 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, format!("{}: {}", e.kind(), e.detail()))
}

/// One batch as a Flight stream.
fn batch_stream(batch: Result<RecordBatch, FlightError>) -> Result<Response<DataStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("building a listing: {e}")))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// A bound parameter's value: row 0 of `column`.
fn literal(column: &dyn Array) -> Result<Literal, Status> {
    use arrow::array::AsArray;
    use arrow::datatypes::*;
    if column.is_null(0) {
        return Ok(Literal::Null);
    }
    let unsupported = || {
        Status::invalid_argument(format!(
            "invalid-parameter: a bound value of type {} is not taken (numbers, text, booleans and NULL are)",
            column.data_type()
        ))
    };
    Ok(match column.data_type() {
        DataType::Null => Literal::Null,
        DataType::Boolean => Literal::Bool(column.as_boolean().value(0)),
        DataType::Int8 => Literal::Int(column.as_primitive::<Int8Type>().value(0).into()),
        DataType::Int16 => Literal::Int(column.as_primitive::<Int16Type>().value(0).into()),
        DataType::Int32 => Literal::Int(column.as_primitive::<Int32Type>().value(0).into()),
        DataType::Int64 => Literal::Int(column.as_primitive::<Int64Type>().value(0)),
        DataType::UInt8 => Literal::Int(column.as_primitive::<UInt8Type>().value(0).into()),
        DataType::UInt16 => Literal::Int(column.as_primitive::<UInt16Type>().value(0).into()),
        DataType::UInt32 => Literal::Int(column.as_primitive::<UInt32Type>().value(0).into()),
        DataType::UInt64 => Literal::Int(
            i64::try_from(column.as_primitive::<UInt64Type>().value(0))
                .map_err(|_| unsupported())?,
        ),
        DataType::Float32 => Literal::Float(column.as_primitive::<Float32Type>().value(0).into()),
        DataType::Float64 => Literal::Float(column.as_primitive::<Float64Type>().value(0)),
        DataType::Utf8 => Literal::Text(column.as_string::<i32>().value(0).to_owned()),
        DataType::LargeUtf8 => Literal::Text(column.as_string::<i64>().value(0).to_owned()),
        DataType::Utf8View => Literal::Text(column.as_string_view().value(0).to_owned()),
        _ => return Err(unsupported()),
    })
}

/// Runs `f` with a fresh request id, as the HTTP middleware does for each
/// request: the audit records and error messages carry it.
async fn with_request_id<F: std::future::Future>(f: F) -> F::Output {
    REQUEST_ID
        .scope(uuid::Uuid::new_v4().simple().to_string(), f)
        .await
}

#[tonic::async_trait]
impl FlightSqlService for SluiceFlight {
    type FlightService = SluiceFlight;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(token_of)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "invalid-token: send authorization: Bearer <token>, or Basic with your token as the password",
                )
            })?;
        let who = self.who_of(&request).await?;
        if who.caller.principal().is_none() {
            return Err(Status::unauthenticated("invalid-token"));
        }
        let output = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: Default::default(),
        })]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(output));
        // Clients send this back as `Bearer` on every later call.
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Status::unauthenticated("invalid-token"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        with_request_id(async {
            let who = self.who_of(&request).await?;
            self.execute(&who, &query.query, request.into_inner()).await
        })
        .await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        with_request_id(async {
            let who = self.who_of(&request).await?;
            let sql = self.prepared_sql(&who, &query.prepared_statement_handle)?;
            self.execute(&who, &sql, request.into_inner()).await
        })
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let who = self.who_of(&request).await?;
        let Waiting {
            schema,
            frames,
            headers,
            fetching,
        } = with_request_id(self.waiting(&who, &ticket.statement_handle)).await?;
        let first = futures::stream::once(async move {
            if let Some(fetching) = &fetching {
                fetching.taken();
            }
            Ok(schema.flight_data())
        });
        let rest = futures::stream::unfold(frames, |mut frames| async move {
            let next = frames.next().await?;
            Some((
                next.map(|f| f.flight_data()).map_err(|e| status(&e)),
                frames,
            ))
        });
        let mut response: Response<DataStream> = Response::new(Box::pin(first.chain(rest)));
        for (name, value) in headers {
            if let Ok(value) = MetadataValue::try_from(value) {
                response.metadata_mut().insert(name, value);
            }
        }
        Ok(response)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let who = self.who_of(&request).await?;
        // Refused now, and audited, what running it would refuse for its
        // shape (ADBC prepares every statement it runs).
        let placeholders = statement::placeholders(&query.query)
            .and_then(|n| {
                let shape = statement::unbound(&query.query)?;
                statement::parse(&shape).map(|_| n)
            })
            .map_err(|refusal| self.refuse(&who, &query.query, refusal))?;
        let handle = self
            .prepared
            .park(
                &who.key,
                &who.owner,
                Prepared {
                    sql: query.query,
                    placeholders,
                    bound: None,
                },
            )
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "too-many-prepared-statements: you keep {PREPARED_PER_CALLER} (or everyone keeps too many); close some first"
                ))
            })?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: Default::default(),
            parameter_schema: Default::default(),
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.who_of(&request).await?;
        let handle = std::str::from_utf8(&query.prepared_statement_handle)
            .unwrap_or_default()
            .to_owned();
        // The handle first, so nobody else's values are read at all.
        self.prepared
            .with(&who.owner, &handle, |_| ())
            .ok_or_else(unknown_prepared)?;
        let mut received = 0;
        let data = request.into_inner().map(move |message| {
            let message = message.map_err(|s| FlightError::Tonic(Box::new(s)))?;
            received += message.data_header.len() + message.data_body.len();
            if received > MAX_BOUND_BYTES {
                return Err(FlightError::ProtocolError(format!(
                    "more than {MAX_BOUND_BYTES} bytes of bound values; bind one row"
                )));
            }
            Ok(message)
        });
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .map_err(|e| {
                Status::invalid_argument(format!("invalid-parameter: bound values: {e}"))
            })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let values = match batches.iter().find(|b| b.num_rows() > 0) {
            None => None,
            Some(_) if rows > 1 => {
                return Err(Status::invalid_argument(
                    "invalid-parameter: bind one row of values; each execution answers one statement",
                ));
            }
            Some(batch) => Some(
                batch
                    .columns()
                    .iter()
                    .map(|c| literal(c.as_ref()))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        self.prepared
            .with(&who.owner, &handle, |p| p.bound = values)
            .ok_or_else(unknown_prepared)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let who = self.who_of(&request).await?;
        let handle = std::str::from_utf8(&query.prepared_statement_handle).unwrap_or_default();
        self.prepared.take(&who.owner, handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.into_builder().schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.who_of(&request).await?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        batch_stream(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.clone().into_builder().schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let who = self.who_of(&request).await?;
        let mut sectors: Vec<String> =
            metadata::tables(&self.state, &who.caller, who.grant.as_deref())
                .into_iter()
                .map(|t| t.sector)
                .collect();
        sectors.sort();
        sectors.dedup();
        let mut builder = query.into_builder();
        for sector in sectors {
            builder.append(CATALOG, sector);
        }
        batch_stream(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.clone().into_builder().schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let who = self.who_of(&request).await?;
        let mut builder = query.into_builder();
        for table in metadata::tables(&self.state, &who.caller, who.grant.as_deref()) {
            builder
                .append(
                    CATALOG,
                    &table.sector,
                    &table.dataset,
                    "TABLE",
                    &table.schema,
                )
                .map_err(Status::from)?;
        }
        batch_stream(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.into_builder().schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.who_of(&request).await?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        batch_stream(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.who_of(&request).await?;
        batch_stream(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.who_of(&request).await?;
        let schema = query.into_builder(&self.xdbc_types).schema();
        Self::listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.who_of(&request).await?;
        batch_stream(query.into_builder(&self.xdbc_types).build())
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "not-supported: {} is not answered here",
            crate::util::echo::cut(&message.type_url)
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_or_a_basic_password() {
        assert_eq!(token_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token_of("bearer  abc ").as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("token:s3cret:x");
        assert_eq!(
            token_of(&format!("Basic {basic}")).as_deref(),
            Some("s3cret:x")
        );
        let empty = base64::engine::general_purpose::STANDARD.encode("user:");
        assert_eq!(token_of(&format!("Basic {empty}")), None);
        assert_eq!(token_of("Digest x"), None);
        assert_eq!(token_of("Bearer"), None);
    }
}
